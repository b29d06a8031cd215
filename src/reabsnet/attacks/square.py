"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020): score-based, no gradients.

Random search over perturbations at the corners of the eps-ball: each step changes one random square window of
the current best perturbation and keeps the change only where the margin loss goes down. The window's area is a
fraction p of the image, p halved on a fixed schedule of the query count (p_init 0.8, auto-attack's standard
setting, over 5,000 queries). It needs only the model's logits, so it attacks anything, the whole ReabsNet
pipeline with its non-differentiable modifier included: the attack a defense that masks gradients cannot fool.

Batched: every example draws its own window and signs, and an example that breaks leaves the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from reabsnet.attacks.common import BOX, AttackResult, Box, check_inputs, confirmed, finish, lead, validated
from reabsnet.checks import SettingError

# (fraction of the query budget, by 10,000) after which p is halved again: the paper's schedule
_P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, query: int, queries: int) -> float:
    """The window's area fraction at `query`, the schedule rescaled to the budget (as auto-attack does)."""
    at = int(query / queries * 10000)
    return p_init / 2 ** sum(at > t for t in _P_SCHEDULE)


def _window(n: int, h: int, w: int, s: int, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each example's random s x s window: a boolean mask (n, 1, h, w) and its top-left corner (n, 2)."""
    corner = torch.stack([torch.randint(0, h - s + 1, (n,), generator=gen, device=device),
                          torch.randint(0, w - s + 1, (n,), generator=gen, device=device)], dim=1)
    rows = torch.arange(h, device=device)[None, :] - corner[:, :1]
    cols = torch.arange(w, device=device)[None, :] - corner[:, 1:]
    mask = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
    return mask[:, None], corner


def _pattern(s: int, device) -> torch.Tensor:
    """The L2 version's update pattern (the paper's eta): in each half of the s x s window, concentric rectangles
    weighted 1/(k+1)^2 around its centre, +1 in one half and -1 in the other, unit L2 norm."""
    def rectangles(a: int, b: int) -> torch.Tensor:
        out = torch.zeros(a, b, device=device)
        ca, cb = a // 2, b // 2
        for k in range(max(ca, cb) + 1):
            out[max(ca - k, 0):min(ca + k + 1, a), max(cb - k, 0):min(cb + k + 1, b)] += 1.0 / (k + 1) ** 2
        return out / out.norm()
    eta = torch.cat([rectangles(s // 2, s), -rectangles(s - s // 2, s)])
    return eta / eta.norm()


@validated
def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
           eps: float = 0.3, norm: str = "linf", queries: int = 5000, p_init: float = 0.8,
           reject: int | None = None, seed: int = 0, box: Box = BOX, margin: float = 0.0) -> AttackResult:
    """Square Attack inside the eps-ball (L-inf or L2) and the box, `queries` forward passes per example at most.

    Untargeted (or targeted with `target`); `reject` names a class that does not count as a success (JointLogits'
    "rejected", or a pipeline wrapper's). Defaults: auto-attack's standard version (p_init 0.8, 5,000 queries, the
    margin loss). An example stops costing queries once it is won by `margin` in logits (default: at the boundary).
    `iterations` in the result counts each example's queries.
    """
    check_inputs(x, y, target, box)
    if reject is not None and target is not None:
        raise SettingError("square: reject is for untargeted attacks")
    if not 0 < p_init <= 1:
        raise SettingError(f"square: p_init={p_init!r}: must be in (0, 1]")
    n, c, h, w = x.shape
    gen = torch.Generator(device=x.device).manual_seed(seed)
    view = (-1, 1, 1, 1)

    @torch.no_grad()
    def score(xa: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ys, ts = y[idx], None if target is None else target[idx]
        logits = model(xa)
        # the margin loss: positive while the attacker has not won ("rejected" counts as the defense's win)
        won = lead(logits, ys, ts, reject) >= margin
        return -lead(confirmed(model, xa, logits, won), ys, ts, reject)

    def sign(shape) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=gen, device=x.device).to(x.dtype) * 2 - 1

    was_training = model.training
    model.eval()
    try:
        if norm == "linf":   # start: vertical stripes at the ball's corners
            best = (x + eps * sign((n, c, 1, w))).clamp(*box)
        else:                # start: a grid of the pattern with random signs, scaled to norm eps
            s = max(h // 5, 1)
            delta = torch.zeros_like(x)
            off_h, off_w = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
            eta = _pattern(s, x.device)
            for i in range(h // s):
                for j in range(w // s):
                    top, left = off_h + i * s, off_w + j * s
                    delta[:, :, top:top + s, left:left + s] += eta * sign((n, c, 1, 1))
            best = (x + eps * delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)).clamp(*box)
        idx_all = torch.arange(n, device=x.device)
        best_margin = score(best, idx_all)
        used = torch.ones(n, dtype=torch.long, device=x.device)
        for q in range(1, queries):
            idx = (best_margin > -margin).nonzero().squeeze(1)
            if not len(idx):
                break
            xs, cur = x[idx], best[idx]
            p = p_schedule(p_init, q, queries)
            if norm == "linf":
                s = min(max(round(math.sqrt(p * h * w)), 1), min(h, w))
                mask, _ = _window(len(idx), h, w, s, gen, x.device)
                new = torch.where(mask, xs + eps * sign((len(idx), c, 1, 1)), cur).clamp(*box)
            else:
                new = _l2_step(xs, cur, eps, p, gen, sign, box)
            m = score(new, idx)
            better = m < best_margin[idx]
            best[idx[better]] = new[better]
            best_margin[idx[better]] = m[better]
            used[idx] += 1
    finally:
        model.train(was_training)
    result = finish(model, x, best, y, target, used, box, reject=reject)
    return result


def _l2_step(xs: torch.Tensor, cur: torch.Tensor, eps: float, p: float, gen: torch.Generator, sign,
             box: Box) -> torch.Tensor:
    """One L2 proposal per example: a new pattern in window 1 (added to its old content, renormalised), window 2
    emptied, the mass freed moved into window 1, and the whole perturbation rescaled to norm eps."""
    n, c, h, w = xs.shape
    view = (-1, 1, 1, 1)
    s = min(max(round(math.sqrt(p * h * w)), 3), min(h, w))
    s += s % 2 == 0 and s < min(h, w)        # odd, so the pattern has a centre
    delta = cur - xs
    mask1, corner = _window(n, h, w, s, gen, xs.device)
    mask2, _ = _window(n, h, w, s, gen, xs.device)
    both = mask1 | mask2
    total = delta.flatten(1).norm(dim=1)
    in_windows = (delta * both).flatten(1).norm(dim=1)
    # window 1's content, as an (n, c, s, s) block
    r = corner[:, 0, None] + torch.arange(s, device=xs.device)[None]
    k = corner[:, 1, None] + torch.arange(s, device=xs.device)[None]
    ar = torch.arange(n, device=xs.device)[:, None, None, None]
    ch = torch.arange(c, device=xs.device)[None, :, None, None]
    rows, cols = r[:, None, :, None], k[:, None, None, :]
    old = delta[ar, ch, rows, cols]
    old = old / old.flatten(2).norm(dim=2).clamp_min(1e-12)[:, :, None, None]
    eta = _pattern(s, xs.device)
    flip = torch.randint(0, 2, (n,), generator=gen, device=xs.device).bool()
    pattern = torch.where(flip.view(view), eta.t(), eta)
    new = pattern * sign((n, c, 1, 1)) + old
    # the window takes the mass of both windows plus what the ball still allows
    room = ((eps ** 2 - total ** 2).clamp_min(0) / c + in_windows ** 2).sqrt()
    new = new / new.flatten(2).norm(dim=2).clamp_min(1e-12)[:, :, None, None] * room.view(-1, 1, 1, 1)
    delta = delta.masked_fill(mask2, 0.0)
    delta[ar, ch, rows, cols] = new
    delta = eps * delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
    return (xs + delta).clamp(*box)
