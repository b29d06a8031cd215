"""The complete robustness evaluation's attacks: Square (score-based), APGD-T, FAB-T, and the AutoAttack-standard
ensemble (`autoattack`, `robust_accuracy`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from reabsnet.attacks import JointLogits, apgd, apgd_t, autoattack, get_attack, robust_accuracy, square
from reabsnet.attacks.adaptive import outcome_loss
from reabsnet.attacks.square import _pattern, p_schedule
from reabsnet.checks import SettingError


@pytest.fixture(scope="module")
def batch(mnist):
    x, y = mnist.split("test")
    return x[:48], y[:48]


class Quantized(nn.Module):
    """`model` behind 8-level input quantisation: a gradient of zero almost everywhere (gradient masking by
    construction), the same function otherwise. Gradient attacks stall on it; a score-based one does not."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        q = torch.round((x + 0.5) * 7) / 7 - 0.5
        return self.model(x + (q - x).detach() * 0 + (q - x))   # value of q, gradient of zero through round


def test_p_schedule_halves_at_the_papers_points():
    assert p_schedule(0.8, 0, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 9000, 10000) == 0.8 / 512
    assert p_schedule(0.8, 500, 5000) == p_schedule(0.8, 1000, 10000)   # rescaled to the budget


def test_l2_pattern_is_unit_norm_and_antisymmetric():
    for s in (3, 5, 7):
        eta = _pattern(s, "cpu")
        assert torch.isclose(eta.norm(), torch.tensor(1.0))
        assert eta[: s // 2].sum() > 0 > eta[s // 2:].sum()


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 2.0)])
def test_square_stays_in_the_ball_and_box_and_breaks_a_plain_model(small_model, batch, norm, eps):
    x, y = batch
    res = square(small_model, x, y, eps=eps, norm=norm, queries=300, seed=1)
    assert res.x_adv.min() >= -0.5 and res.x_adv.max() <= 0.5
    assert ((res.linf if norm == "linf" else res.l2) <= eps + 1e-4).all()
    with torch.no_grad():
        assert torch.equal(res.success, small_model(res.x_adv).argmax(1) != y)
    # measured on 100 images: 0.32 (L-inf) / 0.25 (L2); torchattacks' Square at the same budget 0.23 / 0.22
    assert res.success.float().mean() > 0.15
    assert (res.iterations <= 300).all()
    # a broken example stops costing queries
    assert res.iterations[res.success].float().mean() < 300
    again = square(small_model, x, y, eps=eps, norm=norm, queries=300, seed=1)
    assert torch.equal(again.x_adv, res.x_adv)


def test_square_breaks_a_gradient_masked_model_that_apgd_cannot(small_model, batch):
    x, y = batch
    masked = Quantized(small_model).eval()
    grad_based = apgd(masked, x, y, eps=0.2, loss="dlr", steps=20)
    score_based = square(masked, x, y, eps=0.2, queries=300)
    assert score_based.success.float().mean() > grad_based.success.float().mean() + 0.2


def test_square_never_counts_rejection_as_success(small_model, batch):
    """Under a joint network whose reject class always wins, nothing is a success; with a never-flagging
    guardian, Square on the joint logits does what it does on the master."""
    x, y = batch
    always = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with torch.no_grad():
        always[1].weight.zero_()
        always[1].bias.copy_(torch.tensor([0.0, 50.0]))
    res = square(JointLogits(small_model, always).eval(), x, y, eps=0.3, queries=100, reject=10)
    assert not res.success.any()
    never = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with torch.no_grad():
        never[1].weight.zero_()
        never[1].bias.copy_(torch.tensor([50.0, 0.0]))
    joint = square(JointLogits(small_model, never).eval(), x, y, eps=0.15, queries=200, reject=10)
    plain = square(small_model, x, y, eps=0.15, queries=200)
    assert torch.equal(joint.success, plain.success)


def test_targeted_dlr_is_the_croce_hein_formula():
    logits = torch.tensor([[5.0, 1.0, 3.0, 2.0, 0.0]])
    value = outcome_loss(logits, torch.tensor([0]), "dlr-t", goal=torch.tensor([3]))
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(5 - 2) / (5 - (2 + 1) / 2)
    assert torch.isclose(value, torch.tensor([-3 / 3.5])).all()


def test_apgd_t_targets_the_top_other_classes_and_breaks_at_least_as_many_as_apgd(small_model, batch):
    x, y = batch
    untargeted = apgd(small_model, x, y, eps=0.1, loss="dlr", steps=20)
    targeted = apgd_t(small_model, x, y, eps=0.1, steps=20, targets=3)
    assert (targeted.linf <= 0.1 + 1e-5).all() and targeted.x_adv.min() >= -0.5
    assert targeted.success.float().mean() >= untargeted.success.float().mean() - 2 / len(y)
    with torch.no_grad():
        assert torch.equal(targeted.success, small_model(targeted.x_adv).argmax(1) != y)
    with pytest.raises(SettingError, match="target"):
        apgd_t(small_model, x, y, target=y)


def test_autoattack_is_the_worst_case_of_its_members(small_model, batch):
    x, y = batch
    settings = {"eps": 0.1, "steps": 10, "targets": 2, "queries": 100}
    record: dict = {}
    res = autoattack(small_model, x, y, record=record, **settings)
    assert list(record) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    values = list(record.values())
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))   # each attack only removes examples
    assert abs(record["square"] - (1 - res.success.float().mean())) < 1e-6
    # its first member, run alone with the same seed, breaks no example the ensemble leaves standing
    first = apgd(small_model, x, y, eps=0.1, loss="ce", steps=10, restarts=1)
    assert not (first.success & ~res.success).any()
    assert (res.linf <= 0.1 + 1e-5).all()
    summary = robust_accuracy(small_model, x, y, batch_size=20, **settings)
    assert summary["n"] == len(y) and summary["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert summary["robust_accuracy"] <= summary["after"]["apgd-ce"] <= summary["clean"]
    assert get_attack("autoattack") is autoattack and get_attack("square") is square


def test_new_attacks_refuse_bad_settings_before_any_work(small_model, batch):
    x, y = batch
    for call in (lambda: square(small_model, x, y, queries=0), lambda: square(small_model, x, y, p_init=1.5),
                 lambda: apgd_t(small_model, x, y, targets=0), lambda: autoattack(small_model, x, y, eps=-1),
                 lambda: robust_accuracy(small_model, x, y, version="plus")):
        with pytest.raises(SettingError):
            call()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_boundary_step_is_the_smallest_step_to_the_hyperplane_inside_the_box(norm):
    from reabsnet.attacks.fab import boundary_step

    gen = torch.Generator().manual_seed(0)
    p = torch.rand(64, 50, generator=gen) - 0.5
    w = torch.randn(64, 50, generator=gen)
    w[:, :5] = 0                                   # coordinates the hyperplane ignores stay put
    c = torch.randn(64, generator=gen) * 2
    c[:4] = torch.tensor([40.0, -40.0, 0.0, 1e-3])  # out of the box's reach (both sides), on the plane, just off
    d = boundary_step(p, w, c, (-0.5, 0.5), norm)
    assert ((p + d) >= -0.5 - 1e-6).all() and ((p + d) <= 0.5 + 1e-6).all() and (d[:, :5] == 0).all()
    room = torch.where(w * c.sign()[:, None] > 0, 0.5 - p, p + 0.5)
    reachable = (w.abs() * room).sum(1) >= c.abs()
    assert not reachable[:2].all() and reachable[2:].all()
    assert torch.allclose((w * d).sum(1)[reachable], c[reachable], atol=1e-5)
    # where out of reach: as far toward the plane as the box allows
    assert torch.allclose(d[~reachable], (room * (w * c.sign()[:, None]).sign())[~reachable])
    # the smallest such step: an independent bisection on the step's scale t (d_i = min(t m_i, r_i) toward it)
    scale = w.abs() if norm == "l2" else torch.ones_like(w)
    lo, hi = torch.zeros(64), torch.full((64,), 1e3)
    for _ in range(200):
        mid = (lo + hi) / 2
        ok = (w.abs() * torch.minimum(mid[:, None] * scale, room)).sum(1) >= c.abs()
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    ref = torch.minimum(hi[:, None] * scale, room) * (w * c.sign()[:, None]).sign()
    assert torch.allclose(d[reachable], ref[reachable], atol=1e-5)


def test_fab_t_breaks_what_apgd_t_breaks_within_eps_with_smaller_perturbations(small_model, batch):
    from reabsnet.attacks import fab_t

    x, y = batch
    fab = fab_t(small_model, x, y, eps=0.1, steps=20, targets=3)
    targeted = apgd_t(small_model, x, y, eps=0.1, steps=20, targets=3)
    assert fab.success.any() and fab.success.float().mean() >= targeted.success.float().mean() - 2 / len(y)
    with torch.no_grad():
        assert torch.equal(fab.success, small_model(fab.x_adv).argmax(1) != y)
    assert (fab.linf <= 0.1 + 1e-6).all() and torch.equal(fab.x_adv[~fab.success], x[~fab.success])
    # a minimal-distance attack: its points sit inside the bound, where APGD's sit on it
    attacked = fab.success & (small_model(x).argmax(1) == y)
    assert fab.linf[attacked].median() < 0.9 * 0.1
    assert get_attack("fab-t") is fab_t
    with pytest.raises(SettingError, match="target"):
        fab_t(small_model, x, y, target=y)
    with pytest.raises(SettingError):
        fab_t(small_model, x, y, beta=1.0)
