"""FAB-T (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary attack"), the
targeted version that auto-attack's standard ensemble runs third. Defaults are auto-attack's (fab_base.py): 100
iterations, alpha_max 0.1, eta 1.05, beta 0.9, the 9 classes ranked highest after the label, one run each
without a random start.

Each iteration linearises the boundary between the label y and the target t at the current point x_k,
    g(z) = Z_y(z) - Z_t(z) ~ g(x_k) + grad g(x_k) . (z - x_k) = 0,
projects both x_k and the original x_0 onto that hyperplane within the box (the smallest L-inf or L2 step that
reaches it, `boundary_step`), and moves to a convex mix of the two projections, overshot by eta:
    x_{k+1} = clip((1 - a) (x_k + eta d_k) + a (x_0 + eta d_0)),  a = min(|d_k| / (|d_k| + |d_0|), alpha_max),
so the iterate is pulled toward x_0 while it follows the boundary. Once x_k is adversarial (any label other than
y, as auto-attack judges), the smallest such point is kept and x_k steps back toward x_0 (x_0 + beta (x_k - x_0)).
The attack minimises the distance; for a robust accuracy at `eps` an example counts as broken when its smallest
adversarial point lies within eps, and then it leaves the batch.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.attacks.adaptive import top_targets
from reabsnet.attacks.common import (
    BOX,
    AttackResult,
    Box,
    check_inputs,
    confirmed_fooled,
    finish,
    frozen,
    is_adversarial,
    validated,
)
from reabsnet.checks import SettingError


def boundary_step(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor, box: Box, norm: str) -> torch.Tensor:
    """Per row, the smallest step d (in L-inf or L2) with w . d = c and p + d inside the box; where no step in the
    box reaches the hyperplane, the step that gets closest (each coordinate as far as the box allows).

    With s = sign(c w_i) and r_i the room the box leaves in that direction, the optimal step is d_i = s r_i-capped:
    L-inf: d_i = s min(t, r_i), L2: d_i = s min(t |w_i|, r_i), for the smallest t >= 0 at which
    h(t) = sum_i |w_i| |d_i| reaches |c|. h is piecewise linear and increasing in t with breakpoints where
    coordinates saturate, so sorting the breakpoints gives t exactly (O(d log d) per row, no iteration)."""
    p, w = p.flatten(1), w.flatten(1)
    flip = torch.where(c < 0, -1.0, 1.0)
    c, w = c.abs(), w * flip[:, None]
    a = w.abs()
    room = torch.where(w > 0, box[1] - p, p - box[0]).clamp_min(0)
    if norm == "linf":
        knee, slope = room, a                        # coordinate i saturates at t = r_i; below that it adds |w_i| t
    else:
        knee, slope = room / a.clamp_min(1e-30), a * a   # ... at t = r_i / |w_i|; below that it adds w_i^2 t
    knee = torch.where(a > 0, knee, torch.zeros_like(knee))
    order = knee.argsort(dim=1)
    knee_s, slope_s, full_s = knee.gather(1, order), slope.gather(1, order), (a * room).gather(1, order)
    saturated = full_s.cumsum(1)                     # sum of |w_i| r_i over the coordinates saturated at knee_(k)
    free = slope_s.sum(1, keepdim=True) - slope_s.cumsum(1)
    reach = saturated + knee_s * free                # h at each breakpoint (nondecreasing)
    k = (reach < c[:, None]).sum(1)                  # breakpoints before h reaches c
    feasible = k < p.shape[1]
    kk = (k - 1).clamp_min(0)
    before = torch.where(k > 0, saturated.gather(1, kk[:, None]).squeeze(1), torch.zeros_like(c))
    rest = torch.where(k > 0, free.gather(1, kk[:, None]).squeeze(1), slope_s.sum(1))
    t = (c - before) / rest.clamp_min(1e-30)
    scale = a if norm == "l2" else torch.ones_like(a)
    step = torch.where(feasible[:, None], torch.minimum(t[:, None] * scale, room), room)
    return step * torch.sign(w)


def _norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    flat = d.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@validated
def fab_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
          eps: float = 0.3, norm: str = "linf", steps: int = 100, targets: int = 9, alpha_max: float = 0.1,
          eta: float = 1.05, beta: float = 0.9, reject: int | None = None, box: Box = BOX) -> AttackResult:
    """FAB-T toward each of the `targets` classes the model ranks highest on the clean input after the correct ones
    (y, `reject`), one run per target class on the examples no earlier run has broken within `eps`. Success is
    untargeted, as in auto-attack: a label other than y (and `reject`) within eps. The returned point is the
    smallest adversarial one found if it lies within eps, else the clean input. `iterations` counts the steps."""
    check_inputs(x, y, target, box)
    if target is not None:
        raise SettingError("fab_t picks its own target classes (the top ones); pass no target")
    if not 0 < alpha_max <= 1 or not 0 < beta < 1 or eta < 1:
        raise SettingError(f"fab_t: need 0 < alpha_max <= 1, 0 < beta < 1, eta >= 1 (got {alpha_max}, {beta}, {eta})")
    view = (-1, *[1] * (x.dim() - 1))
    logits, ranked, targets = top_targets(model, x, y, reject, targets)
    best = x.clone()
    # an input the model already gets wrong is adversarial at distance 0: it is not attacked
    best_norm = torch.where(is_adversarial(logits.argmax(1), y, None, reject), 0.0, float("inf"))
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    with frozen(model):
        for rank in range(targets):
            idx = (best_norm > eps).nonzero().squeeze(1)
            x0, ys, goal = x[idx], y[idx], ranked[idx, rank]
            xk = x0.clone()
            for _ in range(steps):
                if not len(idx):
                    break
                xv = xk.detach().requires_grad_(True)
                z = model(xv)
                g = z.gather(1, ys[:, None]).squeeze(1) - z.gather(1, goal[:, None]).squeeze(1)
                (grad,) = torch.autograd.grad(g.sum(), xv)
                with torch.no_grad():
                    # the hyperplane grad . z = grad . x_k - g(x_k); the step from p reaches it where
                    # grad . d = grad . x_k - g - grad . p
                    plane = (grad * xk).flatten(1).sum(1) - g
                    both = torch.cat([xk, x0])
                    w2 = torch.cat([grad, grad])
                    d = boundary_step(both, w2, torch.cat([plane, plane]) - (w2 * both).flatten(1).sum(1), box,
                                      norm).view_as(both)
                    d_k, d_0 = d[:len(idx)], d[len(idx):]
                    n_k, n_0 = _norm(d_k, norm).clamp_min(1e-8), _norm(d_0, norm).clamp_min(1e-8)
                    alpha = (n_k / (n_k + n_0)).clamp(0, alpha_max).view(view)
                    xk = ((1 - alpha) * (xk + eta * d_k) + alpha * (x0 + eta * d_0)).clamp(*box)
                    z = model(xk)
                    iterations[idx] += 1
                    fooled = confirmed_fooled(model, xk, z, ys, reject)
                    dist = _norm(xk - x0, norm)
                    better = fooled & (dist < best_norm[idx])
                    best[idx[better]] = xk[better]
                    best_norm[idx[better]] = dist[better]
                    xk = torch.where(fooled.view(view), x0 + beta * (xk - x0), xk)
                    # an example broken within eps is done: it leaves the batch
                    keep = best_norm[idx] > eps
                    if not keep.all():
                        idx, x0, ys, goal, xk = idx[keep], x0[keep], ys[keep], goal[keep], xk[keep]
        # auto-attack's rule: only a point within eps counts (and is returned); farther ones count as no success
        best = torch.where((best_norm <= eps).view(view), best, x)
        return finish(model, x, best, y, None, iterations, box, reject=reject)
