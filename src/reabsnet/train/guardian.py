"""The guardian's data and training (paper sections 3.4 and 4.2).

Data: DeepFool against the (distilled) master on the training split and on the validation split. It is the
longest stage, so it runs in shards, each saved (atomically, with its key) as it finishes; a rerun skips the shards
that verify. An image DeepFool cannot push across the master's boundary, or one the master already misclassifies
(DeepFool returns it unchanged), is no adversarial example: it is counted and left out together with its natural
twin, so the two-class set stays balanced: each kept image appears once natural (class 0) and once adversarial
(class 1).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn as nn

from reabsnet import distributed
from reabsnet.artifacts import is_valid, load_tensors, save_tensors, stage_key
from reabsnet.attacks import deepfool
from reabsnet.attacks.run import run_attack
from reabsnet.data import Splits
from reabsnet.defense import ADVERSARIAL, NATURAL
from reabsnet.errors import ReabsnetError
from reabsnet.models import create_model, place
from reabsnet.profiles import Profile, keyed
from reabsnet.runtime import seed_everything
from reabsnet.stages import SHIPPED_MODELS, cached_model, run_dir, shipped_dir
from reabsnet.train.loop import cross_entropy_at, fit

log = logging.getLogger(__name__)


def deepfool_split(master: nn.Module, master_sha: str, splits: Splits, split: str, n: int, shard_size: int,
                   out: Path) -> dict[str, torch.Tensor]:
    """DeepFool (reference settings) on the first `n` images of `split` (0 = all), shard by shard, resuming from
    the shards already on disk. Returns x, x_adv, y, success, iterations, l2 for the whole range."""
    x, y = splits.split(split, n)
    n = n or len(x)
    shards = [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]

    def where(start: int, stop: int) -> tuple[Path, str]:
        return (out / f"deepfool-{split}-{start:05d}-{stop:05d}.safetensors",
                stage_key("deepfool-shard", master_sha, splits.sha256, split, start, stop))

    # under torchrun each rank builds the missing shards it owns, then every rank reads them all
    for i, (start, stop) in enumerate(shards):
        path, key = where(start, stop)
        if not distributed.owns(i) or is_valid(path, key):
            continue
        began = time.perf_counter()
        res = run_attack(deepfool, master, x[start:stop], y[start:stop], batch_size=500,
                         desc=f"DeepFool {split} {start:,}-{stop:,} of {n:,}")
        tensors = {"x_adv": res.x_adv, "success": res.success, "iterations": res.iterations, "l2": res.l2}
        save_tensors(path, tensors, {"key": key, "split": split, "start": start, "stop": stop,
                                     "seconds": time.perf_counter() - began})
        log.info("DeepFool %s %d-%d: %.1f%% adversarial (%.0f s)", split, start, stop,
                 100 * res.success.float().mean(), time.perf_counter() - began)
    distributed.barrier()
    parts = []
    for i, (start, stop) in enumerate(shards):
        path, key = where(start, stop)
        if not is_valid(path, key):
            raise ReabsnetError(f"{path}: DeepFool shard missing or corrupt after it was built (guardian data, "
                                f"{split} images {start}-{stop}, built by rank {i % distributed.size()}; read by rank "
                                f"{distributed.rank()})")
        parts.append(load_tensors(path)[0])
    merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return {"x": x, "y": y, **merged}


def two_class_set(adv: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Natural (0) and adversarial (1) images of the examples DeepFool really moved across the boundary."""
    usable = adv["success"].bool() & (adv["iterations"] > 0)
    x = torch.cat([adv["x"][usable], adv["x_adv"][usable]])
    labels = torch.cat([torch.full((int(usable.sum()),), NATURAL), torch.full((int(usable.sum()),), ADVERSARIAL)])
    stats = {"images": len(usable), "kept": int(usable.sum()),
             "deepfool_failed": int((~adv["success"].bool()).sum()),
             "already_misclassified": int((adv["success"].bool() & (adv["iterations"] == 0)).sum()),
             "median_l2": float(adv["l2"][usable].median()) if usable.any() else None}
    return x, labels, stats


def partial_perturbations(adv: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The DeepFool set with each perturbation scaled by its own a ~ U(0, 1]: x + a * (x_adv - x), so the
    adversarial class also holds inputs on the way to the boundary, not only just past it (ablation factor c)."""
    gen = torch.Generator().manual_seed(seed)
    a = 1.0 - torch.rand(len(adv["x"]), generator=gen)          # (0, 1]
    x_adv = adv["x"] + a.view(-1, 1, 1, 1) * (adv["x_adv"] - adv["x"])
    return {**adv, "x_adv": x_adv, "l2": (x_adv - adv["x"]).flatten(1).norm(dim=1)}


def train_guardian(profile: Profile, splits: Splits, master: nn.Module, master_meta: dict, device: torch.device,
                   home: str | Path | None = None, shipped: Path | None = SHIPPED_MODELS,
                   name: str = "guardian", *, architecture: str = "guardian", data: str = "deepfool",
                   extra_sets: dict[str, tuple[dict, dict]] | None = None,
                   data_dir: str = "guardian-data", only_built: bool = False) -> tuple[nn.Module, dict] | None:
    """Train (or reuse, or take from the `shipped` models; None = never) the guardian (runs/.../<name>.safetensors;
    the ablation names its variants); its DeepFool data shards are built (or reused) only when the guardian itself
    has to be trained.

    The ablation's variants (none is the paper's): `architecture`, a registered two-class model; `data`
    "partial" (`partial_perturbations`); `extra_sets`, attack sets on training images (name -> (arrays, sidecar),
    as `evaluation.paper.attack_sets` returns them) whose successful examples join the two-class set, each with its
    natural twin; `data_dir`, where the DeepFool shards live (another master needs its own). `only_built`: return
    None instead of training a guardian that is not built yet."""
    out = run_dir(splits.name, profile.name, home)
    cfg = profile.guardian
    extra_sets = extra_sets or {}
    # a variant's settings enter the key only where they depart from the paper, so the paper guardian's key holds
    variant = () if (architecture, data, extra_sets) == ("guardian", "deepfool", {}) else (
        architecture, data, sorted(meta["key"] for _, meta in extra_sets.values()))
    key = stage_key("guardian", keyed(cfg), profile.seed, master_meta["sha256"], splits.sha256, *variant)

    def build() -> tuple[nn.Module, dict]:
        train_adv = deepfool_split(master, master_meta["sha256"], splits, "train", cfg.train_images, cfg.shard_size,
                                   out / data_dir)
        val_adv = deepfool_split(master, master_meta["sha256"], splits, "val", cfg.val_images, cfg.shard_size,
                                 out / data_dir)
        if data == "partial":
            train_adv = partial_perturbations(train_adv, profile.seed + 20)
            val_adv = partial_perturbations(val_adv, profile.seed + 21)
        x_train, y_train, train_stats = two_class_set(train_adv)
        x_val, y_val, val_stats = two_class_set(val_adv)
        for set_name, (arrays, _) in extra_sets.items():
            x_more, y_more, train_stats[set_name] = two_class_set(   # a moved, successful example only
                {**arrays, "iterations": (arrays["success"].bool() & (arrays["l2"] > 0)).long()})
            x_train, y_train = torch.cat([x_train, x_more]), torch.cat([y_train, y_more])
        gen = seed_everything(profile.seed + 10)
        model = place(create_model(architecture), device)
        began = time.perf_counter()
        history = fit(model, (x_train, y_train), (x_val, y_val), cfg.train, loss_fn=cross_entropy_at(1.0),
                      generator=gen, desc="guardian")
        return model, {"profile": profile.name, "seed": profile.seed, "config": keyed(cfg),
                       **({"variant": {"architecture": architecture, "data": data, "extra_sets": sorted(extra_sets)}}
                          if variant else {}),
                       "master_sha256": master_meta["sha256"], "data_sha256": splits.sha256,
                       "train_set": train_stats, "val_set": val_stats,
                       "training": {"val_accuracy": history.val_accuracy, "train_loss": history.train_loss,
                                    "best_epoch": history.best_epoch, "seconds": time.perf_counter() - began},
                       "metrics": {"val_accuracy": history.best_val_accuracy}}

    return cached_model(out / f"{name}.safetensors", key, None if only_built else build, device,
                        shipped_dir(splits.name, profile.trained_as, shipped))
