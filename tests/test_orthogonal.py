"""Selective and Orthogonal PGD on toy networks whose gradients are known."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from reabsnet.attacks import JointLogits, orthogonal_pgd, selective_pgd


class Linear(nn.Module):
    """Logits W x (+ b) of flattened 1x2x2 images."""

    def __init__(self, weight: list[list[float]], bias: list[float]):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(weight))
        self.b = nn.Parameter(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def toy() -> JointLogits:
    # classifier: class 1 wins when x0 + x1 > 0.2; detector: flags when x0 > 0.05. Moving along x0 + x1 (the
    # classifier's own gradient) gets flagged; moving along x1 alone fools it unflagged.
    classifier = Linear([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]], [0.0, -0.2])
    detector = Linear([[0.0, 0.0, 0.0, 0.0], [20.0, 0.0, 0.0, 0.0]], [0.0, -1.0])
    return JointLogits(classifier, detector, threshold=0.5).eval()


def test_the_orthogonal_step_has_no_component_along_the_detectors_gradient():
    x, y = torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long)
    step = orthogonal_pgd(toy(), x, y, eps=0.05, norm="l2", steps=1, step_fraction=1.0, box=(-1.0, 1.0), reject=2)
    delta = (step.x_adv - x).flatten()
    assert abs(float(delta[0])) < 1e-7 and float(delta[1]) == pytest.approx(0.05, abs=1e-6)
    plain = selective_pgd(toy(), x, y, eps=0.05, norm="l2", steps=1, step_fraction=1.0, box=(-1.0, 1.0), reject=2)
    delta = (plain.x_adv - x).flatten()
    assert float(delta[0]) == pytest.approx(0.05 / 2 ** 0.5, abs=1e-6)     # the classifier's gradient as it is


def test_orthogonal_pgd_fools_the_classifier_unflagged_where_such_a_point_exists():
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    joint = toy()
    r = orthogonal_pgd(joint, x, y, eps=0.3, steps=20, step_fraction=1 / 6, box=(-1.0, 1.0), reject=2)
    assert r.success.all() and (r.label == 1).all()
    assert (joint.detector_score(r.x_adv) <= 0).all() and float(r.linf.max()) <= 0.3 + 1e-6


def test_it_keeps_the_successful_iterate_with_the_lowest_detector_score():
    # asked to go on until the score is 5 below the threshold (out of reach), it walks x0 down while fooled and
    # keeps the lowest point (x0 -0.05, score -2; the first success has score -1)
    x, y = torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long)
    joint = toy()
    first = orthogonal_pgd(joint, x, y, eps=0.3, steps=30, step_fraction=1 / 6, box=(-1.0, 1.0), reject=2)
    lowest = orthogonal_pgd(joint, x, y, eps=0.3, steps=30, step_fraction=1 / 6, box=(-1.0, 1.0), reject=2,
                            leave_margin=5.0)
    assert first.success.all() and lowest.success.all()
    with torch.no_grad():
        assert float(joint.detector_score(lowest.x_adv)) < float(joint.detector_score(first.x_adv)) - 0.5


def test_orthogonal_pgd_needs_the_two_objectives_apart():
    with pytest.raises(ValueError, match="JointLogits"):
        orthogonal_pgd(nn.Flatten(), torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long))


def weighted_sum_pgd(joint: JointLogits, x, y, weight: float, eps: float = 0.3, steps: int = 20):
    """The attack Orthogonal PGD replaces: signed steps on CE(classifier) - weight * detector score, summed."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(joint.master(x_adv), y) - weight * joint.detector_score(x_adv).sum()
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = (x + (x_adv.detach() + eps / 6 * grad.sign() - x).clamp(-eps, eps)).clamp(-1.0, 1.0)
    return x_adv


@pytest.mark.parametrize("weight", [0.01, 1.0])
def test_orthogonal_pgd_succeeds_where_a_weighted_sum_with_a_badly_chosen_weight_does_not(weight):
    # with a small weight the classifier's gradient (along x0 + x1) drags the input into the flagged region; with a
    # large one the detector's (along x0) pushes x0 so far down that x0 + x1 never reaches 0.2
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    joint = toy()
    x_adv = weighted_sum_pgd(joint, x, y, weight)
    with torch.no_grad():
        fooled_unflagged = (joint(x_adv).argmax(1) == 1)
    assert not fooled_unflagged.any()
    r = orthogonal_pgd(joint, x, y, eps=0.3, steps=20, step_fraction=1 / 6, box=(-1.0, 1.0), reject=2)
    assert r.success.all()
