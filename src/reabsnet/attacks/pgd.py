"""Projected gradient descent (Madry et al. 2017), L-infinity and L2, with random starts and restarts."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from reabsnet.attacks.common import (
    BOX,
    AttackResult,
    Box,
    check_inputs,
    finish,
    frozen,
    is_adversarial,
    margin,
    validated,
)
from reabsnet.checks import SettingError


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (delta.dim() - 1))
    return delta * (eps / n).clamp(max=1.0)


def _direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent step of unit size in `norm`: the gradient's sign (L-inf) or the normalised gradient."""
    if norm == "linf":
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    if norm == "linf":
        return (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * eps
    # uniform in the L2 ball: a random direction times eps * u^(1/d)
    d = x[0].numel()
    direction = torch.randn(x.shape, generator=gen, device=x.device)
    direction = direction / direction.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
    radius = torch.rand(len(x), generator=gen, device=x.device) ** (1.0 / d) * eps
    return direction * radius.view(-1, *[1] * (x.dim() - 1))


@validated
def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
        eps: float = 0.3, step_size: float = 0.01, steps: int = 40, norm: str = "linf", random_start: bool = True,
        restarts: int = 1, loss: str = "ce", early_stop: bool = True, seed: int = 0, box: Box = BOX
        ) -> AttackResult:
    """Iterated signed (L-inf) or normalised (L2) gradient steps on the loss, projected onto the eps-ball and the
    box. Defaults: Madry et al.'s MNIST challenge config.json (eps 0.3, step 0.01, 40 steps, random start).

    loss: "ce" (cross-entropy, Madry) or "margin" (Carlini & Wagner's logit margin, robust to saturated softmax).
    restarts: each restart runs only on the examples no earlier restart has fooled; per example the first
    adversarial result is kept, else the one of the last restart.
    early_stop: every 5 steps, examples already adversarial are set aside and stop costing compute (Madry's
    code runs all 40 steps on every example; the success rate is the same, the found points are closer).
    """
    check_inputs(x, y, target, box)
    if loss not in ("ce", "margin"):   # norm and the numbers: checked by @validated
        raise SettingError(f"pgd: loss={loss!r}: must be ce or margin")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    best = x.clone()
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    todo = torch.arange(len(x), device=x.device)
    with frozen(model):
        for _ in range(max(1, restarts)):
            run = todo                       # examples this restart still works on
            xs, ys = x[run], y[run]
            ts = target[run] if target is not None else None
            delta = _random_start(xs, eps, norm, gen) if random_start else torch.zeros_like(xs)
            delta = (xs + delta).clamp(*box) - xs
            for step in range(steps):
                delta.requires_grad_(True)
                logits = model(xs + delta)
                if loss == "ce":
                    value = F.cross_entropy(logits, ts if ts is not None else ys, reduction="sum")
                    value = -value if ts is not None else value
                else:
                    value = -margin(logits, ys, ts).sum()
                (grad,) = torch.autograd.grad(value, delta)
                with torch.no_grad():
                    delta = delta.detach()
                    if early_stop and step and step % 5 == 0:   # one host sync per 5 steps
                        hit = is_adversarial(logits.argmax(1), ys, ts)
                        if hit.any():
                            best[run[hit]] = xs[hit] + delta[hit]
                            iterations[run[hit]] += step
                            keep = ~hit
                            run, xs, ys, delta, grad = run[keep], xs[keep], ys[keep], delta[keep], grad[keep]
                            ts = ts[keep] if ts is not None else None
                            if len(run) == 0:
                                break
                    delta = delta + step_size * _direction(grad, norm)
                    delta = _project(delta, eps, norm)
                    delta = (xs + delta).clamp(*box) - xs
            else:
                iterations[run] += steps
            if len(run):
                best[run] = (xs + delta).detach()
            result = finish(model, x[todo], best[todo], y[todo], target[todo] if target is not None else None,
                            iterations[todo], box)
            todo = todo[~result.success]
            if len(todo) == 0:
                break
        return finish(model, x, best, y, target, iterations, box)
