"""Cross-check of the robustness ensemble against torchattacks (marked `peers`: run by hand with -m peers).

On the shipped Madry-style baseline (`reabsnet/shipped/mnist/paper/madry`), the first 200 test images, L-inf eps 0.3:
our AutoAttack-standard ensemble's robust accuracy within 1 point of torchattacks' `AutoAttack` (both run APGD-CE,
APGD-T, FAB-T and Square), and our Square and FAB-T each at least as strong as torchattacks' at the same budget.
The test installs torchattacks (--no-deps; it imports scipy) into the running environment if it is missing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from peer_install import import_or_install
from reabsnet.attacks import fab_t, robust_accuracy, square
from reabsnet.models import load_model
from reabsnet.stages import SHIPPED_MODELS

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def ta():
    return import_or_install("torchattacks", ["scipy"], ["--no-deps", "torchattacks"])


class FromUnit(nn.Module):
    """torchattacks works on [0, 1] images; ours on [-0.5, 0.5]: the same model on shifted inputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x - 0.5)


@pytest.fixture(scope="module")
def madry_batch(mnist):
    model, _ = load_model(SHIPPED_MODELS / "mnist" / "paper" / "madry.safetensors", expect="madry")
    x, y = mnist.split("test")
    return model.eval(), x[:200], y[:200]


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_autoattack_standard_matches_torchattacks(ta, madry_batch):
    model, x, y = madry_batch
    ours = robust_accuracy(model, x, y, norm="linf", eps=0.3, batch_size=200)
    theirs = ta.AutoAttack(FromUnit(model).eval(), norm="Linf", eps=0.3, version="standard", n_classes=10, seed=0)
    adv = theirs(x + 0.5, y) - 0.5
    assert (adv - x).abs().amax() <= 0.3 + 1e-5
    theirs_acc = _accuracy(model, adv, y)
    print(f"robust accuracy: ours {ours['robust_accuracy']:.3f} (after {ours['after']}), torchattacks "
          f"{theirs_acc:.3f}")
    assert abs(ours["robust_accuracy"] - theirs_acc) <= 0.01 + 1e-9


def test_square_matches_torchattacks(ta, madry_batch):
    model, x, y = madry_batch
    ours = square(model, x, y, eps=0.3, norm="linf", queries=5000, p_init=0.8)
    adv = ta.Square(FromUnit(model).eval(), norm="Linf", eps=0.3, n_queries=5000, p_init=0.8, seed=0)(x + 0.5, y)
    theirs_acc = _accuracy(model, adv - 0.5, y)
    ours_acc = 1 - float(ours.success.float().mean())
    print(f"Square robust accuracy: ours {ours_acc:.3f}, torchattacks {theirs_acc:.3f}")
    assert ours_acc <= theirs_acc + 0.01 + 1e-9


def test_fab_t_matches_torchattacks(ta, madry_batch):
    model, x, y = madry_batch
    ours = fab_t(model, x, y, eps=0.3, norm="linf")
    adv = ta.FAB(FromUnit(model).eval(), norm="Linf", eps=0.3, steps=100, n_restarts=1, alpha_max=0.1, eta=1.05,
                 beta=0.9, multi_targeted=True, n_classes=10, seed=0)(x + 0.5, y) - 0.5
    theirs_ok = (model(adv).argmax(1) != y) & ((adv - x).flatten(1).abs().amax(1) <= 0.3 + 1e-5)
    ours_acc, theirs_acc = 1 - float(ours.success.float().mean()), 1 - float(theirs_ok.float().mean())
    print(f"FAB-T robust accuracy: ours {ours_acc:.3f}, torchattacks {theirs_acc:.3f}")
    assert (ours.linf <= 0.3 + 1e-6).all() and ours_acc <= theirs_acc + 0.01 + 1e-9
