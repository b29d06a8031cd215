"""`reabsnet ablate`: why Table 2's CW cells differ from the paper, one factor at a time from a profile.

Everything runs on fixed images (the first `ablation.n_*` test images of each set) and every cell reports counts
with a Wilson 95% interval, the median revision L2 and the fraction of revised inputs the master then labels
right. The guardian of the profile's own cell and of every guardian factor is trained with `ablation.seeds` seeds,
so each cell has a spread over seeds to compare a factor's effect with.

Factors measured here:
- a. CW strength: the profile's CW presets against `ablation.reference_preset` (default "paper", the reference
  settings: CW-Linf as li_attack.py on the first `n_cw_linf_reference` images; CW-L2 as l2_attack.py, 9 x 10,000
  with abort-early, on the first `n_cw_l2_reference`); each set's median distortion and the master's logit margin at the
  adversarial point.
- b. Guardian sharpness: guardians trained for 1 and 3 epochs (the full schedule, compressed) beside the
  profile's 10, each with its validation accuracy.
- e. Modifier: revise to P(natural) >= 0.9 and 0.99 instead of just across the boundary (0.5).
For every guardian, the adaptive robust accuracy at L-inf 0.1 (joint APGD-DLR, the adaptive evaluation's attack).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from reabsnet import data
from reabsnet.attacks import JointLogits
from reabsnet.data import Splits
from reabsnet.defense import ReabsNet
from reabsnet.evaluation.adaptive import REJECT, apgd_spec, digest
from reabsnet.evaluation.paper import ATTACK_SPECS, PAPER, attack_sets, median
from reabsnet.evaluation.stats import rate
from reabsnet.profiles import Profile
from reabsnet.stages import SHIPPED_MODELS, run_dir
from reabsnet.train import train_master
from reabsnet.train.guardian import train_guardian
from reabsnet.train.loop import predict_logits

log = logging.getLogger(__name__)

GUARDIAN_EPOCHS = (1, 3)         # factor b, beside the profile's own epochs
REVISE_TO = (0.9, 0.99)          # factor e, beside the profile's revise_to
CW_KEYS = ("cw-l2-u", "cw-l2-t", "cw-linf-u", "cw-linf-t")
SPECS = {s.key: s for s in ATTACK_SPECS}


def _sets(profile: Profile, splits: Splits, master, master_meta: dict, out: Path, timings: dict, preset: str,
          sizes: dict[str, int]) -> dict:
    """The attack sets of `sizes` (key -> first N test images) at `preset`, under out/attacks-<preset>/."""
    p = dataclasses.replace(profile, eval=dataclasses.replace(profile.eval, preset=preset))
    sets = {}
    for key, n in sizes.items():
        sets.update(attack_sets(p, splits, master, master_meta, out, timings, specs=[SPECS[key]],
                                subdir=f"attacks-{preset}", n=n))
    return sets


def set_stats(master, arrays: dict) -> dict:
    """An attack set's strength: success, median L2/L-inf of the successful examples, and the master's logit
    margin there (best other logit minus the true class's; > 0 means misclassified, larger = further past)."""
    ok = arrays["success"].bool()
    z = predict_logits(master, arrays["x_adv"])
    y = arrays["y"]
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    return {"success": rate(ok), "median_l2": median(arrays["l2"][ok]), "median_linf": median(arrays["linf"][ok]),
            "median_margin": median((other - true)[ok])}


def defend(defended: ReabsNet, arrays: dict) -> dict:
    """One cell: ReabsNet's rate of correct labels on the set, detection, and what the revision did."""
    pred = defended.predict_batches(arrays["x_adv"])
    y, flagged = arrays["y"], pred.flagged
    correct = pred.label == y
    return {"reabsnet": rate(correct), "detection": rate(flagged[arrays["success"].bool()]),
            "revised_right": rate(correct[flagged]),
            "revision_median_l2": median(pred.revision_l2[flagged])}


def _spread(cells: list[dict], key: str) -> dict:
    """Mean, min and max of a rate over seeds."""
    values = [c[key]["rate"] for c in cells if c[key]["rate"] is not None]
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "seeds": len(values)} \
        if values else {"mean": None, "min": None, "max": None, "seeds": 0}


def ablate(profile: Profile, device: torch.device, home: str | Path | None = None, command: str = "",
           shipped: Path | None = SHIPPED_MODELS) -> tuple[Path, dict]:
    """Run (or resume) every ablation cell; returns (the ablation directory, the results)."""
    began = time.perf_counter()
    cfg = profile.ablation
    splits = data.load(profile.dataset, home=home)
    master, master_meta = train_master(profile, splits, device, home, shipped)
    out = run_dir(splits.name, profile.name, home) / "ablation"
    timings: dict[str, float] = {}
    sizes = {"deepfool": cfg.n_deepfool, "cw-l2-u": cfg.n_cw_l2, "cw-l2-t": cfg.n_cw_l2,
             "cw-linf-u": cfg.n_cw_linf, "cw-linf-t": cfg.n_cw_linf}
    sets = {profile.eval.preset: _sets(profile, splits, master, master_meta, out, timings, profile.eval.preset,
                                       sizes)}
    if cfg.reference_preset != profile.eval.preset:   # factor a: the stronger (reference) settings
        ref_sizes = {"cw-l2-u": cfg.n_cw_l2_reference, "cw-l2-t": cfg.n_cw_l2_reference,
                     "cw-linf-u": cfg.n_cw_linf_reference, "cw-linf-t": cfg.n_cw_linf_reference}
        sets[cfg.reference_preset] = _sets(profile, splits, master, master_meta, out, timings, cfg.reference_preset,
                                           ref_sizes)
        # the profile's sets on the reference sets' images, so the two presets compare on the same images
        sets[f"{profile.eval.preset}, same images"] = {
            k: ({name: v[:n] if v is not None else None for name, v in sets[profile.eval.preset][k][0].items()},
                sets[profile.eval.preset][k][1]) for k, n in ref_sizes.items()}
    # seconds each artifact took to build, whenever it was built (from the sidecars), and each cell's evaluation
    built = {f"attack set {preset}/{k}": meta["seconds"] for preset, group in sets.items()
             for k, (_, meta) in group.items() if not preset.endswith("same images")}
    strength = {preset: {k: {**set_stats(master, arrays), "preset_note": meta["preset_note"]}
                         for k, (arrays, meta) in group.items()} for preset, group in sets.items()}

    m = profile.modifier
    epochs = profile.guardian.train.epochs
    guardians: dict[str, dict] = {}
    for seed in range(profile.seed, profile.seed + cfg.seeds):
        for e in (epochs, *GUARDIAN_EPOCHS):
            g_cfg = dataclasses.replace(profile.guardian, train=dataclasses.replace(profile.guardian.train,
                                                                                    epochs=e))
            variant = dataclasses.replace(profile, seed=seed, guardian=g_cfg)
            name = "guardian" if (seed, e) == (profile.seed, epochs) else f"ablation/guardian-s{seed}-e{e}"
            guardian, g_meta = train_guardian(variant, splits, master, master_meta, device, home, shipped, name)
            built[f"guardian seed {seed}, {e} epochs (training)"] = g_meta["training"]["seconds"]
            guardians[f"s{seed}-e{e}"] = {"seed": seed, "epochs": e, "model": guardian, "meta": g_meta}

    def pipeline(guardian, revise_to: float) -> ReabsNet:
        return ReabsNet(master, guardian, threshold=m.threshold, revise_to=max(revise_to, m.threshold),
                        overshoot=m.overshoot, max_iter=m.max_iter).eval()

    cells = []
    for gkey, g in guardians.items():
        revise_levels = (m.revise_to, *REVISE_TO) if g["epochs"] == epochs else (m.revise_to,)
        for revise_to in revise_levels:
            defended = pipeline(g["model"], revise_to)
            for preset, group in sets.items():
                if preset != profile.eval.preset and revise_to != m.revise_to:
                    continue
                began_c = time.perf_counter()
                row = {"guardian": gkey, "seed": g["seed"], "epochs": g["epochs"], "revise_to": revise_to,
                       "preset": preset, "guardian_val_accuracy": g["meta"]["metrics"]["val_accuracy"],
                       "attacks": {k: defend(defended, arrays) for k, (arrays, _) in group.items()}}
                row["seconds"] = time.perf_counter() - began_c
                built[f"cell {gkey}, revise_to {revise_to:g}, {preset} sets (evaluation)"] = row["seconds"]
                cells.append(row)
                log.info("ablation %s revise_to %g (%s): %s", gkey, revise_to, preset,
                         ", ".join(f"{k} {v['reabsnet']['rate']:.3f}" for k, v in row["attacks"].items()))

    adaptive = {}
    for gkey, g in guardians.items():   # no variant may buy the oblivious table with nothing
        joint = JointLogits(master, g["model"], m.threshold).eval()
        spec = apgd_spec("joint", "linf", 0.1, "dlr", profile.adaptive, REJECT)
        meta = digest(master_meta, g["meta"], extra=("joint", m.threshold))
        arrays, a_meta = attack_sets(profile, splits, joint, meta, out, timings, specs=[spec],
                                     subdir=f"adaptive/{gkey}", n=cfg.n_adaptive)[spec.key]
        built[f"adaptive joint APGD-DLR, guardian {gkey}"] = a_meta["seconds"]
        adaptive[gkey] = rate(pipeline(g["model"], m.revise_to).predict_batches(arrays["x_adv"]).label == arrays["y"])

    results = {"profile": dataclasses.asdict(profile), "command": command, "data_sha256": splits.sha256,
               "master_sha256": master_meta["sha256"], "strength": strength, "cells": cells,
               "adaptive_linf_0.1": adaptive, "paper": PAPER["reabsnet"],
               "summary": summarize(cells, profile), "build_seconds": {k: round(v, 1) for k, v in built.items()},
               "wall_seconds": round(time.perf_counter() - began, 1)}
    return out, results


def summarize(cells: list[dict], profile: Profile) -> list[dict]:
    """One row per (factor setting, attack): the mean and range over seeds of ReabsNet's rate."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["preset"], c["epochs"], c["revise_to"]), []).append(c)
    rows = []
    base = (profile.eval.preset, profile.guardian.train.epochs, profile.modifier.revise_to)
    # the profile's own cell first, then one factor at a time: CW preset, guardian epochs, revise_to
    for (preset, epochs, revise_to), group in sorted(groups.items(), key=lambda kv: (
            kv[0] != base, kv[0][0] != base[0], kv[0][1] != base[1], kv[0][1], kv[0][2])):
        for attack in group[0]["attacks"]:
            per_seed = [c["attacks"][attack] for c in group]
            rows.append({"preset": preset, "epochs": epochs, "revise_to": revise_to, "attack": attack,
                         "reabsnet": _spread(per_seed, "reabsnet"), "revised_right": _spread(per_seed, "revised_right"),
                         "guardian_val_accuracy": [c["guardian_val_accuracy"] for c in group]})
    return rows


def label(row: dict, prof: dict) -> str:
    """A cell's factor setting in words; "profile" when nothing differs from the profile."""
    parts = []
    if row["preset"] != prof["eval"]["preset"]:
        parts.append(f"CW preset {row['preset']}")
    if row["epochs"] != prof["guardian"]["train"]["epochs"]:
        parts.append(f"guardian {row['epochs']} ep")
    if row["revise_to"] != prof["modifier"]["revise_to"]:
        parts.append(f"revise to {row['revise_to']:g}")
    return ", ".join(parts) or "profile"


def _r(r: dict | None) -> str:
    if not r or not r.get("n"):
        return "n/a"
    lo, hi = r["ci95"]
    return f"{r['rate']:.3f} ({r['k']}/{r['n']}; {lo:.2f}-{hi:.2f})"


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def render(results: dict) -> str:
    prof = results["profile"]
    cfg = prof["ablation"]
    lines = [f"# Why Table 2 differs: ablation of the revision (profile `{prof['name']}`)", "",
             f"Command: `{results['command']}`  ", f"Wall time of this run: {results['wall_seconds'] / 60:.1f} min "
             "(artifacts reused from earlier runs count 0; the compute table lists each build)", "",
             f"Fixed images: the first {cfg['n_deepfool']:,} test images for DeepFool, {cfg['n_cw_l2']} for CW-L2 "
             f"U/T, {cfg['n_cw_linf']} for CW-Linf U/T" + (
                 f"; at the `{cfg['reference_preset']}` preset, CW-L2 U/T on the first {cfg['n_cw_l2_reference']} "
                 f"and CW-Linf U/T on the first {cfg['n_cw_linf_reference']}. "
                 if cfg["reference_preset"] != prof["eval"]["preset"] else ". ") +
             f"Guardians: seeds {prof['seed']}-{prof['seed'] + cfg['seeds'] - 1} "
             f"for every guardian setting. A factor's effect is real only where it exceeds the spread over seeds.",
             "", "Factors in this ablation: a (CW strength), b (guardian sharpness, by training epochs), e (the "
             "modifier's target P(natural)). Not yet measured: c (guardian training data), d (guardian "
             "architecture), f (an undistilled master), the modifier's extra steps and an L-inf DeepFool step.",
             "", "## Summary: ReabsNet's rate per factor setting (mean over seeds, min-max)", "",
             "| setting | guardian val. accuracy | " + " | ".join(results["summary_attacks"]) + " |",
             "|---|---|" + "---|" * len(results["summary_attacks"])]
    by_label: dict[str, dict] = {}
    for row in results["summary"]:
        by_label.setdefault(row["label"], {})[row["attack"]] = row
    for name, attacks in by_label.items():
        accs = next(iter(attacks.values()))["guardian_val_accuracy"]
        cells = []
        for a in results["summary_attacks"]:
            s = attacks.get(a, {}).get("reabsnet")
            cells.append("n/a" if not s or s["mean"] is None else
                         f"{s['mean']:.3f} ({s['min']:.3f}-{s['max']:.3f})")
        lines.append(f"| {name} | {', '.join(f'{v:.4f}' for v in accs)} | " + " | ".join(cells) + " |")
    lines.append("| paper | - | " + " | ".join(_f(results["paper"].get(a)) for a in results["summary_attacks"])
                 + " |")
    lines += ["", "![ablation](ablation.png)", "", "## Factor a: attack strength (the master alone)", "",
              "| set | preset | success | median L2 | median L-inf | median logit margin (best other - true) |",
              "|---|---|---|---|---|---|"]
    for group in results["strength"].values():
        for key, s in group.items():
            lines.append(f"| {key} | {s['preset_note']} | {_r(s['success'])} | {_f(s['median_l2'])} | "
                         f"{_f(s['median_linf'])} | {_f(s['median_margin'])} |")
    lines += ["", "## Every cell", "",
              "Rates with counts and 95% Wilson intervals; 'revised right': of the inputs the guardian flagged, the "
              "fraction the master labels right after the revision.", "",
              "| guardian | setting | set | ReabsNet | detection | revised right | median revision L2 |",
              "|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        name = label(c, prof)
        for key, a in c["attacks"].items():
            lines.append(f"| {c['guardian']} | {name} | {key} | {_r(a['reabsnet'])} | {_r(a['detection'])} | "
                         f"{_r(a['revised_right'])} | {_f(a['revision_median_l2'])} |")
    lines += ["", "## Adaptive robust accuracy at L-inf 0.1 (joint APGD-DLR on the first "
              f"{cfg['n_adaptive']} test images), per guardian", "", "| guardian | robust accuracy |", "|---|---|"]
    lines += [f"| {g} | {_r(r)} |" for g, r in results["adaptive_linf_0.1"].items()]
    lines += ["", "## Compute time", "",
              "Seconds each artifact took to build, whenever it was built (the master and the guardians' shared "
              "DeepFool data are not counted here), and each cell's evaluation in this run.", "",
              "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in results["build_seconds"].items()]
    return "\n".join(lines) + "\n"


def write(out: Path, results: dict) -> None:
    """ABLATION.md, ablation.json and ablation.png into `out`, each written atomically."""
    from reabsnet.artifacts import write_bytes_atomic, write_json_atomic
    from reabsnet.evaluation.plots import ablation_bars

    prof = results["profile"]
    for row in results["summary"]:
        row["label"] = label(row, prof)
    results["summary_attacks"] = list(dict.fromkeys(r["attack"] for r in results["summary"]))
    write_json_atomic(out / "ablation.json", results)
    ablation_bars(out / "ablation.png", results["summary"], results["paper"])
    write_bytes_atomic(out / "ABLATION.md", render(results).encode())
