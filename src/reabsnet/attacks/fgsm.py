"""Fast gradient sign method (Goodfellow, Shlens & Szegedy 2014)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from reabsnet.attacks.common import BOX, AttackResult, Box, check_inputs, finish, frozen, validated


@validated
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
         eps: float = 0.3, box: Box = BOX) -> AttackResult:
    """One step of size `eps` along the sign of the cross-entropy gradient (away from `y`, or toward `target`),
    clipped to the box. eps 0.3 is the usual MNIST setting on a range of width 1 (Madry et al. 2017)."""
    check_inputs(x, y, target, box)
    with frozen(model):
        x_var = x.detach().clone().requires_grad_(True)
        logits = model(x_var)
        if target is None:
            loss = F.cross_entropy(logits, y, reduction="sum")
            sign = 1.0
        else:
            loss = F.cross_entropy(logits, target, reduction="sum")
            sign = -1.0
        (grad,) = torch.autograd.grad(loss, x_var)
        x_adv = (x + sign * eps * grad.sign()).clamp(*box)
        return finish(model, x, x_adv, y, target, torch.ones(len(x), dtype=torch.long, device=x.device), box)
