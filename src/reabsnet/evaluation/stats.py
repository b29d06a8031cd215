"""Rates with their uncertainty, and detection metrics (ROC)."""

from __future__ import annotations

import math

import torch

from reabsnet.rates import rate, wilson

__all__ = ["detection_at_fpr", "rate", "roc", "roc_auc", "wilson"]


def roc(negatives: torch.Tensor, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """False- and true-positive rates of the score threshold swept from +inf down (higher score = positive)."""
    scores = torch.cat([negatives, positives]).double()
    labels = torch.cat([torch.zeros(len(negatives)), torch.ones(len(positives))]).double()
    order = scores.argsort(descending=True)
    scores, labels = scores[order], labels[order]
    tp, fp = labels.cumsum(0), (1 - labels).cumsum(0)
    last = torch.ones(len(scores), dtype=torch.bool)        # keep one point per distinct score (ties)
    last[:-1] = scores[1:] != scores[:-1]
    zero = torch.zeros(1, dtype=torch.double)
    return torch.cat([zero, fp[last] / max(len(negatives), 1)]), torch.cat([zero, tp[last] / max(len(positives), 1)])


def roc_auc(negatives: torch.Tensor, positives: torch.Tensor) -> float | None:
    """Area under the ROC curve (the probability a random positive outscores a random negative, ties half); None
    where either side is empty (an attack with no adversarial example: strict JSON has no NaN)."""
    if len(negatives) == 0 or len(positives) == 0:
        return None
    fpr, tpr = roc(negatives, positives)
    return float(torch.trapezoid(tpr, fpr))


def detection_at_fpr(negatives: torch.Tensor, positives: torch.Tensor, fpr: float) -> float | None:
    """Detection rate at the threshold that flags at most `fpr` of the negatives; None where either side is
    empty."""
    if len(negatives) == 0 or len(positives) == 0:
        return None
    k = int(math.floor(fpr * len(negatives)))
    ranked = negatives.sort(descending=True).values
    threshold = ranked[k] if k < len(ranked) else ranked[-1] - 1
    return float((positives > threshold).float().mean())
