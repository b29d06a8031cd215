"""A rate with its count and 95% interval: how every fraction in results.json and the reports is stored (a leaf
module, so training, which records the baseline's robust accuracy, need not import the evaluation package)."""

from __future__ import annotations

import math

import torch


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a rate k/n (Wilson 1927); (nan, nan) when n is 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at k = 0 or k = n the bound is exactly 0 or 1; computed, it can land one rounding step inside (1 - 1e-16)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def rate(mask: torch.Tensor) -> dict:
    """A boolean tensor's rate, count and 95% interval, as stored in results.json."""
    k, n = int(mask.sum()), int(mask.numel())
    lo, hi = wilson(k, n)
    return {"rate": k / n if n else None, "k": k, "n": n, "ci95": [lo, hi] if n else None}
