"""The modifier (paper section 3.6): DeepFool against the guardian, moving flagged inputs until it calls them natural.

The paper's argument (eqs. 6-8): if the attacker moved x by at most eps1 and the revision moves x_adv by at most
eps2, the revised input is within eps1 + eps2 of the natural x, and DeepFool keeps eps2 close to the smallest
step that crosses the guardian's boundary.
"""

from __future__ import annotations

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
