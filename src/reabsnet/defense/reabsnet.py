"""ReabsNet (paper Figure 1): guardian -> (modifier where flagged) -> master, as one `nn.Module`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from reabsnet.attacks import BOX
from reabsnet.attacks.common import Box
from reabsnet.checks import check_settings
from reabsnet.defense.modifier import ADVERSARIAL, revise, unrolled_revision


@dataclass
class Prediction:
    """Per example: master logits on the (revised) input, the guardian's P(adversarial) and flag, the input the
    master saw, and the modifier's record (zeros where the input was not flagged)."""

    logits: torch.Tensor
    p_adversarial: torch.Tensor
    flagged: torch.Tensor
    x: torch.Tensor
    iterations: torch.Tensor
    revision_l2: torch.Tensor
    natural_after: torch.Tensor

    @property
    def label(self) -> torch.Tensor:
        return self.logits.argmax(1)


class ReabsNet(nn.Module):
    """Any master classifier guarded by any two-class guardian (class 0 natural, class 1 adversarial).

    forward(x) returns the master's logits on x where the guardian calls x natural (P(adversarial) <= threshold)
    and on the modifier's revision of x where it does not, so the module drops into any evaluation code. The
    modifier revises until P(natural) >= revise_to (default: the threshold itself, the paper's rule: just across
    the guardian's boundary); `norm` and `extra_steps` pick the modifier's step (see `defense.modifier.revise`).
    Gradients flow to x through the master and, with backward="identity", straight through the revision (the
    revision counts as identity on the backward pass, the BPDA approximation of Athalye et al. 2018); with
    backward="unrolled", through the modifier's DeepFool steps taken with their graph (exact; a double backward
    through the guardian per step; the forward value the same as identity's). `predict` returns the full record.
    """

    def __init__(self, master: nn.Module, guardian: nn.Module, *, threshold: float = 0.5,
                 revise_to: float | None = None, overshoot: float = 0.02, max_iter: int = 50, box: Box = BOX,
                 backward: str = "identity", norm: str = "l2", extra_steps: int = 0):
        super().__init__()
        if backward not in ("identity", "unrolled"):
            raise ValueError(f"backward must be 'identity' or 'unrolled', not {backward!r}")
        if backward == "unrolled" and (norm != "l2" or extra_steps):
            raise ValueError("backward='unrolled' unrolls the paper's modifier only (norm 'l2', no extra steps)")
        self.backward = backward
        revise_to = threshold if revise_to is None else revise_to
        check_settings({"threshold": threshold, "revise_to": revise_to, "overshoot": overshoot,
                        "max_iter": max_iter, "norm": norm, "extra_steps": extra_steps}, "ReabsNet: ")
        self.norm, self.extra_steps = norm, extra_steps
        self.master, self.guardian = master, guardian
        self.threshold, self.revise_to, self.overshoot, self.max_iter, self.box = (threshold, revise_to, overshoot,
                                                                                   max_iter, box)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(x).logits

    def predict(self, x: torch.Tensor) -> Prediction:
        with torch.no_grad():
            p_adv = self.guardian(x).softmax(1)[:, ADVERSARIAL]
        flagged = p_adv > self.threshold
        x_seen = x
        n = len(x)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        l2 = torch.zeros(n, device=x.device)
        natural = ~flagged
        idx = flagged.nonzero().squeeze(1)
        if len(idx):
            if self.backward == "unrolled" and x.requires_grad and torch.is_grad_enabled():
                rev = unrolled_revision(self.guardian, x[idx], threshold=self.revise_to, overshoot=self.overshoot,
                                        max_iter=self.max_iter, box=self.box)
                x_seen = x.index_put((idx,), rev.x)
            else:
                rev = revise(self.guardian, x[idx].detach(), threshold=self.revise_to, overshoot=self.overshoot,
                             max_iter=self.max_iter, box=self.box, norm=self.norm, extra_steps=self.extra_steps)
                delta = torch.zeros_like(x)
                delta[idx] = rev.x - x[idx].detach()
                x_seen = x + delta          # straight-through: d x_seen / d x = identity
            iterations[idx], l2[idx], natural[idx] = rev.iterations, rev.l2, rev.natural
        return Prediction(logits=self.master(x_seen), p_adversarial=p_adv, flagged=flagged, x=x_seen.detach(),
                          iterations=iterations, revision_l2=l2, natural_after=natural)

    @torch.no_grad()
    def predict_batches(self, x: torch.Tensor, batch_size: int = 1000) -> Prediction:
        """`predict` over a large tensor in batches on the master's device; the record comes back on the CPU."""
        device = next(self.master.parameters()).device
        parts = []
        for i in range(0, len(x), batch_size):
            p = self.predict(x[i:i + batch_size].to(device))
            parts.append(Prediction(**{k: v.cpu() for k, v in vars(p).items()}))
        return Prediction(**{k: torch.cat([getattr(p, k) for p in parts]) for k in vars(parts[0])})
