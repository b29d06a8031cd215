"""A rate with its count and 95% interval: how every fraction in results.json and the reports is stored (a leaf
module, so training, which records the baseline's robust accuracy, need not import the evaluation package)."""

from __future__ import annotations

import math
import re

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


def cell(r: dict | None, ci: str | None = ".3f", empty: str = "n/a") -> str:
    """A rate cell, the one format of every report: rate (count/n; 95% interval, its bounds formatted `ci`; None:
    no interval), `empty` where nothing was counted."""
    if not r or r.get("n", 0) == 0:
        return empty
    if ci is None:
        return f"{r['rate']:.3f} ({r['k']}/{r['n']})"
    lo, hi = r["ci95"]
    return f"{r['rate']:.3f} ({r['k']}/{r['n']}; {lo:{ci}}-{hi:{ci}})"


def fmt(v: float | None, spec: str = ".3f") -> str:
    """`v` formatted, or "-" where it is undefined (None; NaN in results written before None was)."""
    return "-" if v is None or v != v else format(v, spec)


def in_order(bounds: dict) -> list[tuple[str, dict]]:
    """Bounds as the evaluation runs them, L-inf then L2, each ascending ("linf 0.1": ...; results.json sorts its
    keys, so a report rendered from it would otherwise list L2 first)."""
    def key(item):
        norm, eps = item[0].split()
        return norm != "linf", float(eps)
    return sorted(bounds.items(), key=key)


def bound_label(name: str) -> str:
    """A bound's name as the reports print it: "linf 0.1" -> "L-inf 0.1"."""
    return name.replace("linf", "L-inf").replace("l2", "L2")


def command_text(command: str) -> str:
    """A recorded command as the reports print it: the folder it copied or wrote its report to, a path of one
    machine, as <out>."""
    return re.sub(r"(--copy-to|--out)(=|\s+)\S+", r"\1\2<out>", command)
