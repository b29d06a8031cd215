"""Selective and Orthogonal PGD (Bryniarski, Hingun, Pachuca, Wang and Carlini, "Evading adversarial example
detection defenses with Orthogonal Projected Gradient Descent", ICLR 2022): attacks on a classifier guarded by a
detector that treat "misclassified" and "not detected" as two constraints instead of one weighted sum.

Each step follows one objective: the classifier's cross-entropy while the input is not yet misclassified with a
margin (its true logit raised by `margin` still loses), else the detector's score while the input is flagged.
Selective PGD takes that objective's gradient as it is; Orthogonal PGD first removes from it its component along
the other objective's gradient, so that a step on one does not undo the other. Steps are signed (L-inf) or
normalised (L2), of `step_fraction` times eps, projected onto the eps-ball and the box. Per example the attack keeps the
successful iterate (misclassified and unflagged) with the lowest detector score; an example leaves the batch once
it is successful with a score at least `leave_margin` below the threshold (default: as soon as it is
successful).

The details follow the authors' code (v-wangg/OrthogonalPGD, attack.py): the margin of 0.05 on the logits, the
lowest-score successful iterate, step size 1/255 at eps 8/255 (here eps / 8), no random start. Where it projects
the L2 attack onto an L-inf box, this one projects onto the L2 ball.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.attacks.adaptive import JointLogits
from reabsnet.attacks.common import BOX, AttackResult, Box, check_inputs, finish, frozen, validated
from reabsnet.attacks.pgd import _direction, _project


def _without(g: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """g less its component along `other`, per example (the orthogonal projection of OPGD)."""
    a, b = g.flatten(1), other.flatten(1)
    coef = (a * b).sum(1) / (b * b).sum(1).clamp_min(1e-20)
    rest = a - coef[:, None] * b
    # what cancels exactly leaves rounding residue, which a signed (L-inf) step would turn into whole steps
    rest = rest.masked_fill(rest.abs() <= 1e-6 * a.abs().amax(1, keepdim=True), 0.0)
    return rest.view_as(g)


@validated
def orthogonal_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
                   eps: float = 0.3, norm: str = "linf", steps: int = 100, step_fraction: float = 0.125,
                   orthogonal: bool = True, margin: float = 0.05, leave_margin: float = 0.0,
                   reject: int | None = None, box: Box = BOX) -> AttackResult:
    """Orthogonal PGD (`orthogonal` True) or Selective PGD (False) on `model`, a `JointLogits(classifier,
    detector, threshold, scale)`: the classifier's logits times `scale` give its cross-entropy, the detector's
    log-odds of "adversarial" minus the threshold's its score (flagged when positive). Success: the classifier's
    label is wrong (targeted: the target) and the detector does not flag, judged by `finish` on `model` with
    `reject` its "rejected" class (index = the classifier's number of classes)."""
    if not isinstance(model, JointLogits):
        raise ValueError("orthogonal_pgd attacks a JointLogits(classifier, detector, threshold): it needs the two "
                         "objectives apart")
    check_inputs(x, y, target, box)
    alpha = step_fraction * eps
    sign = -1.0 if target is not None else 1.0          # targeted: descend the target's cross-entropy
    goal = target if target is not None else y
    view = (-1, *[1] * (x.dim() - 1))
    with frozen(model):
        best = x.clone().detach()
        best_score = torch.full((len(x),), float("inf"), device=x.device)
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
        cur = x.clone().detach()
        idx = torch.arange(len(x), device=x.device)
        for k in range(steps + 1):
            xa = cur[idx].detach().requires_grad_(True)
            z = model.master(xa) * model.master_scale
            score = model.detector_score(xa)
            with torch.no_grad():
                label = z.argmax(1)
                wrong = label == goal[idx] if target is not None else label != y[idx]
                success = wrong & (score <= 0)
                better = success & (score < best_score[idx])
                best[idx[better]] = xa.detach()[better]
                best_score[idx[better]] = score.detach()[better]
                iterations[idx[success & ~found[idx]]] = k
                found[idx[success]] = True
                leave = success & (score <= -leave_margin)
            if k == steps:
                break
            ce = nn.functional.cross_entropy(z, goal[idx], reduction="sum")
            (g_class,) = torch.autograd.grad(sign * ce, xa, retain_graph=False)
            (g_score,) = torch.autograd.grad(-score.sum(), xa)       # the direction that lowers the score
            with torch.no_grad():
                # misclassified with a margin: the true logit raised by `margin` still loses (targeted: the target
                # wins by `margin`)
                raised = z.detach().clone()
                rows = torch.arange(len(idx), device=x.device)
                if target is not None:
                    raised[rows, goal[idx]] -= margin
                    past = raised.argmax(1) == goal[idx]
                else:
                    raised[rows, y[idx]] += margin
                    past = raised.argmax(1) != y[idx]
                if orthogonal:
                    g_class, g_score = _without(g_class, g_score), _without(g_score, g_class)
                step = torch.where(past.view(view), g_score, g_class)
                moved = xa.detach() + alpha * _direction(step, norm)
                cur[idx] = (x[idx] + _project(moved - x[idx], eps, norm)).clamp(*box)
                iterations[idx[~found[idx]]] = k + 1
                idx = idx[~leave]
            if len(idx) == 0:
                break
        x_adv = torch.where(found.view(view), best, cur)
        return finish(model, x, x_adv, y, target, iterations, box, reject=reject)


@validated
def selective_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
                  eps: float = 0.3, norm: str = "linf", steps: int = 100, step_fraction: float = 0.125,
                  margin: float = 0.05, leave_margin: float = 0.0, reject: int | None = None,
                  box: Box = BOX) -> AttackResult:
    """Selective PGD: `orthogonal_pgd` without the projections."""
    return orthogonal_pgd(model, x, y, target=target, eps=eps, norm=norm, steps=steps, step_fraction=step_fraction,
                          orthogonal=False, margin=margin, leave_margin=leave_margin, reject=reject, box=box)
