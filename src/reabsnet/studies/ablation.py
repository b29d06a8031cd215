"""`reabsnet ablate`: why Table 2's CW cells differ from the paper, one factor at a time from a profile.

Everything runs on fixed images (the first `ablation.n_*` test images of each set) and every cell reports counts
with a Wilson 95% interval, the median revision L2 and the fraction of revised inputs the master then labels
right. The guardian of the profile's own cell and of every guardian factor is trained with `ablation.seeds` seeds,
so each cell has a spread over seeds to compare a factor's effect with.

Factors (lettered as in ABLATION.md):
- a. CW strength: the profile's CW presets against `ablation.reference_preset` (default "paper", the reference
  settings: CW-Linf as li_attack.py on the first `n_cw_linf_reference` images; CW-L2 as l2_attack.py, 9 x 10,000
  with abort-early, on the first `n_cw_l2_reference`); each set's median distortion and the master's logit margin
  at the adversarial point.
- b. Guardian sharpness: guardians trained for 1 and 3 epochs (the full schedule, compressed) beside the
  profile's, each with its validation accuracy.
- c. Guardian training data: partial perturbations (x + a r, a ~ U(0, 1]) instead of DeepFool's; DeepFool plus
  CW-L2 and CW-Linf examples (untargeted, the profile's preset) of the first `n_cw_train` training images.
- d. Guardian architecture: the master's (Figure 2) as a two-class network; Figure 3 read as one path whose two
  steps are concatenated (`models.guardian`).
- e. Modifier: revise to P(natural) >= 0.9 and 0.99; 1 and 3 extra steps past the boundary; the L-inf form of
  the DeepFool step.
- f. Master: not distilled (the same recipe at T = 1), with its own guardian, trained on its own DeepFool data, and
  attacked on the same images at the profile's preset.
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
from reabsnet.evaluation.paper import ATTACK_SPECS, PAPER, attack_sets, median
from reabsnet.evaluation.stats import rate
from reabsnet.profiles import Profile, with_preset
from reabsnet.rates import cell, command_text, fmt
from reabsnet.security.api import profile_budget
from reabsnet.security.engine import step_spec
from reabsnet.security.networks import digest
from reabsnet.security.suite import Suite
from reabsnet.stages import SHIPPED_MODELS, run_dir
from reabsnet.train import train_master
from reabsnet.train.guardian import train_guardian
from reabsnet.train.loop import predict_logits

log = logging.getLogger(__name__)

CI = ".2f"       # the ablation's tables give the 95% intervals to two decimals

GUARDIAN_EPOCHS = (1, 3)         # factor b, beside the profile's own epochs
REVISE_TO = (0.9, 0.99)          # factor e, beside the profile's revise_to
EXTRA_STEPS = (1, 3)             # factor e, beside the profile's extra steps (0)
CW_KEYS = ("cw-l2-u", "cw-l2-t", "cw-linf-u", "cw-linf-t")
SPECS = {s.key: s for s in ATTACK_SPECS}
FACTORS = ("profile", "a", "b", "c", "d", "e", "f")   # the summary's order
UNDISTILLED = "undistilled master"
UNTRAINED = 0.52  # a guardian below this validation accuracy (chance: 0.5) never learned the task


def guardian_variants(profile: Profile) -> list[dict]:
    """The guardian settings to train, each with `ablation.seeds` seeds: the profile's, then factors b, c, d, f."""
    epochs = profile.guardian.train.epochs
    return ([{"factor": "profile", "setting": "profile", "tag": f"e{epochs}", "epochs": epochs}] +
            [{"factor": "b", "setting": f"guardian {e} ep", "tag": f"e{e}", "epochs": e}
             for e in GUARDIAN_EPOCHS if e != epochs] +
            [{"factor": "c", "setting": "guardian data: partial perturbations", "tag": "partial", "data": "partial"},
             {"factor": "c", "setting": "guardian data: DeepFool + CW", "tag": "deepfool-cw", "cw_data": True},
             {"factor": "d", "setting": "guardian: master's architecture", "tag": "arch-master",
              "architecture": "guardian-master"},
             {"factor": "d", "setting": "guardian: two steps of one path", "tag": "arch-two-step",
              "architecture": "guardian-two-step"},
             {"factor": "f", "setting": UNDISTILLED, "tag": "undistilled", "undistilled": True}])


def modifier_variants(profile: Profile) -> list[dict]:
    """Factor e: the modifier's settings tried with the profile's guardians."""
    m = profile.modifier
    return ([{"factor": "e", "setting": f"revise to {r:g}", "revise_to": r} for r in REVISE_TO if r != m.revise_to] +
            [{"factor": "e", "setting": f"{k} extra step{'s' * (k > 1)}", "extra_steps": k}
             for k in EXTRA_STEPS if k != m.extra_steps] +
            ([{"factor": "e", "setting": "L-inf DeepFool step", "norm": "linf"}] if m.norm != "linf" else []))


def _sets(profile: Profile, splits: Splits, master, master_meta: dict, out: Path, timings: dict, preset: str,
          sizes: dict[str, int], tag: str = "") -> dict:
    """The attack sets of `sizes` (key -> first N test images) at `preset`, under out/attacks-<tag><preset>/."""
    p = with_preset(profile, preset)
    sets = {}
    for key, n in sizes.items():
        sets.update(attack_sets(p, splits, master, master_meta, out, timings, specs=[SPECS[key]],
                                subdir=f"attacks-{tag}{preset}", n=n))
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


def _guardians(profile: Profile, splits: Splits, device, home, shipped, master, master_meta: dict, plain,
               plain_meta: dict, cw_train: dict, built: dict) -> tuple[dict[str, dict], list[str], list[dict]]:
    """Every guardian variant of every seed, trained or reused, seed by seed (so a short run has every variant);
    those not built (only_built) and those that did not train are listed apart."""
    cfg = profile.ablation
    guardians: dict[str, dict] = {}
    missing: list[str] = []
    untrained: list[dict] = []
    for seed in range(profile.seed, profile.seed + cfg.seeds):   # seed by seed, so a short run has every variant
        for v in guardian_variants(profile):
            g_cfg = dataclasses.replace(profile.guardian, train=dataclasses.replace(
                profile.guardian.train, epochs=v.get("epochs", profile.guardian.train.epochs)))
            variant = dataclasses.replace(profile, seed=seed, guardian=g_cfg)
            own = (plain, plain_meta) if v.get("undistilled") else (master, master_meta)
            name = "guardian" if (seed, v["factor"]) == (profile.seed, "profile") else \
                f"ablation/guardian-s{seed}-{v['tag']}"
            trained = train_guardian(
                variant, splits, *own, device, home, shipped, name, architecture=v.get("architecture", "guardian"),
                data=v.get("data", "deepfool"), extra_sets=cw_train if v.get("cw_data") else None,
                data_dir="ablation/guardian-data-undistilled" if v.get("undistilled") else "guardian-data",
                only_built=cfg.only_built)
            if trained is None:
                missing.append(f"seed {seed}, {v['setting']}")
                log.info("ablation: guardian seed %d, %s not built; left out (only_built)", seed, v["setting"])
                continue
            guardian, g_meta = trained
            built[f"guardian seed {seed}, {v['setting']} (training)"] = g_meta["training"]["seconds"]
            if g_meta["metrics"]["val_accuracy"] < UNTRAINED:   # a constant predictor is no guardian to revise by
                untrained.append({"guardian": f"s{seed}-{v['tag']}", "seed": seed, "setting": v["setting"],
                                  "val_accuracy": g_meta["metrics"]["val_accuracy"],
                                  "train_loss": g_meta["training"]["train_loss"]})
                log.info("ablation: guardian seed %d, %s did not train (validation accuracy %.3f); left out", seed,
                         v["setting"], g_meta["metrics"]["val_accuracy"])
                continue
            guardians[f"s{seed}-{v['tag']}"] = {**v, "seed": seed, "model": guardian, "meta": g_meta,
                                                "master": own[0], "master_meta": own[1]}

    return guardians, missing, untrained


def pipeline(g: dict, mod: dict, m) -> ReabsNet:
    """ReabsNet on a guardian variant's master with the modifier `m` (the profile's) changed as `mod` says."""
    return ReabsNet(g["master"], g["model"], threshold=m.threshold,
                    revise_to=max(mod.get("revise_to", m.revise_to), m.threshold), overshoot=m.overshoot,
                    max_iter=m.max_iter, norm=mod.get("norm", m.norm),
                    extra_steps=mod.get("extra_steps", m.extra_steps)).eval()


def _cells(profile: Profile, guardians: dict, sets: dict, plain_sets: dict, built: dict) -> list[dict]:
    """Every cell: each guardian (and, for the profile's, each modifier variant) against each group of sets."""
    cfg, m = profile.ablation, profile.modifier
    cells = []
    for gkey, g in guardians.items():
        mods = [{}] + (modifier_variants(profile) if g["factor"] == "profile" else [])
        for mod in mods:
            defended = pipeline(g, mod, m)
            for set_name, group in (plain_sets if g.get("undistilled") else sets).items():
                if mod and set_name.endswith("same images"):
                    continue
                factor, setting = (mod["factor"], mod["setting"]) if mod else (g["factor"], g["setting"])
                if factor == "profile" and (set_name == cfg.reference_preset or set_name.endswith("same images")):
                    factor = "a"
                began_c = time.perf_counter()
                row = {"guardian": gkey, "seed": g["seed"], "epochs": g.get("epochs", profile.guardian.train.epochs),
                       "factor": factor, "setting": setting, "modifier": mod, "preset": set_name,
                       "guardian_val_accuracy": g["meta"]["metrics"]["val_accuracy"],
                       "attacks": {k: defend(defended, arrays) for k, (arrays, _) in group.items()}}
                row["seconds"] = time.perf_counter() - began_c
                built[f"cell {gkey}, {setting}, {set_name} sets (evaluation)"] = row["seconds"]
                cells.append(row)
                log.info("ablation %s %s (%s): %s", gkey, setting, set_name,
                         ", ".join(f"{k} {v['reabsnet']['rate']:.3f}" for k, v in row["attacks"].items()))

    return cells


def _adaptive(profile: Profile, splits: Splits, guardians: dict, out: Path, timings: dict, built: dict) -> dict:
    """Joint APGD-DLR at L-inf 0.1 against every guardian: no variant may buy the oblivious table with nothing."""
    cfg, m = profile.ablation, profile.modifier
    adaptive = {}
    for gkey, g in guardians.items():   # no variant may buy the oblivious table with nothing
        joint = JointLogits(g["master"], g["model"], m.threshold).eval()
        step = Suite.standard().only("joint-apgd-dlr").steps[0]
        spec = step_spec(step, profile_budget(profile), splits.classes, "linf", 0.1)
        meta = digest(g["master_meta"], g["meta"], extra=("joint", m.threshold))
        arrays, a_meta = attack_sets(profile, splits, joint, meta, out, timings, specs=[spec],
                                     subdir=f"adaptive/{gkey}", n=cfg.n_adaptive)[spec.key]
        built[f"adaptive joint APGD-DLR, guardian {gkey}"] = a_meta["seconds"]
        adaptive[gkey] = rate(pipeline(g, {}, m).predict_batches(arrays["x_adv"]).label == arrays["y"])

    return adaptive


def ablate(profile: Profile, device: torch.device, home: str | Path | None = None, command: str = "",
           shipped: Path | None = SHIPPED_MODELS) -> tuple[Path, dict]:
    """Run (or resume) every ablation cell; returns (the ablation directory, the results)."""
    began = time.perf_counter()
    cfg = profile.ablation
    splits = data.load(profile.dataset, home=home)
    master, master_meta = train_master(profile, splits, device, home, shipped)
    out = run_dir(splits.name, profile.name, home) / "ablation"
    timings: dict[str, float] = {}
    preset = profile.eval.preset
    sizes = {"deepfool": cfg.n_deepfool, "cw-l2-u": cfg.n_cw_l2, "cw-l2-t": cfg.n_cw_l2,
             "cw-linf-u": cfg.n_cw_linf, "cw-linf-t": cfg.n_cw_linf}
    sets = {preset: _sets(profile, splits, master, master_meta, out, timings, preset, sizes)}
    if cfg.reference_preset != preset:   # factor a: the stronger (reference) settings
        ref_sizes = {"cw-l2-u": cfg.n_cw_l2_reference, "cw-l2-t": cfg.n_cw_l2_reference,
                     "cw-linf-u": cfg.n_cw_linf_reference, "cw-linf-t": cfg.n_cw_linf_reference}
        sets[cfg.reference_preset] = _sets(profile, splits, master, master_meta, out, timings, cfg.reference_preset,
                                           ref_sizes)
        # the profile's sets on the reference sets' images, so the two presets compare on the same images: the
        # first images of the profile's sets, or sets of their own where the reference sets are the larger
        larger = {k: n for k, n in ref_sizes.items() if n > sizes[k]}
        own = _sets(profile, splits, master, master_meta, out, timings, preset, larger, tag="reference-images-")
        sets[f"{preset}, same images"] = {
            k: own[k] if k in own else
            ({name: v[:n] if v is not None else None for name, v in sets[preset][k][0].items()},
             {**sets[preset][k][1], "sliced": True}) for k, n in ref_sizes.items()}
    # factor c: CW examples of training images, for the guardian trained on DeepFool + CW
    cw_train = attack_sets(profile, splits, master, master_meta, out, timings,
                           specs=[SPECS["cw-l2-u"], SPECS["cw-linf-u"]], subdir=f"train-attacks-{preset}",
                           n=cfg.n_cw_train, split="train")
    # factor f: the undistilled master, with its own attack sets on the same images
    plain_profile = dataclasses.replace(profile, distill=False)
    plain, plain_meta = train_master(plain_profile, splits, device, home, shipped)
    plain_sets = {f"{preset}, {UNDISTILLED}": _sets(profile, splits, plain, plain_meta, out, timings, preset, sizes,
                                                    tag="undistilled-")}
    # seconds each artifact took to build, whenever it was built (from the sidecars), and each cell's evaluation
    built = {f"attack set {name}/{k}" + (f" ({meta['device']})" if meta.get("device", "cpu") != "cpu" else ""):
             meta.get("compute_seconds", meta["seconds"]) for name, group in {**sets, **plain_sets}.items()
             for k, (_, meta) in group.items() if not meta.get("sliced")}
    built |= {f"attack set {k} on training images (factor c)": meta["seconds"] for k, (_, meta) in cw_train.items()}
    built["undistilled master (training)"] = plain_meta["training"]["seconds"]
    strength = {name: {k: {**set_stats(plain if name in plain_sets else master, arrays),
                           "preset_note": meta["preset_note"], "device": meta.get("device", "cpu"),
                           "seconds": meta.get("compute_seconds", meta["seconds"])}
                       for k, (arrays, meta) in group.items()}
                for name, group in {**sets, **plain_sets}.items()}
    strength_train = {k: {**set_stats(master, arrays), "preset_note": meta["preset_note"],
                          "device": meta.get("device", "cpu"), "seconds": meta["seconds"]}
                      for k, (arrays, meta) in cw_train.items()}

    guardians, missing, untrained = _guardians(profile, splits, device, home, shipped, master, master_meta, plain,
                                               plain_meta, cw_train, built)
    cells = _cells(profile, guardians, sets, plain_sets, built)
    adaptive = _adaptive(profile, splits, guardians, out, timings, built)
    results = {"profile": dataclasses.asdict(profile), "command": command, "data_sha256": splits.sha256,
               "master_sha256": master_meta["sha256"], "undistilled_master": {
                   "sha256": plain_meta["sha256"], "test_accuracy": plain_meta["metrics"]["test_accuracy"],
                   "distilled_test_accuracy": master_meta["metrics"]["test_accuracy"]},
               "strength": strength, "strength_train": strength_train, "cells": cells,
               "guardians": {k: {"factor": g["factor"], "setting": g["setting"], "seed": g["seed"],
                                 "val_accuracy": g["meta"]["metrics"]["val_accuracy"],
                                 "best_epoch": g["meta"]["training"].get("best_epoch"),
                                 "val_by_epoch": g["meta"]["training"].get("val_accuracy"),
                                 "train_set": g["meta"].get("train_set")} for k, g in guardians.items()},
               "adaptive_linf_0.1": adaptive, "paper": PAPER["reabsnet"], "missing_guardians": missing,
               "untrained_guardians": untrained,
               "summary": summarize(cells, profile), "build_seconds": {k: round(v, 1) for k, v in built.items()},
               "wall_seconds": round(time.perf_counter() - began, 1)}
    return out, results


def label(row: dict, prof: dict) -> str:
    """A cell's factor setting in words; "profile" when nothing differs from the profile."""
    parts = [f"CW preset {row['preset'].split(',')[0]}"] if row["preset"].split(",")[0] != prof["eval"]["preset"] \
        else []
    if row["setting"] != "profile":
        parts.append(row["setting"])
    if row["preset"].endswith("same images"):
        parts.append(f"{prof['eval']['preset']} CW on the reference images")
    return ", ".join(parts) or "profile"


def summarize(cells: list[dict], profile: Profile) -> list[dict]:
    """One row per (factor setting, attack): the mean and range over seeds of ReabsNet's rate."""
    prof = dataclasses.asdict(profile)
    groups: dict[str, list[dict]] = {}
    for c in cells:
        groups.setdefault(label(c, prof), []).append(c)
    rows = []
    # the profile's own cell first, then factor by factor (a-f), each in the order its cells were measured
    for name, group in sorted(groups.items(), key=lambda kv: FACTORS.index(kv[1][0]["factor"])):
        for attack in group[0]["attacks"]:
            per_seed = [c["attacks"][attack] for c in group]
            rows.append({"label": name, "factor": group[0]["factor"], "setting": group[0]["setting"],
                         "preset": group[0]["preset"], "attack": attack,
                         "reabsnet": _spread(per_seed, "reabsnet"), "revised_right": _spread(per_seed, "revised_right"),
                         "guardian_val_accuracy": [c["guardian_val_accuracy"] for c in group]})
    return rows


def render(results: dict) -> str:
    prof = results["profile"]
    cfg = prof["ablation"]
    lines = [f"# Why Table 2 differs: ablation of the revision (profile `{prof['name']}`)", "",
             f"Command: `{command_text(results['command'])}`  ",
             f"Wall time of this run: {results['wall_seconds'] / 60:.1f} min "
             "(artifacts reused from earlier runs count 0; the compute table lists each build)", "",
             f"Fixed images: the first {cfg['n_deepfool']:,} test images for DeepFool, {cfg['n_cw_l2']} for CW-L2 "
             f"U/T, {cfg['n_cw_linf']} for CW-Linf U/T" + (
                 f"; at the `{cfg['reference_preset']}` preset, CW-L2 U/T on the first {cfg['n_cw_l2_reference']} "
                 f"and CW-Linf U/T on the first {cfg['n_cw_linf_reference']}. "
                 if cfg["reference_preset"] != prof["eval"]["preset"] else ". ") +
             f"Guardians: seeds {prof['seed']}-{prof['seed'] + cfg['seeds'] - 1} "
             f"for every guardian setting. A factor's effect is real only where it exceeds the spread over seeds.",
             "", "Factors: a (CW strength: the reference presets), b (guardian sharpness, by training epochs), c "
             f"(guardian training data: partial perturbations x + a r, a ~ U(0, 1]; DeepFool plus CW-L2 and CW-Linf "
             f"(untargeted) examples of the first {cfg.get('n_cw_train', 0):,} training images), d (guardian "
             "architecture: the master's, or Figure 3 read as two steps of one path), e (modifier: target P(natural) "
             "0.9/0.99, 1 or 3 extra steps past the boundary, the L-inf DeepFool step), f (master: not distilled, "
             "its own guardian, its own attack sets on the same images, at the profile's preset only). Factors b-d "
             "and f change the guardian and are trained with every seed; e uses the profile's guardians. "
             "Guardian accuracy by training epochs, not stopped at target accuracies (the validation accuracy of "
             "each is listed).",
             "", "## Summary: ReabsNet's rate per factor setting (mean over seeds, min-max)", "",
             "| factor | setting | guardian val. accuracy | " + " | ".join(results["summary_attacks"]) + " |",
             "|---|---|---|" + "---|" * len(results["summary_attacks"])]
    lines += _summary_rows(results, cfg["seeds"])
    lines += ["", "![ablation](ablation.png)", "", "## Factor a: attack strength (the master alone)", "",
              "Each set against the master it attacks (factor f's against the undistilled master; the training-image "
              "sets are factor c's guardian data).", "",
              "| set | images | preset | success | median L2 | median L-inf | median margin (best other - true) | "
              "built on |", "|---|---|---|---|---|---|---|---|"]
    strength = list(results["strength"].items())
    if results.get("strength_train"):
        strength.append(("training images", results["strength_train"]))
    for name, group in strength:
        for key, s in group.items():
            lines.append(f"| {key} | {name} | {s['preset_note']} | {cell(s['success'], CI)} | {fmt(s['median_l2'])} | "
                         f"{fmt(s['median_linf'])} | {fmt(s['median_margin'])} | {s.get('device', 'cpu')} |")
    if results.get("undistilled_master"):
        u = results["undistilled_master"]
        lines += ["", f"Factor f's master (not distilled, same recipe at T = 1): test accuracy "
                  f"{u['test_accuracy']:.4f} (the distilled master: {u['distilled_test_accuracy']:.4f})."]
    lines += _guardian_lines(results)
    lines += ["", "## Every cell", "",
              "Rates with counts and 95% Wilson intervals; 'revised right': of the inputs the guardian flagged, the "
              "fraction the master labels right after the revision.", "",
              "| guardian | setting | set | ReabsNet | detection | revised right | median revision L2 |",
              "|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        name = label(c, prof)
        for key, a in c["attacks"].items():
            lines.append(f"| {c['guardian']} | {name} | {key} | {cell(a['reabsnet'], CI)} | "
                         f"{cell(a['detection'], CI)} | {cell(a['revised_right'], CI)} | "
                         f"{fmt(a['revision_median_l2'])} |")
    lines += ["", "## Adaptive robust accuracy at L-inf 0.1 (joint APGD-DLR on the first "
              f"{cfg['n_adaptive']} test images), per guardian", "", "| guardian | robust accuracy |", "|---|---|"]
    lines += [f"| {g} | {cell(r, CI)} |" for g, r in results["adaptive_linf_0.1"].items()]
    lines += ["", "## Compute time", "",
              "Seconds each artifact took to build, whenever and wherever it was built (a set built in shards: "
              "the shards' seconds summed; the device in brackets where it was a GPU; the master and the "
              "guardians' shared "
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


def _summary_rows(results: dict, seeds: int) -> list[str]:
    """The summary table's rows: ReabsNet's mean rate per factor setting over seeds, with the range."""
    lines: list[str] = []
    by_label: dict[str, dict] = {}
    for row in results["summary"]:
        by_label.setdefault(row["label"], {})[row["attack"]] = row
    for name, attacks in by_label.items():
        accs = next(iter(attacks.values()))["guardian_val_accuracy"]
        cells = []
        for a in results["summary_attacks"]:
            s = attacks.get(a, {}).get("reabsnet")
            fewer = f"; {s['seeds']} seed{'s' * (s['seeds'] > 1)}" if s and s["seeds"] < seeds else ""
            cells.append("n/a" if not s or s["mean"] is None else
                         f"{s['mean']:.3f} ({s['min']:.3f}-{s['max']:.3f}{fewer})")
        factor = next(iter(attacks.values())).get("factor", "")
        lines.append(f"| {factor} | {name} | {', '.join(f'{v:.4f}' for v in accs)} | " + " | ".join(cells) + " |")
    lines.append("| | paper | - | " + " | ".join(fmt(results["paper"].get(a)) for a in results["summary_attacks"])
                 + " |")
    for u in results.get("untrained_guardians", []):
        lines += ["", f"**Did not train, left out:** guardian seed {u['seed']}, {u['setting']}: validation accuracy "
                  f"{u['val_accuracy']:.3f} (chance 0.5; training loss by epoch "
                  f"{', '.join(f'{v:.3f}' for v in u['train_loss'])}; ln 2 = 0.693 is the constant predictor). "
                  "With the guardian's recipe it collapsed to a constant output; no revision can be measured with it."]
    if results.get("missing_guardians"):
        lines += ["", "Not built in this run (`ablation.only_built`), so left out of every row above and below: "
                  + "; ".join(results["missing_guardians"]) + ". Rerunning the command without `only_built` trains "
                  "them; everything built is reused."]
    return lines


def _guardian_lines(results: dict) -> list[str]:
    """Every guardian trained for the ablation, with its validation accuracy by epoch."""
    lines: list[str] = []
    if results.get("guardians"):
        lines += ["", "## Guardians", "", "Every guardian trained for the ablation: validation accuracy (natural vs "
                  "adversarial, on the validation split's DeepFool set of its master; the weights of the best epoch "
                  "are kept) and its training set. A best epoch far before the last one marks a run that collapsed.",
                  "", "| guardian | factor | setting | val. accuracy | best epoch | val. accuracy by epoch | "
                  "training pairs |", "|---|---|---|---|---|---|---|"]
        for k, g in results["guardians"].items():
            t = g.get("train_set") or {}
            kept = t.get("kept", 0) + sum(v.get("kept", 0) for v in t.values() if isinstance(v, dict))
            by_epoch = ", ".join(f"{v:.3f}" for v in g.get("val_by_epoch") or [])
            best = "-" if g.get("best_epoch") is None else g["best_epoch"] + 1
            lines.append(f"| {k} | {g['factor']} | {g['setting']} | {g['val_accuracy']:.4f} | {best} | {by_epoch} | "
                         f"{kept:,} |")
    return lines
