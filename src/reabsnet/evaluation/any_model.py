"""The paper's oblivious evaluation (Tables 1 and 2) for any master and guardian, on the user's images: the
pipeline's own functions (`evaluation.paper.build_sets`, `evaluate`), given in-memory data instead of a profile's
splits. Attack sets are stored (and reused on a rerun) under `out` when given, else in a temporary folder. The
adaptive suite's counterpart is `reabsnet.security.api.evaluate_adaptive`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from reabsnet.artifacts import folder_or_temporary, model_sha256
from reabsnet.checks import check_data
from reabsnet.data import Splits
from reabsnet.defense import ReabsNet
from reabsnet.errors import ReabsnetError
from reabsnet.evaluation.paper import ATTACK_SPECS, build_sets, evaluate
from reabsnet.profiles import EvalConfig


def evaluate_oblivious(defense: ReabsNet, x: torch.Tensor, y: torch.Tensor, *,
                       attacks: Sequence[str] = tuple(s.key for s in ATTACK_SPECS), preset: str = "quick",
                       settings: dict[str, dict] | None = None, temperature: float = 1.0,
                       out: str | Path | None = None, name: str = "data") -> dict:
    """Tables 1 and 2 for any master/guardian pair: each attack crafted against `defense.master` alone (the
    paper's threat model) on the images x, y (in `defense.box`), then the guardian's detection rate, the master's
    and ReabsNet's accuracy on the adversarial examples, and clean accuracy, each a count with its Wilson
    interval. `attacks`: keys of `evaluation.paper.ATTACK_SPECS` (fgsm, deepfool, cw-l2-u, cw-l2-t, cw-linf-u,
    cw-linf-t); `preset`: their settings (`reabsnet.attacks.presets`); `settings`: per attack key, overrides (e.g.
    {"fgsm": {"eps": 8 / 255}}; FGSM's preset eps is MNIST's 0.3). Returns the results dict of the MNIST report
    (keys "clean", "natural_pass", "attacks", ...)."""
    known = {s.key: s for s in ATTACK_SPECS}
    unknown = [a for a in attacks if a not in known] + [a for a in (settings or {}) if a not in attacks]
    if unknown:
        raise ReabsnetError(f"unknown or unselected attack {unknown[0]!r}; choose from: {', '.join(known)}")
    specs = [dataclasses.replace(known[a], settings=(settings or {}).get(a)) for a in attacks]
    classes = check_data(defense.master, x, y, defense.box)
    splits = Splits.of_arrays(name, x.float().cpu(), y.long().cpu(), classes=classes, box=defense.box)
    n = len(x)
    master_meta = {"sha256": model_sha256(defense.master), "temperature": temperature}
    with folder_or_temporary(out) as folder:
        sets = build_sets(EvalConfig(preset=preset), splits, defense.master, master_meta, folder, {}, specs, "attacks",
                          [n] * len(specs))
        results, _, _ = evaluate(defense, splits, sets, clean_images=n, specs=specs)
    return results
