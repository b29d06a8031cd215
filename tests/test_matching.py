"""Logit matching on a toy classifier and detector whose outputs are known, and on the shipped paper networks."""

from __future__ import annotations

import pytest
import torch

from reabsnet.attacks import JointLogits, logit_matching
from reabsnet.attacks.matching import _guide_order
from test_orthogonal import Linear, toy


def guides() -> torch.Tensor:
    # class 1 unflagged (x1 = 0.3: x0 + x1 > 0.2, x0 < 0.05); class 1 flagged (x0 = 0.3); class 0 unflagged
    g = torch.zeros(3, 1, 2, 2)
    g.view(3, 4)[0, 1] = 0.3
    g.view(3, 4)[1, 0] = 0.3
    return g


def test_the_guide_is_a_natural_input_of_another_class_nearest_first():
    joint = toy()
    x, y = torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])
    order = _guide_order(joint, x, y, None, guides(), reject=2, candidates=3)
    # label 0: only guide 0 (guide 1 is flagged, guide 2 is class 0); label 1: only guide 2
    assert order.tolist() == [[0, -1, -1], [2, -1, -1]]
    targeted = _guide_order(joint, x, y, torch.tensor([1, 0]), guides(), reject=2, candidates=1)
    assert targeted.tolist() == [[0], [2]]


def test_matching_a_natural_guides_outputs_fools_the_classifier_unflagged():
    joint = toy()
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    r = logit_matching(joint, x, y, guides=guides(), eps=0.3, steps=20, box=(-1.0, 1.0), reject=2)
    assert r.success.all() and (r.label == 1).all()
    with torch.no_grad():
        assert (joint.detector_score(r.x_adv) <= 0).all()
    assert float(r.linf.max()) <= 0.3 + 1e-6


def test_a_guide_out_of_reach_or_a_crippled_step_does_not_succeed():
    joint = toy()
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    # the only usable guide lies 0.3 away along x1; within 0.1 no point is class 1
    assert not logit_matching(joint, x, y, guides=guides(), eps=0.1, steps=20, box=(-1.0, 1.0), reject=2).success.any()
    # one step of a hundredth of eps cannot get there
    weak = logit_matching(joint, x, y, guides=guides(), eps=0.3, steps=1, step_fraction=0.01, box=(-1.0, 1.0),
                          reject=2)
    assert not weak.success.any()


def test_without_a_usable_guide_the_input_comes_back_unchanged():
    joint = toy()
    x, y = torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)
    flagged_only = guides()[1:2]
    r = logit_matching(joint, x, y, guides=flagged_only, eps=0.3, steps=20, box=(-1.0, 1.0), reject=2)
    assert not r.success.any() and torch.equal(r.x_adv, x)


def test_logit_matching_refuses_what_it_cannot_attack():
    joint = toy()
    x, y = torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="JointLogits"):
        logit_matching(Linear([[1.0] * 4], [0.0]), x, y, guides=guides())
    with pytest.raises(ValueError, match="guides"):
        logit_matching(joint, x, y, guides=torch.zeros(2, 4), box=(-1.0, 1.0))
    with pytest.raises(ValueError, match="eps"):
        logit_matching(joint, x, y, guides=guides(), eps=-0.1, box=(-1.0, 1.0))


def test_logit_matching_breaks_the_shipped_reject_policy_at_linf_0_3(mnist):
    from reabsnet.models import load_model
    from reabsnet.stages import SHIPPED_MODELS

    master, meta = load_model(SHIPPED_MODELS / "mnist" / "paper" / "master.safetensors", expect="master")
    guardian, _ = load_model(SHIPPED_MODELS / "mnist" / "paper" / "guardian.safetensors", expect="guardian")
    joint = JointLogits(master.eval(), guardian.eval(), 0.5, 1 / float(meta["temperature"])).eval()
    x, y = mnist.split("test", 20)
    pool, _ = mnist.split("val", 200)
    r = logit_matching(joint, x, y, guides=pool, eps=0.3, steps=50, reject=10)
    # measured: all of the first 100 test images at 100 steps; at 0.3 every image has a guide within reach
    assert float(r.success.float().mean()) >= 0.9
    assert float(r.linf.max()) <= 0.3 + 1e-6 and float(r.x_adv.min()) >= -0.5 and float(r.x_adv.max()) <= 0.5
