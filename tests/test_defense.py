"""ReabsNet as a module: the guardian gates, the modifier revises only what it flags, the master decides."""

from __future__ import annotations

import pytest
import torch

from reabsnet.defense import ReabsNet, revise
from reabsnet.models import load_model


@pytest.fixture(scope="module")
def guardian(smoke_run):
    return load_model(smoke_run / "guardian.safetensors", expect="guardian")[0].eval()


@pytest.fixture(scope="module")
def inputs(mnist, smoke_run):
    from reabsnet.attacks.run import load_set

    arrays, _ = load_set(smoke_run / "attacks" / "deepfool.npz")
    x_nat = mnist.split("test")[0][:32]
    return torch.cat([x_nat, arrays["x_adv"][:32]])


def test_unflagged_inputs_go_to_the_master_unchanged(smoke_master, guardian, inputs):
    net = ReabsNet(smoke_master, guardian).eval()
    pred = net.predict(inputs)
    keep = ~pred.flagged
    assert keep.any() and pred.flagged.any()
    torch.testing.assert_close(pred.logits[keep], smoke_master(inputs[keep]))
    assert torch.equal(pred.x[keep], inputs[keep]) and (pred.revision_l2[keep] == 0).all()
    torch.testing.assert_close(net(inputs), pred.logits)


def test_flagged_inputs_are_revised_toward_natural(smoke_master, guardian, inputs):
    net = ReabsNet(smoke_master, guardian, threshold=0.5).eval()
    pred = net.predict(inputs)
    f = pred.flagged
    assert (pred.revision_l2[f] > 0).all() and (pred.iterations[f] > 0).all()
    after = guardian(pred.x[f]).softmax(1)[:, 0]
    assert torch.equal(after[pred.natural_after[f]] >= 0.5, torch.ones(int(pred.natural_after[f].sum()),
                                                                          dtype=torch.bool))
    assert pred.natural_after[f].float().mean() > 0.9
    assert pred.x.min() >= -0.5 and pred.x.max() <= 0.5


def test_threshold_controls_what_is_flagged(smoke_master, guardian, inputs):
    strict = ReabsNet(smoke_master, guardian, threshold=0.05).predict(inputs).flagged
    loose = ReabsNet(smoke_master, guardian, threshold=0.95).predict(inputs).flagged
    assert strict.sum() >= loose.sum() and (strict | ~loose).all()
    with pytest.raises(ValueError):
        ReabsNet(smoke_master, guardian, threshold=1.0)


def test_works_under_no_grad_and_passes_gradients_straight_through(smoke_master, guardian, inputs):
    net = ReabsNet(smoke_master, guardian).eval()
    with torch.no_grad():
        logits = net(inputs)
    x = inputs.clone().requires_grad_(True)
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(net(inputs), logits)


def test_revise_records_what_it_did(guardian, inputs):
    rev = revise(guardian, inputs[32:40], max_iter=3)
    assert rev.x.shape == inputs[32:40].shape and (rev.iterations <= 3).all()
    torch.testing.assert_close(rev.l2, (rev.x - inputs[32:40]).flatten(1).norm(dim=1))


def _linear_guardian(w: torch.Tensor, b: float) -> torch.nn.Module:
    """logits (0, w.x + b): P(adversarial) > 0.5 exactly when w.x + b > 0."""
    lin = torch.nn.Linear(w.numel(), 1)
    with torch.no_grad():
        lin.weight.copy_(w.view(1, -1))
        lin.bias.fill_(b)

    class Guardian(torch.nn.Module):
        def forward(self, x):
            z = lin(x.flatten(1))
            return torch.cat([torch.zeros_like(z), z], dim=1)

    return Guardian().eval()


def test_unrolled_revision_takes_revises_step_and_differentiates_it_exactly():
    """For a linear guardian one DeepFool step lands (1 + overshoot) times the distance on the far side of the
    hyperplane: w.x_rev = w.x - (1 + overshoot)(w.x + b + 1e-4), so d(w.x_rev)/dx = -overshoot * w, where the
    identity (BPDA) backward would give w."""
    from reabsnet.defense.modifier import unrolled_revision

    torch.manual_seed(0)
    w = torch.randn(1, 4, 4) * 0.5
    guardian = _linear_guardian(w, 0.3)
    x = (torch.rand(8, 1, 4, 4) - 0.5) * 0.2                  # near the middle of the box: no pixel clipped
    rev = revise(guardian, x, overshoot=0.02)
    assert (rev.iterations == 1).all() and rev.natural.all()
    xg = x.clone().requires_grad_(True)
    unrolled = unrolled_revision(guardian, xg, overshoot=0.02)
    assert torch.equal(unrolled.iterations, rev.iterations) and unrolled.natural.all()
    assert torch.allclose(unrolled.x.detach(), rev.x, atol=1e-6)
    (grad,) = torch.autograd.grad((unrolled.x.flatten(1) @ w.flatten()).sum(), xg)
    assert torch.allclose(grad, (-0.02 * w).expand_as(grad), atol=1e-5)
    # and through ReabsNet: the same gradient reaches the input, the forward value unchanged
    master = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1))
    with torch.no_grad():
        master[1].weight.copy_(w.view(1, -1))
        master[1].bias.zero_()
    for backward, expected in (("identity", w), ("unrolled", -0.02 * w)):
        net = ReabsNet(master, guardian, backward=backward).eval()
        xg = x.clone().requires_grad_(True)
        out = net(xg)
        (grad,) = torch.autograd.grad(out.sum(), xg)
        assert torch.allclose(grad, expected.expand_as(grad), atol=1e-5)
        assert torch.allclose(out.detach(), master(rev.x), atol=1e-5)


def test_unrolled_revision_takes_revises_steps_on_a_real_guardian(guardian, inputs):
    """On a trained guardian, where examples need different numbers of steps (and some run out of them), the one-pass
    unrolled revision takes revise's steps to the bit: the same iterations, the same revised inputs, the same
    verdict; and ReabsNet's unrolled forward equals its identity one."""
    from reabsnet.defense.modifier import unrolled_revision

    x = inputs[32:]
    rev = revise(guardian, x, max_iter=3)
    assert len(set(rev.iterations.tolist())) > 1           # steps of several lengths, so the batch shrinks
    unrolled = unrolled_revision(guardian, x.clone().requires_grad_(True), max_iter=3)
    assert torch.equal(unrolled.iterations, rev.iterations) and torch.equal(unrolled.natural, rev.natural)
    assert torch.equal(unrolled.x.detach(), rev.x)
    net, exact = (ReabsNet(guardian, guardian, backward=b, max_iter=3).eval() for b in ("identity", "unrolled"))
    xg = x.clone().requires_grad_(True)
    assert torch.equal(exact(xg).detach(), net(x))


def test_linf_revision_is_the_smallest_linf_move_to_a_linear_boundary():
    """For a linear guardian the L-inf DeepFool step crosses in one step, every pixel moved by the same amount
    (1 + overshoot)(w.x + b + 1e-4) / ||w||_1 along -sign(w), where the L2 step moves pixels unequally."""
    torch.manual_seed(0)
    w = torch.randn(1, 4, 4) * 0.5
    guardian = _linear_guardian(w, 0.3)
    x = (torch.rand(8, 1, 4, 4) - 0.5) * 0.1
    g = x.flatten(1) @ w.flatten() + 0.3
    flagged = g > 0
    rev = revise(guardian, x[flagged], overshoot=0.02, norm="linf")
    assert rev.natural.all() and (rev.iterations == 1).all()
    moved = (rev.x - x[flagged]).flatten(1)
    expected = (1.02 * (g[flagged] + 1e-4) / w.abs().sum())[:, None] * -w.flatten().sign()
    torch.testing.assert_close(moved, expected, atol=1e-6, rtol=1e-5)
    l2 = revise(guardian, x[flagged], overshoot=0.02)
    assert (moved.abs().amax(1) < (l2.x - x[flagged]).abs().flatten(1).amax(1)).all()


def test_extra_steps_go_deeper_into_the_natural_side_by_the_mean_step():
    """k extra steps move a revised input k more times the length of its (one) DeepFool step along -w/||w||."""
    torch.manual_seed(1)
    w = torch.randn(1, 4, 4) * 0.5
    guardian = _linear_guardian(w, 0.3)
    x = (torch.rand(6, 1, 4, 4) - 0.5) * 0.1
    x = x[(x.flatten(1) @ w.flatten() + 0.3) > 0]
    base = revise(guardian, x)
    for k in (1, 3):
        rev = revise(guardian, x, extra_steps=k)
        assert rev.natural.all() and torch.equal(rev.iterations, base.iterations)
        torch.testing.assert_close(rev.l2, (1 + k) * base.l2, rtol=1e-4, atol=1e-6)
        margin = lambda v: -(v.flatten(1) @ w.flatten() + 0.3)   # noqa: E731  (> 0: natural side)
        assert (margin(rev.x) > margin(base.x)).all()
    # unrolled gradients differentiate the paper's modifier only
    with pytest.raises(ValueError, match="unrolled"):
        ReabsNet(guardian, guardian, backward="unrolled", extra_steps=1)
    with pytest.raises(ValueError, match="extra_steps"):
        ReabsNet(guardian, guardian, extra_steps=-1)
