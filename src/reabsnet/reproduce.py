"""`reabsnet reproduce`: every stage of the paper, in order, each reused when its verified artifact matches.

data -> init/teacher/master -> DeepFool shards -> guardian -> attack sets -> Tables 1-2, Figure 4 -> report.
Interrupting at any point loses at most the stage (or DeepFool shard) in progress.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from reabsnet import data
from reabsnet.artifacts import read_json
from reabsnet.defense import ReabsNet
from reabsnet.evaluation import report
from reabsnet.evaluation.figure import figure4
from reabsnet.evaluation.paper import ATTACK_SPECS, attack_sets, evaluate
from reabsnet.profiles import Profile
from reabsnet.stages import run_dir
from reabsnet.train import train_master
from reabsnet.train.guardian import train_guardian

log = logging.getLogger(__name__)


def build_reabsnet(profile: Profile, master: torch.nn.Module, guardian: torch.nn.Module) -> ReabsNet:
    m = profile.modifier
    return ReabsNet(master, guardian, threshold=m.threshold, revise_to=m.revise_to, overshoot=m.overshoot,
                    max_iter=m.max_iter).eval()


def build_seconds(out: Path) -> dict[str, float]:
    """How long each stored artifact took to build, whenever it was built (from the sidecars), so the report
    states the full cost of the reproduction even when this run reused everything."""
    def seconds(path: Path, *keys: str) -> float:
        meta = read_json(path)
        for k in keys:
            meta = meta.get(k, {}) if isinstance(meta, dict) else {}
        return round(float(meta), 1) if isinstance(meta, (int, float)) else 0.0

    built = {f"{name} training": seconds(out / f"{name}.json", "training", "seconds")
             for name in ("init", "teacher", "master", "guardian") if (out / f"{name}.json").exists()}
    shards = sorted((out / "guardian-data").glob("*.json"))
    built["DeepFool guardian data (all shards)"] = round(sum(seconds(p, "seconds") for p in shards), 1)
    for p in sorted((out / "attacks").glob("*.json")):
        built[f"attack set {p.stem}"] = seconds(p, "seconds")
    return built


def reproduce(profile: Profile, device: torch.device, home: str | Path | None = None, command: str = "") -> Path:
    """Run (or resume) the whole reproduction; returns the directory holding REPORT.md and results.json."""
    began = time.perf_counter()
    stages: dict[str, float] = {}

    def timed(name: str, fn):
        start = time.perf_counter()
        out = fn()
        stages[name] = round(time.perf_counter() - start, 1)
        log.info("stage %s: %.0f s", name, stages[name])
        return out

    splits = timed("data", lambda: data.load(profile.dataset, home=home))
    master, master_meta = timed("master", lambda: train_master(profile, splits, device, home=home))
    guardian, guardian_meta = timed("guardian", lambda: train_guardian(profile, splits, master, master_meta, device,
                                                                       home=home))
    out = run_dir(splits.name, profile.name, home)
    attack_seconds: dict[str, float] = {}
    sets = timed("attack sets", lambda: attack_sets(profile, splits, master, master_meta, out, attack_seconds))
    defended = build_reabsnet(profile, master, guardian)
    results, predictions = timed("evaluation", lambda: evaluate(defended, splits, sets))
    titles = {s.key: s.title for s in ATTACK_SPECS}
    timed("figure", lambda: figure4(out / "figure4.png", sets, predictions, titles, profile.eval.figure_examples))
    stages["total"] = round(time.perf_counter() - began, 1)
    built = build_seconds(out)
    report.write(out, {
        "dataset": splits.name, "command": command, "profile": dataclasses.asdict(profile),
        "machine": report.machine(), "device": str(device), "wall_seconds": stages["total"],
        "stage_seconds": {**stages, **{k: round(v, 1) for k, v in attack_seconds.items()}},
        "build_seconds": built,
        "master": {k: master_meta.get(k) for k in ("sha256", "metrics", "training", "temperature", "distilled")},
        "guardian": {k: guardian_meta.get(k) for k in ("sha256", "metrics", "training", "train_set", "val_set")},
        "data": {"sha256": splits.sha256, "source": splits.source},
        "results": results,
    })
    return out
