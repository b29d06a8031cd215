"""`reabsnet reproduce`: every stage of the paper, in order, each reused when its verified artifact matches.

data -> init/teacher/master -> DeepFool shards -> guardian -> attack sets -> Madry-style baseline and its attack
sets -> PGD per bound -> Tables 1-3, Figure 4, plots -> report.
Interrupting at any point loses at most the stage (or DeepFool shard) in progress.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from reabsnet import data, distributed, report
from reabsnet.artifacts import read_json
from reabsnet.evaluation import plots
from reabsnet.evaluation.figure import figure4
from reabsnet.evaluation.paper import ATTACK_SPECS, attack_sets, evaluate
from reabsnet.evaluation.table3 import compare, pgd_specs
from reabsnet.pretrained import build_reabsnet
from reabsnet.profiles import Profile
from reabsnet.security.api import evaluate_profile, profile_target
from reabsnet.security.sanity import transfer_check
from reabsnet.stages import SHIPPED_MODELS, SHIPPED_REPORTS, run_dir
from reabsnet.studies.hardening import hardening, write_hardening
from reabsnet.train import train_madry, train_master
from reabsnet.train.guardian import train_guardian
from reabsnet.train.hardened import train_hardened_guardian

log = logging.getLogger(__name__)


def build_seconds(out: Path) -> dict[str, float]:
    """How long each stored artifact took to build, whenever it was built (from the sidecars), so the report
    states the full cost of the reproduction even when this run reused everything."""
    def seconds(path: Path, *keys: str) -> float:
        meta = read_json(path)
        for k in keys:
            meta = meta.get(k, {}) if isinstance(meta, dict) else {}
        return round(float(meta), 1) if isinstance(meta, (int, float)) else 0.0

    built = {f"{name} training": seconds(out / f"{name}.json", "training", "seconds")
             for name in ("init", "teacher", "master", "guardian", "madry", "guardian-hardened")
             if (out / f"{name}.json").exists()}
    shards = sorted((out / "guardian-data").glob("*.json"))
    if shards:   # none when the guardian was shipped
        built["DeepFool guardian data (all shards)"] = round(sum(seconds(p, "seconds") for p in shards), 1)
    if (out / "madry.json").exists():
        built["madry evaluation (PGD-40, PGD-100)"] = seconds(out / "madry.json", "metrics", "seconds")
    for sub in ("attacks", "attacks-madry", "attacks-pgd", "attacks-madry-pgd", "adaptive", "adaptive-harden-paper",
                "adaptive-harden-madry-master", "adaptive-harden-guardian", "adaptive-harden-baseline"):
        for p in sorted((out / sub).glob("*.json")):
            built[f"attack set {sub}/{p.stem}"] = seconds(p, "seconds")
    return built


FIGURES = ("figure4.png", "accuracy-vs-linf.png", "guardian-roc.png", "revision-l2.png", "adaptive-vs-linf.png")
REPORT_FILES = ("REPORT.md", "results.json", *FIGURES)          # what --copy-to copies


def _figures(out: Path, profile: Profile, sets: dict, predictions: dict, titles: dict, results: dict) -> None:
    figure4(out / "figure4.png", sets, predictions, titles, profile.eval.figure_examples)
    plots.accuracy_vs_bound(out / "accuracy-vs-linf.png", results["curves"],
                            "attacks crafted against the master; the baseline attacked directly")
    natural = predictions["natural"]
    adversarial = {k: (titles[k], predictions[k].p_adversarial[sets[k][0]["success"].bool()]) for k in titles}
    plots.roc_curves(out / "guardian-roc.png", natural.p_adversarial, adversarial)
    revised = {k: (titles[k], predictions[k].revision_l2[predictions[k].flagged]) for k in titles}
    attack_l2 = {k: sets[k][0]["l2"][sets[k][0]["success"].bool()] for k in titles}
    plots.revision_histogram(out / "revision-l2.png", natural.revision_l2[natural.flagged], revised, attack_l2)
    if results.get("adaptive", {}).get("bounds"):
        plots.adaptive_vs_bound(out / "adaptive-vs-linf.png", results["adaptive"])
    else:       # not an earlier run's figure beside this run's report
        (out / "adaptive-vs-linf.png").unlink(missing_ok=True)


def reproduce(profile: Profile, device: torch.device, home: str | Path | None = None, command: str = "",
              shipped: Path | None = SHIPPED_MODELS, prebuilt: dict | None = None) -> Path:
    """Run (or resume) the whole reproduction; returns the directory holding REPORT.md and results.json.
    Networks are taken from the `shipped` models where their keys match (None: train every one). `prebuilt`: the
    summary of `prebuild` run just before, whose seconds belong to this run's wall time (its sets are reused here)."""
    stages: dict[str, float] = {}
    if prebuilt:
        stages[f"sets by {prebuilt['workers']} workers (prebuild)"] = prebuilt["seconds"]
    began = time.perf_counter() - sum(stages.values())     # the prebuild's seconds are this run's too

    def timed(name: str, fn):
        start = time.perf_counter()
        out = fn()
        stages[name] = round(time.perf_counter() - start, 1)
        log.info("stage %s: %.0f s", name, stages[name])
        return out

    splits = timed("data", lambda: data.load(profile.dataset, home=home))
    master, master_meta = timed("master", lambda: train_master(profile, splits, device, home, shipped))
    guardian, guardian_meta = timed("guardian", lambda: train_guardian(profile, splits, master, master_meta, device,
                                                                       home, shipped))
    out = run_dir(splits.name, profile.name, home)
    attack_seconds: dict[str, float] = {}
    sets = timed("attack sets", lambda: attack_sets(profile, splits, master, master_meta, out, attack_seconds))
    madry, madry_meta = timed("madry baseline", lambda: train_madry(profile, splits, device, home, shipped))
    madry_sets = timed("attack sets (madry)", lambda: attack_sets(profile, splits, madry, madry_meta, out,
                                                                  attack_seconds, subdir="attacks-madry",
                                                                  baseline=True))
    n_pgd = profile.eval.n_pgd
    pgd_master = timed("pgd per bound (master)", lambda: attack_sets(
        profile, splits, master, master_meta, out, attack_seconds, specs=pgd_specs(), subdir="attacks-pgd", n=n_pgd))
    pgd_madry = timed("pgd per bound (madry)", lambda: attack_sets(
        profile, splits, madry, madry_meta, out, attack_seconds, specs=pgd_specs(), subdir="attacks-madry-pgd",
        n=n_pgd))
    defended = build_reabsnet(profile, master, guardian)
    results: dict = {}
    predictions: dict = {}
    if distributed.is_main():   # Tables 1-3 are rank 0's to report: under torchrun the others would redo them in vain
        results, predictions, master_clean = timed(
            "evaluation", lambda: evaluate(defended, splits, sets, profile.eval.clean_images))
        results.update(timed("table 3", lambda: compare(defended, madry, splits, sets, predictions, master_clean,
                                                        madry_sets, pgd_master, pgd_madry)))
    if profile.adaptive.enabled:
        target = profile_target(profile, splits, defended, master_meta, guardian_meta,
                                {"master": (master, master_meta), "madry": (madry, madry_meta)})
        adaptive = timed("adaptive attacks", lambda: evaluate_profile(profile, splits, target, out, attack_seconds))
        if distributed.is_main():
            pgd = results["curves"]["pgd"]
            adaptive["sanity"]["transfer"] = transfer_check(adaptive, dict(zip(pgd["bounds"], pgd["reabsnet"],
                                                                               strict=True)))
        if profile.adaptive.harden_n:
            hardened = timed("hardened guardian", lambda: train_hardened_guardian(
                profile, splits, madry, madry_meta, guardian, guardian_meta, device, home)
                ) if profile.adaptive.harden_guardian else None
            adaptive["hardening"] = timed("hardening attempts", lambda: hardening(
                profile, splits, defended, master_meta, guardian_meta, madry, madry_meta, out, attack_seconds,
                hardened=hardened))
        results["adaptive"] = adaptive
    titles = {s.key: s.title for s in ATTACK_SPECS}
    if distributed.is_main():    # under torchrun rank 0 writes the figures and the report
        timed("figures", lambda: _figures(out, profile, sets, predictions, titles, results))
    stages["total"] = round(time.perf_counter() - began, 1)
    built = build_seconds(out)
    if distributed.is_main():
        report.write(out, {
            "dataset": splits.name, "command": command, "profile": dataclasses.asdict(profile),
            "machine": report.machine(), "device": str(device), "wall_seconds": stages["total"],
            "stage_seconds": {**stages, **{k: round(v, 1) for k, v in attack_seconds.items()}},
            "build_seconds": built, **({"prebuild": prebuilt} if prebuilt else {}),
            "master": {k: master_meta.get(k) for k in ("sha256", "metrics", "training", "temperature", "distilled")},
            "guardian": {k: guardian_meta.get(k) for k in ("sha256", "metrics", "training", "train_set", "val_set")},
            "madry": {k: madry_meta.get(k) for k in ("sha256", "method", "recipe", "metrics", "training")},
            "data": {"sha256": splits.sha256, "source": splits.source},
            "results": results,
            "reference": report.reference(splits.name, profile.networks, {
                "master": master_meta["sha256"], "guardian": guardian_meta["sha256"], "madry": madry_meta["sha256"]},
                SHIPPED_REPORTS if shipped is not None else None),
        })
    return out


def networks(profile: Profile, device: torch.device, home, shipped: Path | None = SHIPPED_MODELS):
    """(splits, master, master_meta, guardian, guardian_meta, madry, madry_meta), trained or reused as `reproduce`
    takes them (it times them stage by stage instead)."""
    splits = data.load(profile.dataset, home=home)
    master, master_meta = train_master(profile, splits, device, home, shipped)
    guardian, guardian_meta = train_guardian(profile, splits, master, master_meta, device, home, shipped)
    madry, madry_meta = train_madry(profile, splits, device, home, shipped)
    return splits, master, master_meta, guardian, guardian_meta, madry, madry_meta


def harden(profile: Profile, device: torch.device, home: str | Path | None = None, command: str = "",
           shipped: Path | None = SHIPPED_MODELS) -> tuple[Path, dict]:
    """The hardening attempts alone: the networks (trained or reused), the
    adversarially trained guardian, and every configuration against the full adaptive suite at each L-inf bound.
    Writes HARDENING.md and hardening.json next to the reproduction's report; returns (that folder, results)."""
    began = time.perf_counter()
    splits, master, master_meta, guardian, guardian_meta, madry, madry_meta = networks(profile, device, home, shipped)
    out = run_dir(splits.name, profile.name, home)
    hardened = train_hardened_guardian(profile, splits, madry, madry_meta, guardian, guardian_meta, device, home) \
        if profile.adaptive.harden_guardian else None
    attack_seconds: dict[str, float] = {}
    results = hardening(profile, splits, build_reabsnet(profile, master, guardian), master_meta, guardian_meta, madry,
                        madry_meta, out, attack_seconds, hardened=hardened)
    built = {k: v for k, v in build_seconds(out).items() if "harden" in k or k in ("madry training",)}
    results = {"dataset": splits.name, "command": command, "profile": dataclasses.asdict(profile),
               "machine": report.machine(), "device": str(device),
               "wall_seconds": round(time.perf_counter() - began, 1), "build_seconds": built,
               "madry": {k: madry_meta.get(k) for k in ("sha256", "method", "recipe", "metrics")},
               "hardened_guardian": {k: hardened[1].get(k) for k in ("sha256", "recipe", "config", "training",
                                                                     "metrics")} if hardened else None,
               "hardening": results}
    if distributed.is_main():
        write_hardening(out, results)
    return out, results
