"""Indicators of attack failure (Pintor, Demetrio, Sotgiu, Manca, Demontis, Carlini, Biggio and Roli, NeurIPS 2022):
per image, signs that an attack failed for a reason other than the model's robustness. An image that stands with an
indicator tripped is not evidence of robustness. Computed from what the suite records:

- *transfer failure*: a step's own view (the joint logits, the BPDA or unrolled pipeline) called its example
  adversarial, yet the defense judged it right: the attacked model and the judged one disagree;
- *unstable prediction*: the example broke the image in its batch but not when judged again in a batch of its own
  (`engine.recheck`), an example on the guardian's boundary;
- *unavailable gradients*: the joint network's cross-entropy has a zero or non-finite input gradient at the clean
  image (the defense's gradient steps start blind there).

The other three are not computed per image. *Silent success* (an iterate the attacked view called adversarial,
yet a final point it does not) cannot happen in the suite's attacks: each keeps an iterate the moment its view calls
it adversarial (APGD, APGD-T, Square, logit matching, Selective and Orthogonal PGD) or keeps its best successful one
(CW, FAB-T), and `finish` judges what it returns. *Incomplete optimisation* and *non-converging attack* need each
attack's loss trace per image, which the suite does not keep: escalation measures them per bound instead (more
steps, restarts and queries on what still stands, until a round breaks at most the tolerance), and the sanity
checks' loss trace on average.
"""

from __future__ import annotations

import torch

from reabsnet.attacks import frozen
from reabsnet.security.ledger import Ledger

INDICATORS = ("transfer failure", "unstable prediction", "unavailable gradients")


def unavailable_gradients(run, x: torch.Tensor) -> torch.Tensor:
    """Per image of x, whether the joint cross-entropy view's input gradient is zero or not finite."""
    model, _ = run.target.view("joint-ce")
    device = next(model.parameters()).device
    out = []
    with frozen(model):
        for i in range(0, len(x), 500):
            xb = x[i:i + 500].to(device).requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(xb), run.y[i:i + 500].to(device), reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
            norm = grad.flatten(1).norm(dim=1)
            out.append(((norm == 0) | ~torch.isfinite(norm)).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def standing_indicators(run, ledger: Ledger) -> dict:
    """Per indicator, per defense column, how many of the images still standing tripped it (empty without a
    defense)."""
    if run.target.defense is None:
        return {}
    ledger.trip("unavailable gradients", unavailable_gradients(run, run.x))
    columns = ("reabsnet", "selective")
    return {name: {c: int((ledger.standing[c] & ledger.tripped[name]).sum()) if name in ledger.tripped else 0
                   for c in columns} for name in INDICATORS}
