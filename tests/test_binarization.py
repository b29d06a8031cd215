"""The binarization test on small networks: its pieces are exact, a sound attack passes it, a weakened one fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from reabsnet.attacks import apgd, pgd
from reabsnet.errors import ReabsnetError
from reabsnet.models.registry import CPU_CHUNK, Chunked
from reabsnet.security.binarization import (
    DEFAULTS,
    Binarized,
    Penultimate,
    _inner,
    _surface,
    _to_radius,
    binarization_test,
    binarize,
    distance,
    fit_readouts,
    suite_attacks,
)

BOX = (-0.5, 0.5)


def mlp(seed: int, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.Tanh(), nn.Linear(48, 32), nn.Tanh(),
                         nn.Linear(32, classes)).eval()


def images(n: int = 12, seed: int = 0) -> torch.Tensor:
    # distinct binary-ish 1x8x8 images: their L-inf balls of radius 0.3 are disjoint
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=gen) > 0.5).float() - 0.5


def test_penultimate_is_the_input_of_the_last_linear_layer_also_when_the_model_runs_in_chunks():
    model = mlp(0)
    x = images(5)
    expected = model[:5](x)
    assert torch.allclose(Penultimate(model)(x), expected)
    x = images(CPU_CHUNK + 3)
    chunked = Chunked(*model)                  # runs in two chunks: the hook fires twice
    assert torch.allclose(Penultimate(chunked)(x), model[:5](x), atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_surface_points_lie_at_the_radius_inside_the_box(norm):
    x = images(4)
    gen = torch.Generator().manual_seed(1)
    for pixels in (0, 3):
        pts = _surface(x, 6, 0.3, norm, BOX, gen, pixels=pixels)
        flat = pts.reshape(-1, 1, 8, 8)
        assert flat.min() >= BOX[0] and flat.max() <= BOX[1]
        d = distance(flat, x.repeat_interleave(6, 0), norm)
        assert torch.allclose(d, torch.full_like(d, 0.3), atol=1e-4)
        if pixels:
            moved = (flat - x.repeat_interleave(6, 0)).flatten(1).ne(0).sum(1)
            assert int(moved.max()) <= pixels
    # a step that clipping shortens is lengthened until the clipped point reaches the radius
    corner = torch.full((1, 1, 8, 8), 0.5)
    out = _to_radius(corner, -torch.ones_like(corner) * 0.01, torch.tensor([0.2]), "linf", BOX)
    assert float(distance(out, corner, "linf")) == pytest.approx(0.2, abs=1e-5)


def test_the_readouts_separate_each_images_points_and_closeness_leaves_one_boundary_point():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 40, 16, generator=gen)
    labels = torch.cat([torch.zeros(30), torch.ones(10)]).long()
    feats[:, 30:] += 2.0                               # separable
    w, b, ok = fit_readouts(feats, labels)
    s = torch.einsum("npd,nd->np", feats, w) + b[:, None]
    assert ok.all() and (s[:, :30] < 0).all() and (s[:, 30:] > 0).all()
    assert torch.allclose(s.abs().amax(1), torch.ones(3), atol=1e-5)      # the "fixed" rescaling
    w, b, ok = fit_readouts(feats, labels, closeness=0.9999)
    s = torch.einsum("npd,nd->np", feats, w) + b[:, None]
    assert ok.all() and ((s > 0).sum(1) == 1).all()   # only the most confident boundary point stays class 1


def test_binarized_picks_each_inputs_own_readout():
    x = images(3)
    weight = torch.eye(3, 64)                          # readout i reads pixel i
    head = Binarized(nn.Flatten(), weight, torch.zeros(3), x, "linf")
    moved = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(*BOX)
    s = head(moved)[:, 1] * 2
    assert torch.allclose(s, moved.flatten(1)[torch.arange(3), torch.arange(3)])


def test_overlapping_balls_and_bad_settings_are_refused():
    x = images(2)
    x[1] = x[0] + 0.1
    with pytest.raises(ReabsnetError, match="overlap"):
        binarize("classifier", mlp(0), x.clamp(*BOX), eps=0.3)
    with pytest.raises(ReabsnetError, match="guardian"):
        binarize("reject", mlp(0), images(2), eps=0.3)
    with pytest.raises(ReabsnetError, match="policy"):
        binarize("other", mlp(0), images(2), eps=0.3)


def weak(model, x, y):
    """A broken attack: one step of a hundredth of the bound, no random start."""
    return pgd(model, x, y, eps=0.3, step_size=0.003, steps=1, random_start=False, box=BOX).x_adv


def strong(model, x, y, reject=None):
    return apgd(model, x, y, eps=0.3, loss="ce", steps=100, restarts=2, reject=reject, box=BOX).x_adv


def test_a_sound_attack_passes_the_classifier_test_and_a_weakened_one_fails():
    x = images(12)
    setup = binarize("classifier", mlp(0), x, eps=0.3, n_inner=200, box=BOX)
    assert int(setup.usable.sum()) >= 10
    assert int(setup.random_success.sum()) <= 2          # random points rarely find it: the test is not trivial
    out = binarization_test(setup, x, {"APGD-CE": ("classifier", strong), "weak": ("classifier", weak)}, 0.3,
                            box=BOX)
    assert out["APGD-CE"]["passes"] and out["APGD-CE"]["rate"] == 1.0
    assert not out["weak"]["passes"] and out["weak"]["rate"] <= 0.2


def test_the_reject_policy_test_needs_the_guardian_evaded_and_the_inverted_test_runs():
    x = images(12)
    master, guardian = mlp(0), mlp(1, classes=2)
    setup = binarize("reject", master, x, eps=0.3, guardian=guardian, box=BOX)
    assert int(setup.usable.sum()) >= 6
    joint = lambda m, xs, y: strong(m, xs, y, reject=2)            # noqa: E731
    out = binarization_test(setup, x, {"joint APGD-CE": ("joint", joint), "weak": ("joint", weak)}, 0.3, box=BOX)
    assert out["joint APGD-CE"]["rate"] >= 0.95 and out["weak"]["rate"] <= 0.2
    # the judge counts class 1 only where the guardian accepts: a point the guardian flags is no success
    usable_x = x[setup.usable]
    flagged_everywhere = binarize("reject", master, usable_x, eps=0.3, guardian=_Always(1), box=BOX)
    assert int(flagged_everywhere.usable.sum()) == 0
    inverted = binarize("reject", master, x, eps=0.3, guardian=guardian, inverted=True, box=BOX)
    out = binarization_test(inverted, x, {"joint APGD-CE": ("joint", joint)}, 0.3, box=BOX)
    assert out["joint APGD-CE"]["n"] >= 1


class _Always(nn.Module):
    """A guardian with one verdict for every input (1: flags everything)."""

    def __init__(self, cls: int):
        super().__init__()
        self.cls = cls
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        z = torch.zeros(len(x), 2) + self.p
        z[:, self.cls] = 5.0
        return z


def test_suite_attacks_run_unchanged_on_every_view():
    assert set(suite_attacks("classifier", 0.3)) == {"APGD-CE", "Square"}
    assert {v for v, _ in suite_attacks("revise", 0.3).values()} == {"pipeline", "unrolled", "joint"}
    assert DEFAULTS["classifier"]["n_boundary"] == 1 and DEFAULTS["reject"]["n_boundary"] == 49


def test_a_point_outside_the_bound_is_no_success():
    x = images(12)
    setup = binarize("classifier", mlp(0), x, eps=0.3, n_inner=200, box=BOX)

    def beyond(model, xs, y):     # the readout's side, at twice the bound: class 1, but not allowed
        found = apgd(model, xs, y, eps=0.6, loss="ce", steps=50, box=BOX).x_adv
        assert (model(found).argmax(1) == 1).float().mean() > 0.5
        return found

    out = binarization_test(setup, x, {"beyond": ("classifier", beyond)}, 0.3, box=BOX)
    assert out["beyond"]["success"] <= 1


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_inner_points_lie_within_the_gap(norm):
    x = images(3)
    pts = _inner(x, 50, 0.285, norm, BOX, torch.Generator().manual_seed(0))
    d = distance(pts.reshape(-1, 1, 8, 8), x.repeat_interleave(50, 0), norm)
    assert float(d.max()) <= 0.285 + 1e-6 and float(d.max()) > 0.2


def test_the_reject_judge_counts_only_what_the_guardian_accepts():
    x = images(12)
    master, guardian = mlp(0), mlp(1, classes=2)
    setup = binarize("reject", master, x, eps=0.3, guardian=guardian, box=BOX)
    head = setup.views["joint"].master

    def blind(model, xs, y):     # attacks the readout alone, ignoring the guardian
        return strong(model.master, xs, y)

    out = binarization_test(setup, x, {"blind": ("joint", blind)}, 0.3, box=BOX)
    xs = x[setup.usable]
    x_adv = strong(head, xs, torch.zeros(len(xs), dtype=torch.long))
    with torch.no_grad():
        one = head(x_adv).argmax(1) == 1
        accepted = guardian(x_adv).softmax(1)[:, 1] <= 0.5
    assert bool((one & ~accepted).any())                 # some wins the guardian flags: they must not count
    assert out["blind"]["success"] == int((one & accepted).sum())
