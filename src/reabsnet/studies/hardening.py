"""The hardening experiment: configurations tried against the adaptive suite at every L-inf bound beside the
Madry-style baseline (the paper's ReabsNet; ReabsNet with the adversarially trained baseline as its master; that
master with a guardian trained against joint PGD, which also faces the tuned attack); HARDENING.md."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from reabsnet.artifacts import versions, write_bytes_atomic, write_json_atomic
from reabsnet.data import Splits
from reabsnet.defense import ReabsNet
from reabsnet.profiles import Profile, bound_list
from reabsnet.rates import bound_label, cell, command_text, in_order
from reabsnet.security.api import evaluate_profile, profile_target
from reabsnet.security.networks import variant
from reabsnet.security.report import per_attack_rows, suite_lines


def hardening(profile: Profile, splits: Splits, defended: ReabsNet, master_meta: dict, guardian_meta: dict,
              madry: nn.Module, madry_meta: dict, out: Path, timings: dict,
              hardened: tuple[nn.Module, dict] | None = None) -> dict:
    """Configurations tried against the same adaptive attacks at every L-inf bound, on the first `harden_n` test
    images, beside the Madry-style baseline on those images: the paper's ReabsNet; ReabsNet with the adversarially
    trained baseline as its master (the guardian and modifier unchanged); and, when `hardened` (a guardian trained
    against joint PGD on that master) is given, that master with that guardian, also facing the tuned attack.
    Each also under the reject policy."""
    n = profile.adaptive.harden_n
    bounds = [("linf", e) for e in bound_list(profile.adaptive.harden_bounds)]
    # on the adaptive evaluation's own images the paper's configuration and the baseline are its very sets
    shared = n == profile.adaptive.n
    configs = {"ReabsNet (distilled master, the paper's)": (defended, master_meta, guardian_meta,
                                                            "adaptive" if shared else "adaptive-harden-paper", False),
               "ReabsNet with the Madry-style master": (variant(defended, master=madry), madry_meta, guardian_meta,
                                                        "adaptive-harden-madry-master", False)}
    if hardened is not None:
        guardian, meta = hardened
        configs["Madry-style master, adversarially trained guardian"] = (
            variant(defended, master=madry, guardian=guardian), madry_meta, meta, "adaptive-harden-guardian", True)
    rows = {}
    for name, (net, m_meta, g_meta, subdir, tuned) in configs.items():
        target = profile_target(profile, splits, net, m_meta, g_meta, {"madry": (madry, madry_meta)})
        r = evaluate_profile(profile, splits, target, out, timings, bounds=bounds, n=n, subdir=subdir, sanity=False,
                             tuned=tuned, baseline_subdir="adaptive" if shared else "adaptive-harden-baseline")
        rows[name] = _row(r, tuned)
    return {"n": n, "bounds": [f"linf {e:g}" for _, e in bounds], "configs": rows,
            "max_clean_rejection": profile.adaptive.max_clean_rejection, "lead": _lead(rows, profile)}


def _lead(rows: dict, profile: Profile, margin: float = 0.03) -> dict:
    """The hardening bar at the largest L-inf bound (MNIST: 0.3): a configuration's reject-policy rate at least
    `margin` above the baseline's
    robust accuracy, with at most max_clean_rejection of clean images rejected."""
    verdicts = {}
    for name, row in rows.items():
        top = max(bound_list(profile.adaptive.harden_bounds), default=None)
        if top is None or f"linf {top:g}" not in row["bounds"]:
            continue
        b = row["bounds"][f"linf {top:g}"]
        gap = b["reject_policy_robust"]["rate"] - b["madry_robust"]["rate"]
        rejects = row["reject_policy_rejects_clean"]["rate"]
        verdicts[name] = {"gap": gap, "clean_rejected": rejects,
                          "beats": gap >= margin and rejects <= profile.adaptive.max_clean_rejection}
    return {"margin": margin, "verdicts": verdicts, "any": any(v["beats"] for v in verdicts.values())}


def _row(r: dict, tuned: bool) -> dict:
    """One configuration's row: clean and robust rates under revision and the reject policy, beside the baseline."""
    return {"clean": r["clean"]["reabsnet"], "reject_policy_clean": r["clean"]["selective_correct_or_rejected"],
            "reject_policy_rejects_clean": r["clean"]["selective_rejected"], "madry_clean": r["clean"]["madry"],
            "tuned": tuned,
            "bounds": {b: {"robust": v["reabsnet"], "reject_policy_robust": v["selective"], "madry_robust": v["madry"],
                           "madry_autoattack": v["madry_autoattack"],
                           "square_beyond_gradient": v["square_beyond_gradient"], "per_attack": v["per_attack"]}
                       for b, v in r["bounds"].items()}}


def hardening_lines(h: dict) -> list[str]:
    bounds = ", ".join(bound_label(b) for b in h.get("bounds", []))
    lines = ["", f"### Hardening attempts (the same adaptive attacks at {bounds}, first {h['n']} test images)", "",
             "Correct-only: the pipeline revises flagged inputs and must label them correctly. Correct-or-rejected: "
             "the reject policy (flagged inputs rejected). The Madry-style baseline on the same images faces "
             "AutoAttack's standard ensemble plus APGD-DLR (worst case). A configuration marked *tuned* also "
             "faced an attack tuned to its guardian (joint APGD-DLR with 5x the steps, aiming under guardian "
             "threshold 0.12 instead of 0.5).", "",
             "| configuration | bound | clean: correct / reject policy correct-or-rejected (rejects) | "
             "correct-only robust | correct-or-rejected robust | Madry-style baseline: robust (AutoAttack std) |",
             "|---|---|---|---|---|---|"]
    for name, c in h["configs"].items():
        clean = (f"{c['clean']['rate']:.3f} / {c['reject_policy_clean']['rate']:.3f} "
                 f"({c['reject_policy_rejects_clean']['rate']:.3f})")
        for bound, b in in_order(c["bounds"]):
            lines.append(f"| {name}{' (tuned)' if c.get('tuned') else ''} | {bound_label(bound)} | {clean} | "
                         f"{cell(b['robust'])} | {cell(b['reject_policy_robust'])} | "
                         f"{cell(b['madry_robust'])} ({b['madry_autoattack']['rate']:.3f}) |")
            clean = ""
    lead = h.get("lead")
    if lead and lead["verdicts"]:
        top = bound_label(max(h["bounds"], key=lambda b: float(b.split()[1])))     # where _lead judged
        lines += ["", f"The bar: correct-or-rejected at {top} at least {lead['margin']:.0%} above the "
                  f"baseline's robust accuracy, with at most {h['max_clean_rejection']:.0%} of clean images "
                  "rejected. " + "; ".join(
                      f"{name}: {v['gap']:+.3f} with {v['clean_rejected']:.3f} rejected "
                      f"({'meets it' if v['beats'] else 'does not'})" for name, v in lead["verdicts"].items()) + "."]
    per = [(name, bound, b["per_attack"]) for name, c in h["configs"].items() for bound, b in in_order(c["bounds"])]
    lines += ["", "<details><summary>Per attack, each hardening configuration</summary>", "",
              "| configuration | bound | attack | accuracy | flagged |", "|---|---|---|---|---|"]
    for name, bound, pa in per:
        lines += [f"| {name} |{row[1:]}" for row in per_attack_rows(bound, pa)]
    lines += ["", "</details>"]
    return lines


def render_hardening(results: dict) -> str:
    """HARDENING.md: the hardening attempts on their own (`reabsnet harden`)."""
    a = results["profile"]["adaptive"]
    h = results["hardening"]
    lines = [f"# Hardening attempts: {results['dataset']}, profile `{results['profile']['name']}`", "",
             f"Command: `{command_text(results['command'])}`  ",
             f"Machine: {results['machine'].get('cpu_model', '?')}, "
             f"{results['machine']['cpus']} CPUs, CUDA: {results['machine']['cuda'] or 'none'}  ",
             f"Wall time of this run: {results['wall_seconds'] / 60:.1f} min (reused stages count 0)  ",
             f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}", "",
             "Every configuration faces the steps of the adaptive suite below at each bound (those marked for the "
             "images still standing, only on the images every earlier step left standing):", "",
             *suite_lines({"n": h["n"], "bounds": [b for c in h["configs"].values() for b in c["bounds"].values()],
                           "baselines": ["madry"]}), "",
             "Budgets: APGD "
             f"{a['steps']} steps, {a['restarts']} restart(s); APGD-T {a['targets']} targets x {a['steps']} steps; "
             f"Square {a['queries']} queries per image, {a['pipeline_queries']} on the pipeline's output (each of "
             "those runs the modifier) (auto-attack's standard: 100 steps, 9 targets, 5,000 queries).", ""]
    g = results.get("hardened_guardian")
    if g:
        t = g["training"]
        lines += [f"Adversarially trained guardian: {g['recipe']}; {g['config']['epochs']} epoch(s) on the first "
                  f"{g['config']['train_size'] or 'all'} training images, lr {g['config']['lr']}, best epoch "
                  f"{t['best_epoch'] + 1} by the reject policy's validation score (clean rejection at most "
                  f"{a['max_clean_rejection']:.0%}). Per epoch on {a['harden_val_images']} validation images: "
                  + "; ".join(f"clean rejected {s['clean_rejected']:.3f}, correct-or-rejected under joint PGD "
                              f"{s['correct_or_rejected']:.3f}" for s in t["val_scores"])
                  + f". Training took {t['seconds'] / 60:.1f} min.", ""]
    lines += hardening_lines(h)[2:]
    if results.get("build_seconds"):
        lines += ["", "## Compute time", "", "| artifact | seconds to build |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in results["build_seconds"].items()]
    return "\n".join(lines) + "\n"


def write_hardening(out: Path, results: dict) -> None:
    results = {**results, "versions": versions()}
    write_json_atomic(out / "hardening.json", results)
    write_bytes_atomic(out / "HARDENING.md", render_hardening(results).encode())
