"""Run an attack over a dataset in batches with a progress bar, and store the adversarial set as `.npz` + JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from reabsnet.artifacts import atomic_path, sha256_file, verify, write_sidecar
from reabsnet.attacks.common import BOX, AttackResult, Box
from reabsnet.errors import ReabsnetError
from reabsnet.progress import bar

SET_KEYS = ("x", "y", "target", "x_adv", "success", "l2", "linf", "iterations", "label")


def run_attack(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
               settings: dict | None = None, batch_size: int = 500, box: Box = BOX, desc: str = "attack",
               device: torch.device | str | None = None) -> AttackResult:
    """`attack` over (x, y[, target]) in batches on `device` (default: the model's); the result on the CPU."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    parts: list[AttackResult] = []
    succeeded = done = 0
    with bar(total=len(x), desc=desc, unit="img") as progress:
        for i in range(0, len(x), batch_size):
            sl = slice(i, i + batch_size)
            t = target[sl].to(device) if target is not None else None
            res = attack(model, x[sl].to(device), y[sl].to(device), target=t, box=box, **(settings or {})).cpu()
            parts.append(res)
            succeeded += int(res.success.sum())
            done += len(res.success)
            progress.update(len(res.success))
            progress.set_postfix(success=f"{succeeded / done:.1%}")
    return AttackResult(**{k: torch.cat([getattr(p, k) for p in parts]) for k in vars(parts[0])})


def save_set(path: str | Path, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             result: AttackResult, meta: dict) -> dict:
    """Write the adversarial set as a plain `.npz` (readable by numpy, foolbox and ART: no pickles) and its JSON
    sidecar (settings, summary, SHA-256). `target` is -1 for untargeted attacks."""
    arrays = {
        "x": x.numpy().astype(np.float32), "y": y.numpy().astype(np.int64),
        "target": (target if target is not None else torch.full_like(y, -1)).numpy().astype(np.int64),
        "x_adv": result.x_adv.numpy().astype(np.float32), "success": result.success.numpy(),
        "l2": result.l2.numpy().astype(np.float32), "linf": result.linf.numpy().astype(np.float32),
        "iterations": result.iterations.numpy().astype(np.int64), "label": result.label.numpy().astype(np.int64),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        digest = sha256_file(tmp)
    return write_sidecar(path, digest, {**meta, "summary": summarize(result)})


def load_set(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Verify and read an adversarial set written by `save_set` (allow_pickle stays off)."""
    meta = verify(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: torch.from_numpy(f[k]) for k in SET_KEYS}
    except (KeyError, ValueError, OSError) as e:
        raise ReabsnetError(f"{path}: not an adversarial set ({e})") from None
    arrays["target"] = arrays["target"] if (arrays["target"] >= 0).all() else None
    return arrays, meta


def summarize(result: AttackResult) -> dict:
    ok = result.success
    n = len(ok)

    def median(v: torch.Tensor) -> float | None:
        return float(v[ok].median()) if ok.any() else None

    return {"n": n, "success_rate": float(ok.float().mean()) if n else None, "successes": int(ok.sum()),
            "median_l2": median(result.l2), "median_linf": median(result.linf),
            "mean_iterations": float(result.iterations.float().mean()) if n else None}
