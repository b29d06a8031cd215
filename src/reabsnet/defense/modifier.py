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
from reabsnet.attacks.common import Box

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
           max_iter: int = 50, box: Box = BOX) -> Revision:
    """Revise every input of `x` (the caller passes only the flagged ones) with the two-class DeepFool step toward
    the guardian's natural class until P(natural) >= threshold, inside the box, at most `max_iter` steps."""
    # deepfool_binary enables input gradients itself (attacks.common.frozen), even under a caller's no_grad
    x_new, iterations, natural = deepfool_binary(guardian, x, side=NATURAL, threshold=threshold,
                                                 overshoot=overshoot, max_iter=max_iter, box=box)
    return Revision(x=x_new, iterations=iterations, l2=(x_new - x).flatten(1).norm(dim=1), natural=natural)


def unrolled_revision(guardian: nn.Module, x: torch.Tensor, iterations: torch.Tensor, *, threshold: float = 0.5,
                      overshoot: float = 0.02, box: Box = BOX) -> torch.Tensor:
    """The modifier's revision of `x` replayed step by step with the autograd graph kept (create_graph), so that
    d revision / d x is exact: each example takes the box-aware two-class DeepFool steps `revise` took for it
    (`iterations`). For an attacker who differentiates through the modifier instead of taking it as identity.
    About three times the cost of `revise` (a double backward through the guardian per step)."""
    bias = math.log(threshold / (1 - threshold))
    view = (-1, *[1] * (x.dim() - 1))
    r = torch.zeros_like(x)
    for i in range(int(iterations.max()) if len(iterations) else 0):
        xa = (x + (1 + overshoot) * r).clamp(*box)
        logits = guardian(xa)
        g = logits[:, ADVERSARIAL] - logits[:, NATURAL] + bias
        (grad,) = torch.autograd.grad(g.sum(), xa, create_graph=True)
        stuck = ((xa <= box[0]) & (grad > 0)) | ((xa >= box[1]) & (grad < 0))
        grad = grad.masked_fill(stuck.detach(), 0.0)
        scale = -(g.abs() + 1e-4) / grad.flatten(1).pow(2).sum(dim=1).clamp_min(1e-24)
        active = (iterations > i).to(x.dtype)
        r = r + (active * scale).view(view) * grad
        r = ((x + (1 + overshoot) * r).clamp(*box) - x) / (1 + overshoot)
    return (x + (1 + overshoot) * r).clamp(*box)
