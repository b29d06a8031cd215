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
from reabsnet.artifacts import (
    folder_or_temporary,
    is_valid,
    load_tensors,
    model_sha256,
    save_tensors,
    stage_key,
    tensors_sha256,
)
from reabsnet.attacks import BOX, deepfool
from reabsnet.attacks.common import Box
from reabsnet.attacks.run import run_attack
from reabsnet.checks import check_data
from reabsnet.data import Splits
from reabsnet.defense import ADVERSARIAL, NATURAL
from reabsnet.errors import ReabsnetError
from reabsnet.models import create_model, place
from reabsnet.profiles import AdamTrainConfig, GuardianConfig, Profile, TrainConfig, keyed
from reabsnet.runtime import seed_everything
from reabsnet.stages import SHIPPED_MODELS, cached_model, run_dir, shipped_dir
from reabsnet.train.loop import cross_entropy_at, fit, predict_logits

log = logging.getLogger(__name__)


def deepfool_split(master: nn.Module, master_sha: str, splits: Splits, split: str, n: int, shard_size: int,
                   out: Path) -> dict[str, torch.Tensor]:
    """DeepFool (reference settings) on the first `n` images of `split` (0 = all), shard by shard, resuming from
    the shards already on disk. Returns x, x_adv, y, success, iterations, l2 for the whole range."""
    x, y = splits.split(split, n)
    return deepfool_shards(master, master_sha, x, y, splits.sha256, split, shard_size, out)


def deepfool_shards(master: nn.Module, master_sha: str, x: torch.Tensor, y: torch.Tensor, data_sha: str, split: str,
                    shard_size: int, out: Path, box: Box = BOX) -> dict[str, torch.Tensor]:
    """DeepFool on the images x (labels y, in `box`), shard by shard under `out`, resuming from the shards already
    there (keyed on the master, the data's digest `data_sha` and the range). Returns x, x_adv, y, success,
    iterations, l2."""
    n = len(x)
    shards = [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]
    where_box = () if tuple(box) == BOX else (list(box),)     # MNIST's shards keep their keys

    def where(start: int, stop: int) -> tuple[Path, str]:
        return (out / f"deepfool-{split}-{start:05d}-{stop:05d}.safetensors",
                stage_key("deepfool-shard", master_sha, data_sha, split, start, stop, *where_box))

    # under torchrun each rank builds the missing shards it owns, then every rank reads them all
    for i, (start, stop) in enumerate(shards):
        path, key = where(start, stop)
        if not distributed.owns(i) or is_valid(path, key):
            continue
        began = time.perf_counter()
        res = run_attack(deepfool, master, x[start:stop], y[start:stop], batch_size=500, box=box,
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
        model, record = train_two_class(train_adv, val_adv, cfg.train, profile.seed, device, architecture,
                                        extra_sets={k: arrays for k, (arrays, _) in extra_sets.items()})
        return model, {"profile": profile.name, "seed": profile.seed, "config": keyed(cfg),
                       **({"variant": {"architecture": architecture, "data": data, "extra_sets": sorted(extra_sets)}}
                          if variant else {}),
                       "master_sha256": master_meta["sha256"], "data_sha256": splits.sha256, **record}

    return cached_model(out / f"{name}.safetensors", key, None if only_built else build, device,
                        shipped_dir(splits.name, profile.trained_as, shipped))


def train_two_class(train_adv: dict[str, torch.Tensor], val_adv: dict[str, torch.Tensor], train: TrainConfig,
                    seed: int, device: torch.device, architecture: str = "guardian", model_kwargs: dict | None = None,
                    extra_sets: dict[str, dict[str, torch.Tensor]] | None = None) -> tuple[nn.Module, dict]:
    """A two-class network (`architecture`) trained on natural vs DeepFool images (`two_class_set` of each
    split; `extra_sets`' successful examples join the training set with their natural twins), seeded by
    `seed` + 10. Returns the network with its best validation epoch's weights, and its record for the sidecar."""
    x_train, y_train, train_stats = two_class_set(train_adv)
    x_val, y_val, val_stats = two_class_set(val_adv)
    for set_name, arrays in (extra_sets or {}).items():
        x_more, y_more, train_stats[set_name] = two_class_set(   # a moved, successful example only
            {**arrays, "iterations": (arrays["success"].bool() & (arrays["l2"] > 0)).long()})
        x_train, y_train = torch.cat([x_train, x_more]), torch.cat([y_train, y_more])
    if not len(x_train) or not len(x_val):
        raise ReabsnetError(f"no DeepFool example to train the guardian on ({train_stats['kept']} training, "
                            f"{val_stats['kept']} validation images moved across the master's boundary)")
    gen = seed_everything(seed + 10)
    model = place(create_model(architecture, **(model_kwargs or {})), device)
    began = time.perf_counter()
    history = fit(model, (x_train, y_train), (x_val, y_val), train, loss_fn=cross_entropy_at(1.0),
                  generator=gen, desc="guardian")
    return model, {"train_set": train_stats, "val_set": val_stats,
                   "training": {"val_accuracy": history.val_accuracy, "train_loss": history.train_loss,
                                "best_epoch": history.best_epoch, "seconds": time.perf_counter() - began},
                   "metrics": {"val_accuracy": history.best_val_accuracy}}


def default_recipe(shape: tuple[int, ...]) -> TrainConfig:
    """The guardian's training run for images of `shape`: the paper profile's (SGD, Nesterov, lr 0.02, batch 128,
    10 epochs) on MNIST's 1x28x28; elsewhere Adam at lr 1e-3, batch 64, 12 epochs. Measured on the synthetic
    3x32x32 set (`data.synthetic`, 2,159 DeepFool pairs of a small ResNet's), best validation accuracy: the SGD
    run 0.581, Adam at batch 128 for 10 epochs 0.613, this run 0.858."""
    if tuple(shape) == (1, 28, 28):
        return GuardianConfig().train
    return AdamTrainConfig(epochs=12, batch_size=64, lr=1e-3)


def fit_guardian(master: nn.Module, x_train: torch.Tensor, *, box: Box = BOX, y_train: torch.Tensor | None = None,
                 x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None, val_fraction: float = 0.1,
                 train: TrainConfig | None = None, seed: int = 0, out: str | Path | None = None,
                 device: torch.device | str | None = None, shard_size: int = 5000) -> tuple[nn.Module, dict]:
    """The paper's guardian for any classifier: DeepFool against `master` on the images `x_train` (N, C, H, W)
    in `box`, then a two-class guardian (`models.guardian`, C in {1, 3}, H and W at least 16) trained on natural
    vs adversarial, as the MNIST pipeline trains it (`train_guardian`: same data rule, same seed use; same
    weights where the settings agree).

    `y_train`: labels (default: the master's own predictions; an image it gets wrong is left out, as in the
    paper's set). Validation: `x_val`, `y_val`, else the last `val_fraction` of the training images. `train`: the
    training run (default `default_recipe`). `out`: a folder where the DeepFool shards and the guardian are kept,
    so a rerun resumes or reuses them; under torchrun the ranks share the work as everywhere else. Returns the
    guardian (eval mode) and its record (validation accuracy under "metrics", the data's statistics)."""
    if master.training:
        master.eval()
    device = torch.device(device) if device is not None else next(master.parameters()).device

    def labelled(x: torch.Tensor, y: torch.Tensor | None, what: str) -> torch.Tensor:
        if y is None:
            check_data(master, x, torch.zeros(len(x), dtype=torch.long), box, what)
            return predict_logits(master, x).argmax(1)
        check_data(master, x, y, box, what)
        return y.long().cpu()

    if x_val is None:
        if not 0 < val_fraction < 1:
            raise ReabsnetError(f"val_fraction {val_fraction}: must lie strictly between 0 and 1")
        cut = len(x_train) - max(1, round(len(x_train) * val_fraction))
        x_train, x_val = x_train[:cut], x_train[cut:]
        y_train, y_val = (y_train[:cut], y_train[cut:]) if y_train is not None else (None, y_val)
    y_train, y_val = labelled(x_train, y_train, "training images"), labelled(x_val, y_val, "validation images")
    shape = tuple(x_train.shape[1:])
    if shape[0] not in (1, 3) or min(shape[1:]) < 16:
        raise ReabsnetError(f"images of shape {shape}: the guardian takes 1 or 3 channels and sides of 16 or more")
    train = train or default_recipe(shape)
    master_sha = model_sha256(master)
    data_sha = tensors_sha256([x_train, y_train, x_val, y_val], extra=(list(box),))
    kwargs = {} if shape[0] == 1 else {"in_channels": shape[0]}
    key = stage_key("fit-guardian", keyed(train), seed, master_sha, data_sha, kwargs)

    def build() -> tuple[nn.Module, dict]:
        train_adv = deepfool_shards(master, master_sha, x_train.float().cpu(), y_train, data_sha, "train",
                                    shard_size, folder / "guardian-data", box)
        val_adv = deepfool_shards(master, master_sha, x_val.float().cpu(), y_val, data_sha, "val", shard_size,
                                  folder / "guardian-data", box)
        model, record = train_two_class(train_adv, val_adv, train, seed, device, model_kwargs=kwargs)
        return model, {"seed": seed, "config": keyed(train), "box": list(box), "master_sha256": master_sha,
                       "data_sha256": data_sha, **record}

    with folder_or_temporary(out) as folder:
        return cached_model(folder / "guardian.safetensors", key, build, device)
