"""Low-precision search passes: every success judged in float32, and the wrapped network's mode left alone."""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.attacks import LowPrecision, apgd, frozen, full_precision, square
from reabsnet.attacks.common import confirmed


class Rounding(nn.Linear):
    """Three logits of flattened 1x2x2 inputs, (1000, 999.75 + x0, -1000): in float32 class 1 wins exactly when
    x0 > 0.25, but a bfloat16 matmul (8 bits of mantissa: steps of 4 near 1000) rounds 999.75 + x0 to 1000 for any
    x0 in (-1.75, 2.25), a tie the argmax gives to class 0. A low-precision pass sees another boundary than the
    float32 judge."""

    def __init__(self):
        super().__init__(4, 3)
        with torch.no_grad():
            self.weight.zero_()
            self.weight[1, 0] = 1.0
            self.bias.copy_(torch.tensor([1000.0, 999.75, -1000.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


def test_low_precision_really_is_low_and_confirmation_is_not():
    net = Rounding()
    x = torch.full((1, 1, 2, 2), 0.4)
    low = LowPrecision(net)
    assert int(net(x).argmax(1)) == 1 and int(low(x).argmax(1)) == 0     # bf16 misses what float32 sees
    assert full_precision(low) is net and full_precision(net) is net
    claimed = torch.tensor([True])
    logits = torch.tensor([[0.0, 0.0, 1.0]])                               # a low-precision pass claims class 2
    assert int(confirmed(low, x, logits, claimed).argmax(1)) == 1          # float32 says class 1
    assert torch.equal(confirmed(net, x, logits, claimed), logits)        # full precision: kept as it is


def test_attacks_on_a_low_precision_network_confirm_and_judge_in_float32():
    # label 1 at x0 = 0.3: bf16 calls it class 0 (a success) from the start, float32 class 1. An attack that took
    # bf16's word would stop there and fail the float32 judge; confirmed, it goes on and moves x0 below 0.25
    x, y = torch.full((3, 1, 2, 2), 0.3), torch.ones(3, dtype=torch.long)
    for attack in (lambda m: apgd(m, x, y, eps=0.1, loss="ce", steps=10, box=(-1.0, 1.0)),
                   lambda m: square(m, x, y, eps=0.1, queries=50, box=(-1.0, 1.0))):
        r = attack(LowPrecision(Rounding()))
        assert r.success.all() and (r.label == 0).all()
        with torch.no_grad():
            assert (Rounding()(r.x_adv).argmax(1) == 0).all()
    # within 0.01 nothing breaks it in float32, though a bf16 judge would count every example
    r = apgd(LowPrecision(Rounding()), x, y, eps=0.01, loss="ce", steps=5, box=(-1.0, 1.0))
    assert not r.success.any() and (r.label == 1).all()


def test_frozen_leaves_the_wrapped_network_in_its_mode():
    # a new module is in training mode; a wrapper that did not take the network's mode would put the network (its
    # dropout) into training mode when `frozen` restored the wrapper's
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Dropout(0.5)).eval()
    with frozen(LowPrecision(net)):
        pass
    assert not net.training


def test_auto_precision_is_bfloat16_only_where_it_was_timed_faster(monkeypatch):
    """adaptive.precision "auto": bfloat16 search passes on a CPU with native bfloat16 instructions where the timed
    pass is at least BF16_MIN_SPEEDUP faster; float32 where it is not (the Intel CPU: 0.8x), on a CPU without the
    instructions (autocast would emulate them; not even timed) and on a GPU (not measured there); the explicit
    settings as they are."""
    from reabsnet.runtime import BF16_MIN_SPEEDUP, search_precision

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    timed = []

    def speedup(value):
        return lambda: timed.append(value) or value

    for avx512_bf16, amx, ratio, expected in ((True, False, 1.8, "bf16"), (False, True, 1.8, "bf16"),
                                              (True, False, 0.8, "fp32"), (True, True, BF16_MIN_SPEEDUP - 0.01,
                                                                           "fp32"), (False, False, 1.8, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        timed.clear()
        native = avx512_bf16 or amx
        assert search_precision("auto", cpu, speedup(ratio)) == (expected, ratio if native else None)
        assert timed == ([ratio] if native else [])
        assert search_precision("auto", gpu, speedup(ratio)) == ("fp32", None)
        assert search_precision("fp32", cpu, speedup(9.0)) == ("fp32", None)
        assert search_precision("bf16", gpu, speedup(0.1)) == ("bf16", None)


def test_bf16_speedup_times_the_two_passes():
    """bf16_speedup: float32 time over bfloat16 time, so a network whose pass takes twice as long in float32 reads
    about 2 (the passes' cost here is a sleep, 20 ms in float32 and 10 ms under bfloat16 autocast)."""
    import time

    from reabsnet.attacks import bf16_speedup

    class Sleepy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            time.sleep(0.01 if torch.is_autocast_enabled("cpu") else 0.02)
            return self.lin(x)

    assert 1.6 < bf16_speedup(Sleepy(), torch.randn(5, 4)) < 2.4


def test_the_report_says_what_precision_the_baseline_searched_in():
    """The adaptive section names a bfloat16 search and what `auto` timed; a float32 run says nothing of it."""
    import json
    from pathlib import Path

    from reabsnet.security.report import adaptive_section

    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "mnist-paper" / "results.json"
    a = json.loads(path.read_text())["results"]["adaptive"]
    assert "bfloat16" not in " ".join(adaptive_section(a))
    chosen = " ".join(adaptive_section({**a, "baseline_precision": "bf16", "bf16_speedup": 1.9}))
    assert "APGD-T and Square searched in bf16" in chosen and "timed 1.9x faster" in chosen
    declined = " ".join(adaptive_section({**a, "bf16_speedup": 0.8}))
    assert "searched in float32" in declined and "at 0.8x float32's" in declined


def test_the_precision_setting_takes_its_three_values_and_refuses_others():
    import pytest

    from reabsnet.errors import ReabsnetError
    from reabsnet.profiles import get_profile

    for value in ("auto", "fp32", "bf16"):
        assert get_profile("smoke", [f"adaptive.precision={value}"]).adaptive.precision == value
    with pytest.raises(ReabsnetError, match="auto, fp32 or bf16"):
        get_profile("smoke", ["adaptive.precision=fp16"])
