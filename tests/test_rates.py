"""Every rate in results.json carries a 95% Wilson interval that contains it."""

from __future__ import annotations

import pytest
import torch

from reabsnet.rates import rate, wilson


def test_wilson_matches_the_textbook_value():
    lo, hi = wilson(8, 10)          # Wilson 1927 / Agresti & Coull 1998: 8 of 10 -> [0.490, 0.943]
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)


def test_the_interval_always_holds_the_rate_even_at_all_or_nothing():
    # 10 of 10 computed 0.9999999999999999 as the upper bound, below the rate itself (found by the ablation test)
    for n in range(1, 201):
        for k in range(n + 1):
            lo, hi = wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n)
        assert wilson(0, n)[0] == 0.0 and wilson(n, n)[1] == 1.0
    r = rate(torch.ones(10, dtype=torch.bool))
    assert r["ci95"][1] == 1.0 and r["rate"] == 1.0
    assert rate(torch.zeros(0, dtype=torch.bool))["ci95"] is None
