"""Logit matching (Tramer, Carlini, Brendel and Madry, "On adaptive attacks to adversarial example defenses",
NeurIPS 2020, the attack on "The Odds are Odd"): instead of pushing a detector's score down and a classifier's label
away, make the input's outputs those of a natural input of another class. A detector that judges an input by what
the networks output cannot tell two inputs apart whose outputs are the same.

Here the outputs are the joint model's: the classifier's logits (times `master_scale`) and the detector's two
logits. For each input the guide is a natural image from `guides` that the joint model classifies, unflagged, as
another class (targeted: as the target), the nearest in L2 first. Signed (L-inf) or normalised (L2) steps descend
the squared distance between the two output vectors, from the input itself (no random start); the step decays
linearly from `step_fraction` times eps, and each iterate is projected onto the eps-ball and the box. Each of
`candidates` guides is tried in turn on the inputs no earlier guide turned; an input leaves the batch at its first
successful iterate (misclassified and unflagged), which is what it returns.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.attacks.adaptive import JointLogits
from reabsnet.attacks.common import BOX, AttackResult, Box, check_inputs, finish, frozen, is_adversarial, validated, won
from reabsnet.attacks.pgd import _direction, _project


def _outputs(model: JointLogits, x: torch.Tensor) -> torch.Tensor:
    """What the attack matches: the classifier's scaled logits beside the detector's two logits."""
    return torch.cat(model.outputs(x), dim=1)


@torch.no_grad()
def _guide_order(model: JointLogits, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 guides: torch.Tensor, reject: int | None, candidates: int) -> torch.Tensor:
    """Per input, the indices of up to `candidates` usable guides, nearest in L2 first (-1 where none is left)."""
    label = torch.cat([model(guides[i:i + 1000]).argmax(1) for i in range(0, len(guides), 1000)])
    usable = label != reject if reject is not None else torch.ones_like(label, dtype=torch.bool)
    want = target if target is not None else y
    ok = usable[None, :] & ((label[None, :] == want[:, None]) if target is not None
                            else (label[None, :] != want[:, None]))
    dist = torch.cdist(x.flatten(1), guides.flatten(1)).masked_fill(~ok, float("inf"))
    k = min(candidates, len(guides))
    d, idx = dist.topk(k, dim=1, largest=False)
    return idx.masked_fill(d.isinf(), -1)


@validated
def logit_matching(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, guides: torch.Tensor | None = None,
                   target: torch.Tensor | None = None, eps: float = 0.3, norm: str = "linf", steps: int = 100,
                   step_fraction: float = 0.25, candidates: int = 3, reject: int | None = None,
                   box: Box = BOX, margin: float = 0.0) -> AttackResult:
    """Logit matching on `model`, a `JointLogits(classifier, detector, threshold, scale)`, toward natural images
    drawn from `guides` (inputs in the box, e.g. validation images; default: the model's `guides` attribute, which
    the adaptive suite sets). Success is judged by `finish` on `model`, with `reject` its "rejected" class (index =
    the classifier's number of classes). An input leaves the search once its joint label wins by `margin`."""
    if not isinstance(model, JointLogits):
        raise ValueError("logit_matching attacks a JointLogits(classifier, detector, threshold): it matches both "
                         "networks' outputs")
    check_inputs(x, y, target, box)
    guides = guides if guides is not None else getattr(model, "guides", None)
    if guides is None:
        raise ValueError("logit_matching needs natural images to match: pass guides=, or set the model's `guides`")
    if guides.dim() != x.dim() or guides.shape[1:] != x.shape[1:] or not len(guides):
        raise ValueError(f"guides {tuple(guides.shape)} must be a non-empty batch of inputs shaped like "
                         f"{tuple(x.shape[1:])}")
    view = (-1, *[1] * (x.dim() - 1))
    guides = guides.to(x.device)
    with frozen(model):
        order = _guide_order(model, x, y, target, guides, reject, candidates)
        best = x.clone().detach()
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        crossed = torch.zeros_like(found)
        iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
        for c in range(order.shape[1]):
            idx = ((~found) & (order[:, c] >= 0)).nonzero().squeeze(1)
            if len(idx) == 0:
                continue
            with torch.no_grad():
                goal = _outputs(model, guides[order[idx, c]])
            cur = x[idx].clone()
            for k in range(steps + 1):
                xa = cur.detach().requires_grad_(True)
                out = _outputs(model, xa)
                with torch.no_grad():
                    ts = target[idx] if target is not None else None
                    joint = model.combine(out[:, :-2], out[:, -2:])
                    hit = won(joint, y[idx], ts, reject, margin)
                    # past the boundary by less than the margin: kept (the first such point) while the search
                    # goes on for the margin
                    fresh = is_adversarial(joint.argmax(1), y[idx], ts, reject) & ~crossed[idx] & ~hit
                    best[idx[fresh]] = cur[fresh]
                    crossed[idx[fresh]] = True
                    best[idx[hit]] = cur[hit]
                    found[idx[hit]] = True
                    iterations[idx] += int(k > 0)
                if k == steps:
                    break
                (grad,) = torch.autograd.grad((out - goal).pow(2).sum(), xa)
                with torch.no_grad():
                    keep = ~hit
                    idx, cur, goal, grad = idx[keep], cur[keep], goal[keep], grad[keep]
                    if len(idx) == 0:
                        break
                    alpha = step_fraction * eps * (1 - k / steps)
                    moved = cur - alpha * _direction(grad, norm)
                    cur = (x[idx] + _project(moved - x[idx], eps, norm)).clamp(*box)
        x_adv = torch.where((found | crossed).view(view), best, x)
        return finish(model, x, x_adv, y, target, iterations, box, reject=reject)
