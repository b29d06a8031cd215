"""Cross-check against foolbox 3 on the same model and images (marked `peers`: run by hand with -m peers).

Our DeepFool and CW-L2 must reach at least foolbox's success rate with a median L2 at most 5% above its.
The test installs foolbox into the running environment if it is missing (it needs the package registry).
"""

from __future__ import annotations

import pytest
import torch

from peer_install import import_or_install
from reabsnet.attacks import carlini_wagner_l2, deepfool

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def fb():
    return import_or_install("foolbox", ["foolbox"])


@pytest.fixture(scope="module")
def batch(mnist):
    x, y = mnist.split("test")
    return x[:100], y[:100]


def _compare(ours, theirs_adv, model, x, y):
    theirs_ok = model(theirs_adv).argmax(1) != y
    theirs_l2 = (theirs_adv - x).flatten(1).norm(dim=1)
    assert ours.success.float().mean() >= theirs_ok.float().mean()
    assert ours.l2[ours.success].median() <= 1.05 * theirs_l2[theirs_ok].median()


@pytest.mark.parametrize("which", ["small", "distilled"])
def test_deepfool_matches_foolbox(fb, which, small_model, smoke_master, batch):
    model = small_model if which == "small" else smoke_master
    x, y = batch
    fmodel = fb.PyTorchModel(model, bounds=(-0.5, 0.5))
    _, adv, _ = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02, loss="logits")(
        fmodel, x, y, epsilons=None)
    with torch.no_grad():
        _compare(deepfool(model, x, y), adv, model, x, y)


def test_cw_l2_matches_foolbox(fb, small_model, batch):
    x, y = batch
    settings = {"binary_search_steps": 5, "max_iterations": 300, "learning_rate": 0.05, "initial_const": 0.1}
    fmodel = fb.PyTorchModel(small_model, bounds=(-0.5, 0.5))
    _, adv, _ = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=5, steps=300, stepsize=0.05, initial_const=0.1, abort_early=True)(
        fmodel, x, y, epsilons=None)
    with torch.no_grad():
        _compare(carlini_wagner_l2(small_model, x, y, **settings), adv, small_model, x, y)
