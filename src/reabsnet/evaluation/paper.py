"""The paper's evaluation (section 4.3): attack sets crafted against the master, Tables 1 and 2, clean accuracy.

Threat model (the paper's): the attacker knows the master only; ReabsNet then sees the adversarial examples.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from reabsnet import distributed
from reabsnet.artifacts import is_valid, load_tensors, save_tensors, stage_key
from reabsnet.attacks import BOX, Preset, get_attack, get_preset, random_targets
from reabsnet.attacks.common import AttackResult
from reabsnet.attacks.run import load_set, run_attack, save_set
from reabsnet.data import Splits
from reabsnet.defense import ReabsNet
from reabsnet.errors import ReabsnetError
from reabsnet.evaluation.stats import detection_at_fpr, rate, roc_auc
from reabsnet.profiles import EvalConfig, Profile
from reabsnet.runtime import describe
from reabsnet.train.loop import predict_logits

log = logging.getLogger(__name__)


SHARD = 500   # images per attack shard under torchrun: run_attack's batch size, so results match one process


@dataclass(frozen=True)
class AttackSpec:
    key: str          # name in tables and files
    title: str        # as the paper's tables write it
    attack: str | Callable   # reabsnet.attacks name, or a user's attack function
    targeted: bool
    settings: dict | None = None   # overrides on top of the profile's preset (e.g. PGD's eps); None: the preset


ATTACK_SPECS = [
    AttackSpec("fgsm", "FGSM", "fgsm", False),
    AttackSpec("deepfool", "DeepFool", "deepfool", False),
    AttackSpec("cw-l2-u", "CW L2 untargeted", "cw-l2", False),
    AttackSpec("cw-l2-t", "CW L2 targeted", "cw-l2", True),
    AttackSpec("cw-linf-u", "CW Linf untargeted", "cw-linf", False),
    AttackSpec("cw-linf-t", "CW Linf targeted", "cw-linf", True),
]

# The paper's numbers (Tables 1 and 2; clean accuracy in section 4.3.2), printed beside ours.
PAPER = {
    "natural_pass": 0.9926, "clean_master": 0.9905, "clean_reabsnet": 0.9905,
    "detection": {"fgsm": None, "deepfool": 0.980, "cw-l2-u": 0.983, "cw-l2-t": 0.999, "cw-linf-u": 0.99,
                  "cw-linf-t": 1.0},
    "master_only": {"fgsm": 0.998, "deepfool": 0.0, "cw-l2-u": 0.001, "cw-l2-t": 0.001, "cw-linf-u": 0.0,
                    "cw-linf-t": 0.0},
    "reabsnet": {"fgsm": 1.0, "deepfool": 0.709, "cw-l2-u": 0.983, "cw-l2-t": 0.962, "cw-linf-u": 0.99,
                 "cw-linf-t": 0.95},
}


def set_size(profile: Profile, spec: AttackSpec, baseline: bool = False) -> int:
    cfg = profile.eval
    cw_l2 = (cfg.n_cw_l2_baseline or cfg.n_cw_l2) if baseline else cfg.n_cw_l2
    return {"cw-l2": cw_l2, "cw-linf": cfg.n_cw_linf}.get(spec.attack, cfg.n)


def _preset(spec: AttackSpec, name: str) -> Preset:
    """The preset of a spec's attack; an attack given as a callable (a user's) has none."""
    if isinstance(spec.attack, str):
        return get_preset(spec.attack, name)
    return Preset(getattr(spec.attack, "__qualname__", "custom"), name, {}, "a user's attack")


def set_settings(cfg: EvalConfig, spec: AttackSpec) -> dict:
    """An attack set's settings: the preset (`cfg.preset`) of its attack, then the spec's own overrides."""
    return {**_preset(spec, cfg.preset).settings, **(spec.settings or {})}


def set_key(cfg: EvalConfig, spec: AttackSpec, size: int, model_meta: dict, splits: Splits, split: str = "test",
            picked: list[int] | None = None) -> str:
    """The stage key of an attack set: what it attacks, how, on which images (not where it was computed)."""
    # the box enters only where it is not MNIST's (a user's data), so every MNIST set keeps its key; a user's
    # attack function enters by its name
    return stage_key("attack-set", spec.key, set_settings(cfg, spec), size, cfg.target_seed,
                     model_meta["sha256"], splits.sha256, *(() if split == "test" else (split,)),
                     *(() if tuple(splits.box) == BOX else (list(splits.box),)),
                     *(() if picked is None else (picked,)),
                     *(() if isinstance(spec.attack, str) else (_preset(spec, cfg.preset).attack,)))


def set_inputs(cfg: EvalConfig, spec: AttackSpec, splits: Splits, size: int, split: str = "test",
               picked: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x, y, target) of an attack set: the first `size` images of `split` (those at `picked` among them)."""
    x, y = splits.split(split, size)
    if picked is not None:
        x, y = x[picked], y[picked]
    return x, y, (random_targets(y, splits.classes, cfg.target_seed) if spec.targeted else None)


def attack_sets(profile: Profile, splits: Splits, model: nn.Module, model_meta: dict, out: Path,
                timings: dict, specs: list[AttackSpec] = ATTACK_SPECS, subdir: str = "attacks", n: int | None = None,
                baseline: bool = False, split: str = "test", indices: torch.Tensor | None = None
                ) -> dict[str, tuple[dict, dict]]:
    """Build (or reuse) each attack set against `model` (the master, unless the caller says otherwise) on the
    first images of `split` (test), under out/<subdir>/; key -> (arrays, sidecar). `n` overrides the profile's set
    sizes; `baseline` picks the baseline's CW-L2 size. `indices` (positions among those first images) attacks only
    them, e.g. the ones earlier attacks left standing; the set then holds just those, in that order."""
    return build_sets(profile.eval, splits, model, model_meta, out, timings, specs, subdir,
                      [n or set_size(profile, spec, baseline) for spec in specs], split, indices)


def build_sets(cfg: EvalConfig, splits: Splits, model: nn.Module, model_meta: dict, out: Path, timings: dict,
               specs: list[AttackSpec], subdir: str, sizes: list[int], split: str = "test",
               indices: torch.Tensor | None = None) -> dict[str, tuple[dict, dict]]:
    """`attack_sets` given the attack presets and target seed (`cfg`) and each set's size: what the adaptive suite
    calls, with no profile."""
    picked = indices.tolist() if indices is not None else None
    if distributed.active():
        # survivor indices come from each rank's own predictions; rank 0's (whose results are reported) decide, so
        # every rank computes the same set under the same key even if rounding ever made a prediction differ
        mine, picked = picked, distributed.from_main(picked)
        if mine != picked:
            log.warning("rank %d: its images to attack differ from rank 0's; rank 0's taken", distributed.rank())
    sets = {}
    for order, (spec, size) in enumerate(zip(specs, sizes, strict=True)):
        preset = _preset(spec, cfg.preset)
        settings = set_settings(cfg, spec)
        note = preset.note + (f"; here {spec.settings}" if spec.settings else "")
        path = out / subdir / f"{spec.key}.npz"
        key = set_key(cfg, spec, size, model_meta, splits, split, picked)
        distributed.barrier()          # under torchrun every rank decides on the same files
        if not is_valid(path, key):
            began = time.perf_counter()
            x, y, target = set_inputs(cfg, spec, splits, size, split, picked)
            attack = spec.attack if callable(spec.attack) else get_attack(spec.attack)
            desc = f"{spec.title} ({subdir})"
            # a set of several shards is built shard by shard on disk, so a stopped run keeps its finished shards;
            # shards already there (torchrun's ranks, bench/reference_sets.py's GPU workers) are reused
            if distributed.active() or len(x) > SHARD or (path.parent / ".parts" / key).is_dir():
                try:
                    result, shards = sharded_attack(attack, model, x, y, target, settings,
                                                    path.parent / ".parts" / key, key, first_owner=order, desc=desc,
                                                    name=f"{subdir}/{spec.key}", box=splits.box)
                except ReabsnetError:
                    if distributed.active() or not is_valid(path, key):
                        raise
                    # another process on this home (bench/gpu_reproduce.py's workers) finished the same set
                    # meanwhile and cleared its shards: take its set
                    log.info("%s: finished by another process", path)
                    sets[spec.key] = load_set(path)
                    continue
            else:
                result = run_attack(attack, model, x, y, target=target, settings=settings, desc=desc,
                                    box=splits.box)
                shards = {"device": describe(next(model.parameters()).device)}
            seconds = time.perf_counter() - began
            if distributed.is_main():
                save_set(path, x, y, target, result, {
                    "key": key, "attack": preset.attack, "targeted": spec.targeted, "preset": preset.name,
                    "preset_note": note, "settings": settings, "n": size, "seconds": seconds,
                    "target_seed": cfg.target_seed, "model_sha256": model_meta["sha256"], "split": split,
                    **shards,
                    **({} if picked is None else {"indices": picked})})
                shutil.rmtree(path.parent / ".parts" / key, ignore_errors=True)
                with contextlib.suppress(OSError):     # the folder goes once no other set has parts in it
                    (path.parent / ".parts").rmdir()
            distributed.barrier()
            timings[f"attack {subdir}/{spec.key}"] = seconds
        sets[spec.key] = load_set(path)
    return sets


def sharded_attack(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                   settings: dict, parts: Path, key: str, *, first_owner: int = 0, shard: int = SHARD,
                   desc: str = "attack", name: str = "", box=BOX) -> tuple[AttackResult, dict]:
    """`run_attack` under torchrun: the images cut into shards of `shard` (run_attack's batch, so each shard is
    computed exactly as one process computes it), each rank computing the shards it owns (round robin from
    `first_owner`) that are not on disk yet, written atomically under `parts`; then every rank reads them all, and
    no rank returns before all have read them, so the caller's rank 0 may clear `parts` at once. One process with
    shards on disk (another machine's, or its own before it was stopped) computes the rest. `name` names the set
    in errors (default `desc`). Returns the result and where and how long its shards were computed (seconds summed
    over shards)."""
    starts = range(0, len(x), shard)
    ready = [is_valid(parts / f"{start:06d}.safetensors", key) for start in starts]
    log.info("%s: %d of %d shards on disk, %d ranks compute the rest", desc, sum(ready), len(ready),
             distributed.size())
    for j, start in enumerate(starts):
        part = parts / f"{start:06d}.safetensors"
        if distributed.owns(first_owner + j) and not ready[j]:
            sl = slice(start, start + shard)
            save_shard(part, key, start, attack, model, x[sl], y[sl], target[sl] if target is not None else None,
                       settings, shard, desc, box)
    distributed.barrier()
    pieces, seconds, devices = [], 0.0, []
    for j, start in enumerate(starts):
        part = parts / f"{start:06d}.safetensors"
        if not is_valid(part, key):
            found = ", on disk when this rank started" if ready[j] else ""
            raise ReabsnetError(f"{part}: attack shard missing or corrupt after it was built (set {name or desc}, "
                                f"images {start}+, owned by rank {(first_owner + j) % distributed.size()}{found}; "
                                f"read by rank {distributed.rank()})")
        tensors, meta = load_tensors(part)
        pieces.append(tensors)
        seconds += meta.get("seconds", 0.0)
        devices.append(meta.get("device", "cpu"))
    # rank 0 clears `parts` once it has the set: a rank still reading (descheduled after the barrier above, on a busy
    # machine) would find its shards gone
    distributed.barrier()
    result = AttackResult(**{k: torch.cat([p[k] for p in pieces]) for k in pieces[0]})
    return result, {"device": ", ".join(dict.fromkeys(devices)), "compute_seconds": seconds}


def save_shard(part: Path, key: str, start: int, attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               target: torch.Tensor | None, settings: dict, shard: int = SHARD, desc: str = "attack", box=BOX
               ) -> float:
    """Compute one shard of an attack set (images start.. of the set) and write it atomically; returns seconds."""
    began = time.perf_counter()
    res = run_attack(attack, model, x, y, target=target, settings=settings, batch_size=shard,
                     desc=f"{desc} {start:,}+", box=box)
    seconds = time.perf_counter() - began
    save_tensors(part, {k: v.contiguous() for k, v in vars(res).items()},
                 {"key": key, "start": start, "seconds": seconds, "device": describe(next(model.parameters()).device)})
    return seconds


def evaluate(defended: ReabsNet, splits: Splits, sets: dict[str, tuple[dict, dict]], clean_images: int = 0,
             specs: list[AttackSpec] = ATTACK_SPECS) -> tuple[dict, dict, torch.Tensor]:
    """Every number of Tables 1 and 2 (a row per spec of `specs`), clean accuracy, and the guardian's held-out
    detection metrics; the clean numbers on the first `clean_images` test images (0: all).

    Returns (results, ReabsNet's per-example predictions on the natural images ("natural") and on each set, the
    master's labels of those test images, which Table 3 reuses rather than recomputes)."""
    x_test, y_test = splits.split("test", clean_images)
    master = defended.master
    master_labels = predict_logits(master, x_test).argmax(1)
    clean_master = master_labels == y_test
    natural = defended.predict_batches(x_test)
    clean_reabsnet = natural.label == y_test
    results = {
        "clean": {"master": rate(clean_master), "reabsnet": rate(clean_reabsnet)},
        "natural_pass": rate(~natural.flagged),
        "natural_revision": {"revised": int(natural.flagged.sum()),
                             "median_l2": median(natural.revision_l2[natural.flagged])},
        "attacks": {},
    }
    predictions = {"natural": natural}
    for spec in specs:
        arrays, meta = sets[spec.key]
        y, adversarial = arrays["y"], arrays["success"].bool()
        pred = defended.predict_batches(arrays["x_adv"])
        predictions[spec.key] = pred
        detected = pred.flagged[adversarial]
        results["attacks"][spec.key] = {
            "title": spec.title, "n": len(y), "preset": meta["preset"], "preset_note": meta["preset_note"],
            "settings": meta["settings"], "attack_seconds": meta.get("seconds"),
            "attack_success": rate(adversarial),
            "median_l2": median(arrays["l2"][adversarial]), "median_linf": median(arrays["linf"][adversarial]),
            "detection": rate(detected),
            "master_only": rate(arrays["label"] == y),
            "reabsnet": rate(pred.label == y),
            "revised_natural_after": rate(pred.natural_after[pred.flagged]),
            "revision_median_l2": median(pred.revision_l2[pred.flagged]),
            "revision_mean_iterations": float(pred.iterations[pred.flagged].float().mean())
            if pred.flagged.any() else None,
            "roc_auc": roc_auc(natural.p_adversarial, pred.p_adversarial[adversarial]),
            "detection_at_fpr_1": detection_at_fpr(natural.p_adversarial, pred.p_adversarial[adversarial], 0.01),
            "detection_at_fpr_5": detection_at_fpr(natural.p_adversarial, pred.p_adversarial[adversarial], 0.05),
        }
    return results, predictions, master_labels


def median(v: torch.Tensor) -> float | None:
    return float(v.median()) if len(v) else None
