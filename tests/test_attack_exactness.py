"""Exact checks on toy models that a weaker attack cannot pass: each pins one behaviour the default suite used to
let slip (a step size never halved, DeepFool without its overshoot, a targeted step away from its target) or a
metric against its definition."""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.attacks import apgd, deepfool, fgsm
from reabsnet.evaluation.stats import roc_auc


class Linear(nn.Module):
    """logits = x.flatten() @ W.T + b: every boundary is a hyperplane, so distances have closed forms."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.t() + self.bias


class Bowl(nn.Module):
    """Two classes; class 1's logit peaks at x = centre (inside the eps-ball) and never reaches class 0's, so an
    untargeted attack can only maximise its loss, whose maximiser is that interior point."""

    def __init__(self, centre: torch.Tensor):
        super().__init__()
        self.centre = nn.Parameter(centre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = ((x - self.centre) ** 2).flatten(1).sum(1)
        return torch.stack([torch.full_like(d, 10.0), 5.0 - 20.0 * d], dim=1)


def test_deepfool_on_a_linear_model_lands_at_one_plus_overshoot_times_the_minimal_distance():
    gen = torch.Generator().manual_seed(0)
    model = Linear(torch.randn(4, 16, generator=gen), torch.zeros(4)).eval()
    x = 0.05 * torch.randn(32, 1, 4, 4, generator=gen)          # well inside the box: no clipping
    y = model(x).argmax(1)
    w, f = model.weight.detach(), model(x).detach()
    # the exact distance to the nearest other class's hyperplane, and deepfool.py's push of 1e-4 past it
    # (r_i = (pert + 1e-4) * w / ||w||)
    diff_w = w[None, :, :] - w[y][:, None, :]                    # (n, classes, D)
    margin = f.gather(1, y[:, None]) - f                          # (n, classes)
    dist = margin / diff_w.norm(dim=2).clamp_min(1e-12)
    dist.scatter_(1, y[:, None], float("inf"))
    best = dist.argmin(1)
    pick = torch.arange(len(x))
    exact = dist[pick, best] + 1e-4
    for overshoot in (None, 0.0, 0.5):      # None: the default, the paper's 0.02
        r = deepfool(model, x, y) if overshoot is None else deepfool(model, x, y, overshoot=overshoot)
        overshoot = 0.02 if overshoot is None else overshoot
        assert r.success.all() and (r.iterations == 1).all()
        assert torch.allclose(r.l2, (1 + overshoot) * exact, rtol=1e-4), (overshoot, (r.l2 / exact).tolist())


def test_a_targeted_fgsm_step_raises_the_target_above_where_it_was():
    gen = torch.Generator().manual_seed(1)
    model = Linear(torch.randn(10, 64, generator=gen), torch.zeros(10)).eval()
    x = 0.1 * torch.randn(50, 1, 8, 8, generator=gen)
    y = model(x).argmax(1)
    target = (y + 1 + torch.randint(0, 9, (50,), generator=gen)) % 10
    r = fgsm(model, x, y, target=target, eps=0.05)
    before = torch.log_softmax(model(x), 1).gather(1, target[:, None])
    after = torch.log_softmax(model(r.x_adv), 1).gather(1, target[:, None])
    assert (after > before).all()
    untargeted = fgsm(model, x, y, eps=0.05)              # and the untargeted step lowers the label's
    assert (torch.log_softmax(model(untargeted.x_adv), 1).gather(1, y[:, None]) <
            torch.log_softmax(model(x), 1).gather(1, y[:, None])).all()


def test_apgd_halves_its_step_where_the_loss_stalls_and_settles_on_an_interior_maximum():
    # the loss peaks inside the ball at `centre`; with its first step of 2 eps APGD overshoots and bounces off the
    # ball's faces, so it gets close only if it halves the step at its checkpoints (auto-attack: 100 steps leave
    # room for about eight halvings, down to 2 eps / 256)
    centre = torch.tensor([[0.12, -0.07, 0.2, -0.15, 0.05, 0.1]]).view(1, 1, 2, 3)
    model = Bowl(centre).eval()
    x = torch.zeros(4, 1, 2, 3)
    y = torch.zeros(4, dtype=torch.long)
    r = apgd(model, x, y, eps=0.3, loss="ce", steps=100)
    assert not r.success.any()
    assert (r.x_adv - centre).abs().max() < 0.01, (r.x_adv - centre).abs().max()


def test_detection_numbers_without_adversarial_examples_are_none_and_read_as_a_dash():
    """An attack that made no adversarial example has no ROC: None (strict JSON has no NaN), and "-" in the report
    (also for NaN in results written before)."""
    import json

    from reabsnet.evaluation.stats import detection_at_fpr
    from reabsnet.rates import fmt as _fmt

    natural, none = torch.rand(20), torch.zeros(0)
    undefined = {"roc_auc": roc_auc(natural, none), "at_1": detection_at_fpr(natural, none, 0.01)}
    assert undefined == {"roc_auc": None, "at_1": None}
    assert json.loads(json.dumps(undefined, allow_nan=False)) == undefined
    assert [_fmt(v) for v in (None, float("nan"), 0.5)] == ["-", "-", "0.500"]


def test_roc_auc_equals_the_pairwise_count_with_ties_half():
    gen = torch.Generator().manual_seed(2)
    for n_neg, n_pos in ((50, 30), (7, 200), (1, 1)):
        neg = torch.randint(0, 20, (n_neg,), generator=gen).float() / 20
        pos = torch.randint(5, 25, (n_pos,), generator=gen).float() / 20
        wins = (pos[:, None] > neg[None, :]).double().sum() + 0.5 * (pos[:, None] == neg[None, :]).double().sum()
        assert abs(roc_auc(neg, pos) - float(wins / (n_neg * n_pos))) < 1e-12


def test_the_modifier_revises_flagged_inputs_until_the_guardian_says_natural_at_revise_to():
    from reabsnet.defense import ReabsNet

    gen = torch.Generator().manual_seed(3)
    master = Linear(torch.randn(10, 16, generator=gen), torch.zeros(10)).eval()
    guardian = Linear(torch.randn(2, 16, generator=gen), torch.zeros(2)).eval()     # class 1: adversarial
    x = 0.1 * torch.randn(64, 1, 4, 4, generator=gen)
    for revise_to in (0.5, 0.9, 0.99):
        pred = ReabsNet(master, guardian, threshold=0.5, revise_to=revise_to).eval().predict(x)
        assert pred.flagged.sum() >= 10 and pred.natural_after[pred.flagged].all()
        p_natural = torch.softmax(guardian(pred.x[pred.flagged]), 1)[:, 0]
        # DeepFool's overshoot carries each revision a little past the revise_to boundary, never short of it
        assert (p_natural >= revise_to).all() and (p_natural < revise_to + 0.5 * (1 - revise_to)).all(), revise_to
        assert torch.equal(pred.x[~pred.flagged], x[~pred.flagged])      # natural-looking inputs pass untouched
