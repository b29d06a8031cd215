"""Escalation and the masking alarm on toys whose answer is known: a classifier that quantises its input (no
gradient anywhere, adversarial examples within every ball) and a linear classifier with a known margin."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import reabsnet
from reabsnet.errors import ReabsnetError
from reabsnet.profiles import get_profile
from reabsnet.security import Suite
from reabsnet.security.alarm import masking_alarm


class Quantised(nn.Module):
    """Four classes; class 1 once the pixels, rounded to multiples of 0.25, sum past 0.6. Rounding has no gradient,
    so a gradient attack is a random search over its starts; from 0, moving every pixel by 0.3 reaches class 1."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (torch.round(x * 4) / 4).flatten(1).sum(1) * self.scale
        return torch.stack([torch.zeros_like(s), s - 0.6, torch.full_like(s, -1.0), torch.full_like(s, -2.0)], 1)


class Margin(nn.Module):
    """Four classes, linear: class 1's logit is the mean of the `pixels` pixels minus `offset`. With the defaults
    (4x4 images, 0.2) an image of pixels c is robust at L-inf 0.1 exactly when c < 0.1 (the others' logits stay
    below 0)."""

    def __init__(self, pixels: int = 16, offset: float = 0.2):
        super().__init__()
        self.w = nn.Parameter(torch.full((pixels,), 1 / pixels))
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w
        return torch.stack([torch.zeros_like(s), s - self.offset, s - 1.0, s - 2.0], 1)


def images(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(n, 1, 4, 4), torch.zeros(n, dtype=torch.long)


def test_escalation_catches_what_the_first_round_overstates_on_a_quantising_classifier():
    x, y = images()
    apgd = Suite.standard().only("baseline-apgd-ce")          # Square left out: escalation alone must catch it
    first = reabsnet.evaluate_adaptive(Quantised(), None, x, y, bounds=[0.3], budget="smoke", suite=apgd)
    assert not first.results["alarm"]["raised"]              # one random start per image: silent overstatement
    r = reabsnet.evaluate_adaptive(Quantised(), None, x, y, bounds=[0.3], budget="smoke", suite=apgd,
                                   escalate=(3, 10), tolerance=0.0)
    e = r.results["bounds"]["linf 0.3"]["escalation"]
    rates = [round_["robust"]["master"] for round_ in e["rounds"]]
    # measured: 0.825, 0.575, 0.275 (each round adds random starts and breaks what they land on)
    assert [round_["factor"] for round_ in e["rounds"]] == [1, 3, 10]
    assert rates[0] == first.robust_accuracy()["linf 0.3"] and rates[0] > rates[1] > rates[2]
    assert r.robust_accuracy()["linf 0.3"] == rates[-1]          # the headline is the last round's
    assert e["converged"]["master"] is None and e["rounds"][-1]["broke"]["master"] > 0
    alarm = r.results["alarm"]
    assert alarm["raised"] and any("not converged at the cap" in line for line in alarm["evidence"])
    text = r.markdown()
    assert "**not converged at the cap**" in text and "**Masking alarm raised**" in text


def test_square_breaking_what_every_gradient_step_left_raises_the_alarm():
    x, y = images(20)
    r = reabsnet.evaluate_adaptive(Quantised(), None, x, y, bounds=[0.3], budget="smoke")
    beyond = r.results["bounds"]["linf 0.3"]["square_beyond_gradient"]["master"]
    assert beyond > 0
    assert any(f"Square broke {beyond} image" in line for line in r.results["alarm"]["evidence"])


def test_a_robust_classifier_converges_at_the_first_round_and_raises_no_alarm():
    # pixels of 0, 0.05, 0.15 and 0.18: the first two robust at 0.1 (c < 0.1), the others within 0.1 of class 1
    x = torch.tensor([0.0, 0.05, 0.15, 0.18]).view(4, 1, 1, 1).repeat(5, 1, 4, 4)
    y = torch.zeros(20, dtype=torch.long)
    r = reabsnet.evaluate_adaptive(Margin(), None, x, y, bounds=[0.1], budget="smoke", escalate=(3, 10))
    e = r.results["bounds"]["linf 0.1"]["escalation"]
    assert r.robust_accuracy()["linf 0.1"] == 0.5                     # exactly the robust half
    assert len(e["rounds"]) == 2 and e["rounds"][1]["broke"] == {"master": 0, "master_autoattack": 0}
    assert e["converged"] == {"master": 1, "master_autoattack": 1}
    # the calm 3x round ended it: no step ran at 10x, and at 3x only on the images still standing
    attacks = r.results["bounds"]["linf 0.1"]["per_attack"]
    assert not any("-x10-" in k for k in attacks) and attacks["master-square-x3-linf-0.10"]["attacked"] == 10
    assert r.results["alarm"] == {"raised": False, "evidence": []}
    assert "| L-inf 0.1 | master alone | 0.500 | 0.500 | at 1x |" in r.markdown()
    assert "Masking alarm: not raised" in r.markdown()


def test_a_failed_binarization_test_raises_the_alarm():
    record = {"attacks": {"APGD-CE": {"success": 3, "n": 10, "passes": False},
                          "any attack": {"success": 4, "n": 10, "passes": False}}}
    results = {"bounds": {}, "binarization": {"linf 0.3": {"tests": {"ReabsNet": {"reject": record}}}}}
    alarm = masking_alarm(results)
    assert alarm["raised"] and alarm["evidence"] == [
        "L-inf 0.3: the binarization test of ReabsNet (reject) failed: the attacks found 4 of 10 examples known to "
        "exist"]
    record["attacks"]["any attack"] |= {"success": 10, "passes": True}       # one attack passing is enough
    assert not masking_alarm(results)["raised"]


@pytest.mark.parametrize("escalate, tolerance", [((10, 3), 0.01), ((1, 3), 0.01), ((3,), 1.5)])
def test_escalation_settings_out_of_range_are_refused_in_one_line(escalate, tolerance):
    x, y = images(2)
    with pytest.raises(ReabsnetError, match="escalate|tolerance"):
        reabsnet.evaluate_adaptive(Margin(), None, x, y, bounds=[0.1], budget="smoke", escalate=escalate,
                                   tolerance=tolerance)
    with pytest.raises(ReabsnetError, match="adaptive.escalate"):
        get_profile("smoke", ["adaptive.escalate=10,3"])


class Calm(nn.Module):
    """A guardian that never flags: two logits, natural ahead by 5 whatever the input (linear in it, so the
    modifier's DeepFool has a gradient to read)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + torch.tensor([5.0, 0.0])


def test_images_standing_without_a_gradient_trip_an_indicator_and_raise_the_alarm():
    x, y = images(10)
    r = reabsnet.evaluate_adaptive(Quantised(), Calm(), x, y, bounds=[0.3], budget="smoke", sanity=False,
                                   suite=Suite.standard().only("joint-apgd-ce"))
    b = r.results["bounds"]["linf 0.3"]
    standing = b["reabsnet"]["k"]
    assert 0 < standing < 10          # random starts broke some; the rest stand only because nothing moves them
    assert b["indicators"]["unavailable gradients"] == {"reabsnet": standing, "selective": b["selective"]["k"]}
    assert any("unavailable gradients" in line for line in r.results["alarm"]["evidence"])
    assert "| L-inf 0.3 | 0 / 0 | 0 / 0 |" in r.markdown()


def test_the_recheck_counts_an_image_broken_only_where_both_judgements_agree():
    from types import SimpleNamespace

    from reabsnet.security.engine import recheck
    from reabsnet.security.ledger import Ledger
    from reabsnet.security.results import BoundResult

    class Defense:
        def predict_batches(self, x):     # judged again on their own, images 0 and 1: right, and 1 flagged
            assert len(x) == 2
            return SimpleNamespace(label=torch.tensor([0, 1]), flagged=torch.tensor([False, True]))

    y = torch.zeros(4, dtype=torch.long)
    run = SimpleNamespace(target=SimpleNamespace(defense=Defense()), y=y)
    ledger = Ledger.open(y, {"reabsnet": torch.ones(4, dtype=torch.bool), "selective": torch.ones(4, dtype=torch.bool)})
    result = BoundResult("linf", 0.1)
    wrong_in_batch = torch.tensor([False, False, True, True])         # images 0 and 1 broken in their batch
    correct, ok = recheck(run, ledger, result, torch.zeros(4, 1, 2, 2), wrong_in_batch, wrong_in_batch.clone())
    assert correct.tolist() == [True, False, True, True] and ok.tolist() == [True, True, True, True]
    assert result.rechecked == {"reabsnet": 1, "selective": 2}
    assert ledger.tripped["unstable prediction"].tolist() == [True, True, False, False]


class Accepting(nn.Module):
    """A guardian that never flags: two logits, natural far ahead, whatever the input."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([10.0, -10.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), 2) + 0 * x.flatten(1)[:, :1]


def test_a_threshold_steps_examples_strike_the_headline_verdicts_too():
    # only the step aimed under the calibrated thresholds runs; its examples lie within the bound like any other, so
    # the headline reject policy (at 0.5) and ReabsNet fall with them: the headline is the 0.5 row
    x, y = images(20)
    calibration = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(0)) - 0.5
    r = reabsnet.evaluate_adaptive(Margin(), Accepting(), x, y, bounds=[0.3], budget="smoke", policy="reject",
                                   suite=Suite.standard().only("joint-fpr-apgd"), x_calibration=calibration)
    b = r.results["bounds"]["linf 0.3"]
    assert b["fixed_fpr"]["0.5"]["correct_or_rejected"]["rate"] == 0.0
    assert b["selective"]["rate"] == 0.0 and b["reabsnet"]["rate"] == 0.0


def test_a_baseline_no_step_attacks_reports_no_robust_rate_and_does_not_escalate():
    # the defense's steps alone: the master's column would otherwise read its clean accuracy as a robust one
    x, y = images(10)
    r = reabsnet.evaluate_adaptive(Margin(), Accepting(), x, y, bounds=[0.3], budget="smoke",
                                   suite=Suite.standard().only("joint-apgd-ce"), escalate=(3,))
    b = r.results["bounds"]["linf 0.3"]
    assert "reabsnet" in b and "master" not in b and "master_autoattack" not in b
    assert set(b["escalation"]["converged"]) == {"reabsnet", "selective"}
    assert "| L-inf 0.3 | 0.000 (0/10; 0.000-0.278) | 0.000 (0/10; 0.000-0.278) | - |" in r.markdown()
