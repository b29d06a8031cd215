"""Profiles are dataclasses; command-line overrides are typed and checked."""

from __future__ import annotations

import dataclasses

import pytest

from reabsnet.errors import ReabsnetError
from reabsnet.profiles import PROFILES, get_profile, keyed


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


def test_a_later_setting_enters_the_key_only_when_set():
    # check_size came after the paper models were shipped: at its default the key digests what it digested before
    # (test_shipped.py checks the shipped networks are still found); set, it is part of the key
    paper = get_profile("paper")
    plain = dataclasses.asdict(paper.guardian)
    del plain["train"]["check_size"]
    assert keyed(paper.guardian) == plain
    assert keyed(get_profile("paper", ["master.check_size=1000"]).master)["check_size"] == 1000
    assert "check_size" not in keyed(get_profile("paper", ["master.check_size=0"]).master)


@pytest.mark.parametrize("bad", ["guardian.train.check_size=100", "adaptive.harden_train.check_size=5",
                                 "master.check_size=-1"])
def test_check_size_only_where_an_mnist_split_is_validated(bad):
    with pytest.raises(ReabsnetError, match="check_size"):
        get_profile("quick", [bad])


def test_clean_images_must_cover_every_attack_set():
    # Table 3 falls back to an image's clean label, so the clean pass must reach the largest set's images
    assert get_profile("smoke", ["eval.clean_images=0"]).eval.clean_images == 0
    with pytest.raises(ReabsnetError, match="eval.clean_images=20: .* largest attack set, 50 images"):
        get_profile("smoke", ["eval.clean_images=20"])


def test_adaptive_bounds_are_settings_with_at_least_one_linf_bound():
    from reabsnet.security.api import threats

    assert threats(get_profile("paper").adaptive) == [("linf", 0.1), ("linf", 0.2), ("linf", 0.3), ("l2", 1.5),
                                                      ("l2", 2.0)]
    assert threats(get_profile("paper", ["adaptive.linf_bounds=0.3", "adaptive.l2_bounds=3"]).adaptive) == [
        ("linf", 0.3), ("l2", 3.0)]
    # no L2 bound at all (paper-subset): L-inf only; an empty L-inf list stays an error
    assert threats(get_profile("paper", ["adaptive.l2_bounds="]).adaptive) == [
        ("linf", 0.1), ("linf", 0.2), ("linf", 0.3)]
    assert threats(get_profile("paper-subset").adaptive) == [("linf", 0.1), ("linf", 0.2), ("linf", 0.3)]
    # the single-step sanity check runs at the largest L-inf bound, whichever it is (8/255 on CIFAR-10, say)
    assert threats(get_profile("paper", ["adaptive.linf_bounds=0.1,0.2"]).adaptive)[:2] == [("linf", 0.1),
                                                                                           ("linf", 0.2)]
    for bad, why in (("adaptive.l2_bounds=30", r"\(0, 28\]"),
                     ("adaptive.linf_bounds=0.3,x", r"\(0, 1\]"), ("adaptive.linf_bounds=", r"\(0, 1\]"),
                     ("networks=nope", "no such profile")):
        with pytest.raises(ReabsnetError, match=why):
            get_profile("paper", [bad])
