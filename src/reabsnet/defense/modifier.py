"""The modifier (paper section 3.6): DeepFool against the guardian, moving flagged inputs until it calls them natural.

The paper's argument (eqs. 6-8): if the attacker moved x by at most eps1 and the revision moves x_adv by at most
eps2, the revised input is within eps1 + eps2 of the natural x, and DeepFool keeps eps2 close to the smallest
step that crosses the guardian's boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from reabsnet.attacks import BOX, deepfool_binary
from reabsnet.attacks.common import Box, frozen

NATURAL, ADVERSARIAL = 0, 1   # the guardian's two classes


@dataclass
class Revision:
    """Per example: the revised input, DeepFool iterations, L2 size of the revision, and whether the guardian
    calls the revised input natural."""

    x: torch.Tensor
    iterations: torch.Tensor
    l2: torch.Tensor
    natural: torch.Tensor


def revise(guardian: nn.Module, x: torch.Tensor, *, threshold: float = 0.5, overshoot: float = 0.02,
           max_iter: int = 50, box: Box = BOX, norm: str = "l2", extra_steps: int = 0) -> Revision:
    """Revise every input of `x` (the caller passes only the flagged ones) with the two-class DeepFool step toward
    the guardian's natural class until P(natural) >= threshold, inside the box, at most `max_iter` steps.

    norm: the DeepFool step's norm ("l2", the paper's; "linf", the smallest L-inf move, for L-inf attacks).
    extra_steps: k further steps past the boundary for the inputs that reached it, each as long (in `norm`) as
    the revision's mean DeepFool step, along the guardian's current (box-aware) gradient toward natural."""
    # deepfool_binary enables input gradients itself (attacks.common.frozen), even under a caller's no_grad
    x_new, iterations, natural = deepfool_binary(guardian, x, side=NATURAL, threshold=threshold,
                                                 overshoot=overshoot, max_iter=max_iter, box=box, norm=norm)
    if extra_steps:
        x_new = further(guardian, x, x_new, iterations, natural, extra_steps, norm, box)
        with torch.no_grad():
            natural = guardian(x_new).softmax(1)[:, NATURAL] >= threshold
    return Revision(x=x_new, iterations=iterations, l2=(x_new - x).flatten(1).norm(dim=1), natural=natural)


def further(guardian: nn.Module, x: torch.Tensor, x_new: torch.Tensor, iterations: torch.Tensor,
            natural: torch.Tensor, steps: int, norm: str, box: Box) -> torch.Tensor:
    """`steps` more moves of the revised inputs that moved and reached natural, deeper into the natural side."""
    idx = (natural & (iterations > 0)).nonzero().squeeze(1)
    if not len(idx):
        return x_new
    x_new = x_new.clone()
    view = (-1, *[1] * (x.dim() - 1))
    moved = (x_new[idx] - x[idx]).flatten(1)
    length = (moved.abs().amax(1) if norm == "linf" else moved.norm(dim=1)) / iterations[idx]
    xa = x_new[idx]
    with frozen(guardian):
        for _ in range(steps):
            xa = xa.detach().requires_grad_(True)
            logits = guardian(xa)
            (grad,) = torch.autograd.grad((logits[:, ADVERSARIAL] - logits[:, NATURAL]).sum(), xa)
            with torch.no_grad():
                xa = xa.detach()
                grad = grad.masked_fill(((xa <= box[0]) & (grad > 0)) | ((xa >= box[1]) & (grad < 0)), 0.0)
                unit = grad.sign() if norm == "linf" else grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
                xa = (xa - length.view(view) * unit).clamp(*box)
    x_new[idx] = xa.detach()
    return x_new


def unrolled_revision(guardian: nn.Module, x: torch.Tensor, *, threshold: float = 0.5, overshoot: float = 0.02,
                      max_iter: int = 50, box: Box = BOX) -> Revision:
    """`revise` (the paper's L2 step) with the autograd graph kept (create_graph), so that d revision / d x is
    exact: for an attacker who differentiates through the modifier instead of taking it as identity.

    The same box-aware two-class DeepFool steps as `deepfool_binary`, on the same shrinking batches (an example
    leaves once the guardian calls it natural or its steps run out), so the forward value is `revise`'s; one pass,
    where replaying a finished `revise` would run DeepFool twice. Each step's gradient keeps its graph, so the
    attacker's backward pass runs a double backward through the guardian per step."""
    bias = math.log(threshold / (1 - threshold))
    view = (-1, *[1] * (x.dim() - 1))
    r = torch.zeros_like(x)
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    natural = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    idx = torch.arange(len(x), device=x.device)
    for _ in range(max_iter + 1):
        xa = (x[idx] + (1 + overshoot) * r[idx]).clamp(*box)
        logits = guardian(xa)
        g = logits[:, ADVERSARIAL] - logits[:, NATURAL] + bias
        (grad,) = torch.autograd.grad(g.sum(), xa, create_graph=True)
        done = (g <= 0).detach()
        natural[idx] = done
        running = ~done & (iterations[idx] < max_iter)
        if not running.any():
            break
        keep = running.nonzero().squeeze(1)
        idx, g, grad, xa = idx[keep], g[keep], grad[keep], xa[keep]
        stuck = ((xa <= box[0]) & (grad > 0)) | ((xa >= box[1]) & (grad < 0))
        grad = grad.masked_fill(stuck.detach(), 0.0)
        scale = -(g.abs() + 1e-4) / grad.flatten(1).pow(2).sum(dim=1).clamp_min(1e-24)
        step = r[idx] + scale.view(view) * grad
        r = r.index_put((idx,), ((x[idx] + (1 + overshoot) * step).clamp(*box) - x[idx]) / (1 + overshoot))
        iterations[idx] += 1
    x_new = (x + (1 + overshoot) * r).clamp(*box)
    return Revision(x=x_new, iterations=iterations, l2=(x_new - x).detach().flatten(1).norm(dim=1), natural=natural)
