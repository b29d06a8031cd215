"""Profiles are dataclasses; command-line overrides are typed and checked."""

from __future__ import annotations

import pytest

from reabsnet.errors import ReabsnetError
from reabsnet.profiles import PROFILES, get_profile


def test_profiles_exist_and_paper_uses_temperature_100():
    assert set(PROFILES) >= {"smoke", "quick", "paper"}
    assert get_profile("paper").temperature == 100.0 and get_profile("paper").distill


def test_overrides_are_typed():
    p = get_profile("quick", ["master.epochs=7", "master.lr=0.1", "distill=false", "seed=3"])
    assert (p.master.epochs, p.master.lr, p.distill, p.seed) == (7, 0.1, False, 3)
    assert get_profile("quick").master.epochs != 7  # the registry's profile is untouched


@pytest.mark.parametrize("bad", ["master.nope=1", "master.epochs=many", "epochs", "master=3", "seed.x=1"])
def test_bad_overrides_are_one_line_errors(bad):
    with pytest.raises(ReabsnetError):
        get_profile("quick", [bad])


def test_unknown_profile():
    with pytest.raises(ReabsnetError, match="unknown profile"):
        get_profile("huge")
