"""REPORT.md and results.json: every number beside the paper's, with counts, intervals and settings."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from reabsnet.artifacts import read_json, versions, write_bytes_atomic, write_json_atomic
from reabsnet.evaluation import table3
from reabsnet.evaluation.paper import ATTACK_SPECS, PAPER
from reabsnet.runtime import BF16_MIN_SPEEDUP


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def _images(n: int) -> str:
    """Which test images a clean number is on: the first n (all 10,000 unless eval.clean_images says fewer)."""
    return f"{n:,} test images"


def _cell(r: dict | None) -> str:
    if not r or r.get("n", 0) == 0:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{r['rate']:.3f} ({r['k']}/{r['n']}; {lo:.3f}-{hi:.3f})"


def _paper(v) -> str:
    return "-" if v is None else f"{v:g}"


def _verdict(ours: dict, paper) -> str:
    if paper is None or not ours or ours["n"] == 0:
        return ""
    lo, hi = ours["ci95"]
    if ours["rate"] >= paper:
        return "at or above"
    return "below, within CI" if hi >= paper else "below"


def headline(results: dict) -> dict[str, tuple[dict | float | None, float | None]]:
    """The report's headline cells, name -> (ours, the paper's or None): clean accuracy, Tables 1-3, the PGD curve
    and the adaptive table; what a subset run sets beside the full-scale report on the same networks."""
    r = results["results"]
    cells = {"clean accuracy, master": (r["clean"]["master"], PAPER["clean_master"]),
             "clean accuracy, ReabsNet": (r["clean"]["reabsnet"], PAPER["clean_reabsnet"]),
             "Table 1: natural images passed": (r["natural_pass"], PAPER["natural_pass"])}
    for spec in ATTACK_SPECS:
        a = r["attacks"][spec.key]
        cells[f"Table 1: detection, {spec.title}"] = (a["detection"], PAPER["detection"][spec.key])
    for spec in ATTACK_SPECS:
        a = r["attacks"][spec.key]
        cells[f"Table 2: ReabsNet, {spec.title}"] = (a["reabsnet"], PAPER["reabsnet"][spec.key])
    for eps, row in r.get("table3", {}).items():
        paper = table3.PAPER.get(float(eps), {})
        for who, label in (("reabsnet", "ReabsNet"), ("madry", "Madry-style")):
            for spec in ATTACK_SPECS:
                cells[f"Table 3 eps {float(eps):g}: {label}, {spec.title}"] = (
                    row[spec.key][who], paper.get(who, {}).get(spec.key))
    pgd = r.get("curves", {}).get("pgd", {})
    for i, b in enumerate(pgd.get("bounds", [])):
        if b:
            for who, label in (("reabsnet", "ReabsNet"), ("madry", "Madry-style")):
                cells[f"PGD-40 at L-inf {b:g}: {label}"] = (pgd[who][i], None)
    for name, b in _in_order(r.get("adaptive", {}).get("bounds", {})):
        for who, label in (("reabsnet", "ReabsNet"), ("selective", "reject policy"), ("master", "master alone"),
                           ("madry", "Madry-style")):
            if who in b:
                cells[f"adaptive {_bound(name)}: {label}"] = (b[who], None)
    return cells


def reference(dataset: str, networks: str, shas: dict[str, str], root: Path | None) -> dict | None:
    """The headline cells of the committed full-scale report of the shipped `networks` (root/<dataset>-<networks>/
    results.json), if it exists and was made with the very networks whose SHA-256 `shas` gives (role -> hash)."""
    path = None if root is None or not networks else root / f"{dataset}-{networks}" / "results.json"
    if path is None or not path.exists():
        return None
    full = read_json(path)
    if any(full.get(role, {}).get("sha256") != sha for role, sha in shas.items()):
        return None
    return {"profile": networks, "report": f"docs/results/{dataset}-{networks}/REPORT.md",
            "cells": {name: ours for name, (ours, _) in headline(full).items()},
            "adaptive_budget": _budget(full["results"].get("adaptive"))}


def _budget(a: dict | None) -> str:
    """An adaptive evaluation's attack budgets in one phrase."""
    if not a:
        return "none"
    return (f"APGD {a['steps']} steps x {a['restarts']} restart(s), APGD-T and FAB-T on {a.get('targets', '-')} "
            f"target classes, Square {a.get('queries', '-')} queries ({a.get('pipeline_queries', '-')} through the "
            "modifier)")


def _rate(v: dict | float | None) -> str:
    if isinstance(v, dict):
        return _cell(v)
    return "-" if v is None else f"{v:.3f}"


def _beside(results: dict) -> list[str]:
    """A subset run's headline cells beside the committed full-scale report's, on the same networks."""
    ref = results.get("reference")
    if not ref:
        return []
    theirs = ref["cells"]
    lines = ["## Beside the full-scale report", "",
             f"This run evaluates the shipped `{ref['profile']}` networks (the same SHA-256 as the committed "
             f"full-scale report, `{ref['report']}`) on the first test images only: the sizes are in each row's "
             "counts and in the settings section. Cells the full report has and this run does not are left out. "
             f"Adaptive budgets, this run: {_budget(results['results'].get('adaptive'))}; the full report: "
             f"{ref.get('adaptive_budget', 'see it')}. Smaller budgets find fewer adversarial examples, so this "
             "run's adaptive rates can read higher than the full budgets would on the same images.", "",
             "| cell | this run | full-scale report | paper |", "|---|---|---|---|"]
    for name, (ours, paper) in headline(results).items():
        if name in theirs:
            lines.append(f"| {name} | {_rate(ours)} | {_rate(theirs[name])} | {_paper(paper)} |")
    return lines + [""]


def render(results: dict) -> str:
    r, prof = results["results"], results["profile"]
    lines = [f"# ReabsNet reproduction: {results['dataset']}, profile `{prof['name']}`", ""]
    lines += [f"Command: `{results['command']}`  ", f"Machine: {results['machine'].get('cpu_model', '?')}, "
              f"{results['machine']['cpus']} CPUs, CUDA: {results['machine']['cuda'] or 'none'}  ",
              f"Wall time of this run: {results['wall_seconds'] / 60:.1f} min (stages reused from earlier runs "
              f"count 0; the compute-time table gives each artifact's build time)  ",
              f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}", ""]
    lines += ["Every rate is given as rate (count/n; 95% Wilson interval), beside the paper's value. Tables 1-3 "
              "use the paper's threat model (attacks crafted against the master; the Madry-style baseline attacked "
              "directly); the section on adaptive attacks, if present, uses an attacker who also knows the guardian "
              "and the modifier. See the settings section for what differs from the paper.", ""]
    lines += _beside(results)
    lines += [f"## Clean accuracy ({_images(r['clean']['master']['n'])})", "", "| | ours | paper |", "|---|---|---|",
              f"| master | {_cell(r['clean']['master'])} | {PAPER['clean_master']} |",
              f"| ReabsNet | {_cell(r['clean']['reabsnet'])} | {PAPER['clean_reabsnet']} |", ""]
    lines += ["## Table 1: guardian detection rate", "",
              "Fraction of the adversarial examples (attack succeeded against the master) that the guardian flags; "
              "`natural` is the fraction of natural test images it passes as natural.", "",
              "| attack | ours | paper | vs paper | ROC-AUC | detection at 1% / 5% FPR |", "|---|---|---|---|---|---|",
              f"| natural (non-attack) | {_cell(r['natural_pass'])} | {PAPER['natural_pass']} | "
              f"{_verdict(r['natural_pass'], PAPER['natural_pass'])} | | |"]
    for spec in ATTACK_SPECS:
        a = r["attacks"][spec.key]
        p = PAPER["detection"][spec.key]
        lines.append(f"| {spec.title} | {_cell(a['detection'])} | {_paper(p)} | {_verdict(a['detection'], p)} | "
                     f"{_fmt(a['roc_auc'], '.4f')} | {_fmt(a['detection_at_fpr_1'])} / "
                     f"{_fmt(a['detection_at_fpr_5'])} |")
    lines += ["", "## Table 2: defense success rate (classified correctly)", "",
              "| attack | n | attack success vs master | master only | paper | ReabsNet | paper | vs paper |",
              "|---|---|---|---|---|---|---|---|"]
    for spec in ATTACK_SPECS:
        a = r["attacks"][spec.key]
        ours, paper = a["reabsnet"], PAPER["reabsnet"][spec.key]
        lines.append(f"| {spec.title} | {a['n']} | {_cell(a['attack_success'])} | {_cell(a['master_only'])} | "
                     f"{_paper(PAPER['master_only'][spec.key])} | {_cell(ours)} | {_paper(paper)} | "
                     f"{_verdict(ours, paper)} |")
    lines += ["", "## The modifier", "", "| input | revised | revised inputs the guardian then calls natural | "
              "median L2 of the revision | mean DeepFool iterations |", "|---|---|---|---|---|",
              f"| natural test images | {r['natural_revision']['revised']} | | "
              f"{_fmt(r['natural_revision']['median_l2'])} | |"]
    for spec in ATTACK_SPECS:
        a = r["attacks"][spec.key]
        lines.append(f"| {spec.title} | {a['revised_natural_after']['n']} of {a['n']} | "
                     f"{_cell(a['revised_natural_after'])} | {_fmt(a['revision_median_l2'])} | "
                     f"{_fmt(a['revision_mean_iterations'])} |")
    lines += _baseline(results) + _table3(r) + _adaptive(r)
    lines += ["", "## Figure 4", "", "![Figure 4](figure4.png)", ""]
    lines += ["## Accuracy against the L-inf bound", "",
              "Attacks of Table 2 crafted against the master (ReabsNet and the master) or against the baseline "
              "(white-box), with the paper's rule applied at every bound; PGD run once per bound.", "",
              "![accuracy against the L-inf bound](accuracy-vs-linf.png)", "",
              *(["## Robust accuracy under the adaptive attacks", "",
                 "![robust accuracy against the L-inf bound](adaptive-vs-linf.png)", ""] if r.get("adaptive") else []),
              "## Guardian ROC per attack", "", "![guardian ROC](guardian-roc.png)", "",
              "## What the modifier does", "", "![revision sizes](revision-l2.png)", ""]
    lines += ["## Settings, and where they differ from the paper", ""]
    lines += [f"- Master: distilled at T={prof['temperature']:g}, {prof['master']['epochs']} epochs "
              f"(SGD lr {prof['master']['lr']}, batch {prof['master']['batch_size']}, cosine schedule).",
              f"- Guardian: our two-path design (Figure 3 gives no layers; see `reabsnet.models.guardian`), trained "
              f"{prof['guardian']['train']['epochs']} epochs on DeepFool examples of "
              f"{results['guardian']['train_set']['images']:,} training images "
              f"({results['guardian']['train_set']['kept']:,} kept: DeepFool failed on "
              f"{results['guardian']['train_set']['deepfool_failed']}, the master already misclassified "
              f"{results['guardian']['train_set']['already_misclassified']}); paper: all 55,000.",
              f"- Modifier: two-class DeepFool toward natural; flag when P(adversarial) > "
              f"{prof['modifier']['threshold']}, "
              f"revise until P(natural) >= {prof['modifier']['revise_to']}; overshoot "
              f"{prof['modifier']['overshoot']}, at most {prof['modifier']['max_iter']} iterations."]
    for spec in ATTACK_SPECS:
        a = r["attacks"][spec.key]
        lines.append(f"- {spec.title}: first {a['n']} test images, preset `{a['preset']}` ({a['preset_note']}).")
    lines += ["", "## Compute time", "", "Seconds each stored artifact took to build (whenever it was built), then the "
              "wall time of this run's stages (reused stages take about 0).", "", "| artifact | seconds to build |",
              "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in results.get("build_seconds", {}).items()]
    lines += [f"| **sum** | **{sum(results.get('build_seconds', {}).values()):.0f}** |"]
    lines += ["", "| stage (this run) | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in results["stage_seconds"].items()]
    if pre := results.get("prebuild"):
        stopped = pre["stopped"]
        lines += ["", f"The attack sets were first built by {pre['workers']} processes sharing the device "
                  f"(`--workers`, `reabsnet.prebuild`): {len(pre['tasks'])} of {len(pre['tasks']) + len(stopped)} "
                  f"tasks finished in {pre['seconds']:.0f} s" + (f"; stopped at the deadline and finished by the "
                  f"stages above: {', '.join(stopped)}." if stopped else ".")]
    return "\n".join(lines) + "\n"


def _baseline(results: dict) -> list[str]:
    m = results.get("madry")
    if not m:
        return []
    e, b = m["metrics"], results["profile"]["baseline"]
    clean_images = e.get("clean_images", 10_000)      # sidecars older than check_size measured all 10,000
    return ["", "## The Madry-style baseline", "",
            f"Madry et al.'s released weights are TensorFlow checkpoints, not shipped with this package, so this is "
            f"our own training of the MNIST challenge network. Recipe (`{m['method']}`): {m['recipe']}. The epoch "
            f"with the best PGD-{b['val_steps']} accuracy on {b['val_images']} validation images is kept "
            f"(epoch {m['training']['best_epoch'] + 1}).", "",
            "| | ours | Madry et al.'s model |", "|---|---|---|",
            f"| clean accuracy ({_images(clean_images)}) | {e['clean_accuracy']:.4f} | "
            f"0.9853 (challenge model) |",
            f"| PGD-40, step 0.01, eps {e['eps']} | {_cell(e['pgd40'])} | 0.932 (their Table: PGD-40, 1 start) |",
            f"| PGD-100 x{e['restarts']} restarts, cross-entropy | {_cell(e['pgd100_ce'])} | |",
            f"| PGD-100 x{e['restarts']} restarts, margin loss | {_cell(e['pgd100_margin'])} | |",
            f"| worst case of the three | {_cell(e['worst'])} | about 0.885 (AutoAttack); 0.880 (challenge "
            f"leaderboard's best white-box attack) |"]


def _table3(r: dict) -> list[str]:
    if "table3" not in r:
        return []
    lines = ["", "## Table 3: defense success rate under an L-inf bound", "",
             "An adversarial example farther than eps (L-inf) from its original counts as a failed attack and the "
             "original is classified instead (paper section 4.3.3). ReabsNet and the master see the examples crafted "
             "against the master (as in Table 2); the Madry-style baseline is attacked directly, white-box, with "
             "the same attacks and settings. The paper's Madry column is Madry et al.'s released network, ours is "
             "our own training of it (section above).", ""]
    for eps, row in r["table3"].items():
        paper = table3.PAPER[float(eps)]
        if float(eps) >= 0.5:
            lines += [f"### eps {eps}", "", "Read this column with care: at eps >= 0.5 any image can be turned into a "
                      "flat grey one, so no classifier can beat about 11% (the commonest digit) against an attacker "
                      "who uses the whole bound. These numbers measure attacks that ignore the guardian (minimal-"
                      "perturbation attacks on the master), not robustness at 0.6.", ""]
        else:
            lines += [f"### eps {eps}", ""]
        lines += ["| attack | ReabsNet | paper | master alone | Madry-style baseline | paper |",
                  "|---|---|---|---|---|---|"]
        for spec in ATTACK_SPECS:
            c = row[spec.key]
            lines.append(f"| {spec.title} | {_cell(c['reabsnet'])} | {_paper(paper['reabsnet'][spec.key])} | "
                         f"{_cell(c['master'])} | {_cell(c['madry'])} | {_paper(paper['madry'][spec.key])} |")
        lines.append("")
    pgd = r["curves"].get("pgd", {})
    if pgd.get("bounds"):
        lines += [f"PGD (not in the paper), 40 steps, margin loss, first {pgd['n']} test images; accuracy:", "",
                  "| eps | " + " | ".join(f"{b:g}" for b in pgd["bounds"]) + " |",
                  "|---|" + "---|" * len(pgd["bounds"])]
        for key, label in (("master", "master alone, crafted on it"), ("reabsnet", "ReabsNet, crafted on the master"),
                           ("madry", "Madry-style baseline, crafted on it")):
            lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in pgd[key]) + " |")
    return lines


def _adaptive(r: dict) -> list[str]:
    a = r.get("adaptive")
    return adaptive_section(a) if a else []


# the adaptive table's columns, in order, where the results hold them: (key in each bound, header, key in "clean")
ADAPTIVE_COLUMNS = (("reabsnet", "ReabsNet (worst case)", "reabsnet"),
                    ("selective", "reject policy: correct or rejected", "selective_correct_or_rejected"),
                    ("master", "master alone (worst case)", "master"),
                    ("master_autoattack", "master alone, AutoAttack standard only", None),
                    ("madry", "Madry-style baseline (worst case)", "madry"),
                    ("madry_autoattack", "Madry-style baseline, AutoAttack standard only", None))


def adaptive_section(a: dict) -> list[str]:
    """The report's section on the adaptive attacks, from `adaptive_evaluation`'s results (also those of
    `evaluate_adaptive` on a user's model: a plain classifier's results hold the master's columns only)."""
    c = a["clean"]
    if "reabsnet" not in c:
        return _classifier_section(a)
    lines = ["", "## Adaptive attacks (white-box; the paper's section 5 leaves this open)", "",
             "Threat models. *Oblivious* (the paper's, Tables 1-3): the attacker knows the master only. *White-box "
             "adaptive* (this section): the attacker knows the master, the guardian and the modifier, with their "
             "weights, and wins when the pipeline's final label is wrong for an input within the bound. Per bound "
             "every attack below runs and an image counts as robust only if the pipeline is right under all of "
             "them (worst case per example): joint APGD-CE and APGD-DLR on the master and guardian together "
             "(evade the guardian, fool the master; CE sees the master's logits / T), BPDA APGD-CE and APGD-DLR "
             "through the modifier (the revision as identity on the backward pass), APGD-DLR through the "
             "modifier's DeepFool steps unrolled (exact gradients), and under L2 also joint CW-L2 targeted, cut at the "
             f"bound (on the first {a.get('n_cw', a['n'])} images only: it is the slowest). Then, as in the "
             "AutoAttack protocol, each only on the images every earlier attack left standing: joint APGD-T "
             "(targeted DLR toward the top other classes), Selective and Orthogonal PGD (Bryniarski et al. 2022: "
             "the master's loss and the guardian's score as two constraints; joint, BPDA and unrolled), logit "
             "matching (Tramer et al. 2020: both networks' outputs made those of the nearest natural validation "
             "image of another class), Square on the joint score (gradient-free; the attacker "
             "wins when the label is wrong and the guardian does not flag) and Square on the pipeline's output (the "
             "modifier included). The master alone and the Madry-style baseline face AutoAttack's standard ensemble "
             "(APGD-CE, then APGD-T, FAB-T and Square on its survivors) and APGD-DLR. "
             f"First {a['n']} test images. Budgets: APGD {a['steps']} steps, {a['restarts']} restart(s); APGD-T "
             f"{a.get('targets', '-')} target classes x {a['steps']} steps, FAB-T the same; Square "
             f"{a.get('queries', '-')} queries "
             f"per image on the joint score and the baselines, {a.get('pipeline_queries', '-')} on the pipeline's "
             "output (p_init 0.8; auto-attack's standard: 5,000).", "",
             "*Reject policy* is the selective-classification alternative the paper argues against: flagged inputs "
             "are rejected instead of revised; an outcome is acceptable when the input is rejected or classified "
             "correctly (against the joint attacks that policy faces exactly the attacks above).", "",
             *_bound_table(a)]
    lines += _fixed_fpr(a)
    lines += binarization_lines(a.get("binarization"))
    if a.get("baseline_precision"):
        lines += ["", f"The Madry-style baseline's APGD-CE, APGD-DLR, APGD-T and Square searched in "
                  f"{a['baseline_precision']} (`adaptive.precision`; FAB-T and every attack on the defense in "
                  "float32); every success they claimed was confirmed, and every example judged, by the float32 "
                  "network." + (f" Chosen by `auto`: its pass timed {a['bf16_speedup']:g}x faster than float32's here."
                                if a.get("bf16_speedup") else "")]
    elif a.get("bf16_speedup"):
        lines += ["", f"Every attack searched in float32: `adaptive.precision=auto` timed the baseline's bfloat16 pass "
                  f"at {a['bf16_speedup']:g}x float32's here, below the {BF16_MIN_SPEEDUP:g}x it asks for."]
    if a.get("nested"):
        lines += ["", "Bounds are nested: within a norm, at each larger bound every attack ran only on the images the "
                  "smaller bound left standing (an example within the smaller ball lies within the larger one, so an "
                  "image broken there stays broken); its rows below count the images each attack ran on."]
    lines += ["", "Per attack (accuracy of the network it targets; for the pipeline's attacks also the fraction the "
              "guardian flags). The survivor attacks (APGD-T onwards) ran only on the images still standing; "
              "their row counts those and how many each broke (for the pipeline: under revision / under the reject "
              "policy):", "", "| bound | attack | accuracy | flagged |", "|---|---|---|---|"]
    for name, b in _in_order(a["bounds"]):
        lines += _per_attack_rows(name, b["per_attack"])
    s = a.get("sanity")
    if not s:
        return lines
    mono, unb, loss = s["monotone"], s["unbounded"], s["loss_increases"]
    it = s.get("iterative_beats_single_step")
    lines += ["", "Sanity checks (Carlini et al. 2019, \"On evaluating adversarial robustness\"):", "",
              f"- accuracy falls as the bound grows: L-inf {', '.join(f'{v:.3f}' for v in mono['linf'])}"
              + (f"; L2 {', '.join(f'{v:.3f}' for v in mono['l2'])}" if mono["l2"] else "")
              + f": {'holds' if mono['holds'] else 'FAILS'}.",
              f"- unbounded attack (joint APGD-CE with L-inf eps {unb.get('eps', 1):g}, the whole box): pipeline "
              f"wrong on "
              f"{_cell(unb['pipeline_wrong'])}" + (f"; unbounded joint CW-L2 targeted succeeds on "
                                                   f"{_cell(unb['cw_l2_unbounded_success'])}."
                                                   if unb.get("cw_l2_unbounded_success") else "."),
              *([f"- iterative beats single-step at {_bound(it.get('bound', 'linf 0.3'))}: one step leaves accuracy "
                 f"{_cell(it['single_step'])}, the iterative worst case {_cell(it['iterative'])}: "
                 f"{'holds' if it['holds'] else 'FAILS'}."] if it else []),
              f"- the attack loss goes up (joint APGD-CE at {_bound(loss.get('bound', 'linf 0.1'))}, "
              f"{loss['images']} images): mean gain "
              f"{_fmt(loss['gain_after_first_step'])} after one step, {_fmt(loss['gain_at_end'])} at the end: "
              f"{'holds' if loss['holds'] else 'FAILS'}."]
    beyond = {name: b["square_beyond_gradient"] for name, b in _in_order(a["bounds"]) if "square_beyond_gradient" in b}
    if beyond:
        wins = {name: {k: v for k, v in counts.items() if v} for name, counts in beyond.items()}
        wins = {name: w for name, w in wins.items() if w}
        detail = "; ".join(f"{_bound(name)}: " + ", ".join(f"{k} {v}" for k, v in w.items())
                           for name, w in wins.items())
        lines.append("- gradient-free beats gradient? Images Square broke that every gradient attack left standing "
                     "(gradient masking where not zero): "
                     + (detail + ": gradient masking" if wins else "none at any bound: holds") + ".")
    t = s.get("transfer")
    if t:
        rows = "; ".join(f"{k}: transfer {v['transfer_from_master']:.3f}, white-box {v['adaptive']:.3f}"
                         for k, v in t["rows"].items())
        lines.append(f"- white-box beats transfer from the master (PGD crafted on the master alone, from the "
                     f"accuracy-vs-bound curve): {rows}: {'holds' if t['holds'] else 'FAILS'}.")
    h = a.get("hardening")
    if h:
        lines += _hardening(h)
    return lines


def _fixed_fpr(a: dict) -> list[str]:
    """The reject policy at the paper's threshold and at thresholds calibrated to 1%, 5% and 50% clean false
    positives."""
    rows = [(name, b["fixed_fpr"]) for name, b in _in_order(a["bounds"]) if b.get("fixed_fpr")]
    if not rows:
        return []
    c = a.get("calibration")
    where = (f"on the {c['val_images']:,} natural validation images (which the guardian flags "
             f"{c['flagged_at_0.5']['rate']:.4f} of at 0.5)" if c else "(no validation split: 0.5 only)")
    lines = ["", "The reject policy at other detection thresholds, calibrated " + where + ". *Rejection is an "
             "error*: robust only if the clean input is accepted and classified correctly and every attack's example "
             "is correct or rejected (Tramer 2022). *SR*: of the images the policy gets right clean, the share some "
             "attack's example fools unflagged (Bryniarski et al. 2022's SR@FPR). *ROC-AUC*: the guardian between "
             "the clean images and each image's final adversarial example (the wrong one it scores lowest). Every "
             "attack above aims under 0.5; at each calibrated threshold joint APGD-CE and Orthogonal PGD run again, "
             "aiming under it, on the images the policy still holds there (rows `joint-fpr...` below), and every "
             "example of every attack counts at every threshold.", "",
             "| bound | threshold (clean FPR) | clean rejected | correct or rejected | robust, rejection is an error | "
             "SR | ROC-AUC |", "|---|---|---|---|---|---|---|"]
    for name, f in rows:
        auc = f"{f['roc_auc_final_examples']:.3f}" if f.get("roc_auc_final_examples") is not None else "-"
        for key, v in f.items():
            if key == "roc_auc_final_examples":
                continue
            label = f"{v['threshold']:.4g}" + (f" ({key.split()[1]})" if key.startswith("fpr") else " (the paper's)")
            sr = _cell(v["attack_success"]) if v.get("attack_success") else "-"
            lines.append(f"| {_bound(name)} | {label} | {v['clean_rejected']['rate']:.3f} | "
                         f"{_cell(v['correct_or_rejected'])} | {_cell(v['robust_rejection_is_error'])} | {sr} | "
                         f"{auc} |")
    return lines


def _bound_table(a: dict) -> list[str]:
    """The robust-accuracy table: a row per bound (and clean), a column per network or policy the results hold."""
    c = a["clean"]
    first = next(iter(a["bounds"].values()), {})
    columns = [(key, header, clean) for key, header, clean in ADAPTIVE_COLUMNS if key in first or key in c]

    def clean_cell(key: str | None) -> str:
        if key is None or key not in c:
            return ""
        rejects = f" (rejects {c['selective_rejected']['rate']:.3f})" if key.startswith("selective") else ""
        return _cell(c[key]) + rejects

    lines = ["| bound | " + " | ".join(h for _, h, _ in columns) + " |", "|---|" + "---|" * len(columns),
             "| none (clean) | " + " | ".join(clean_cell(k) for _, _, k in columns) + " |"]
    for name, b in _in_order(a["bounds"]):
        lines.append(f"| {_bound(name)} | " + " | ".join(_cell(b[k]) if k in b else "-" for k, _, _ in columns)
                     + " |")
    return lines


def _classifier_section(a: dict) -> list[str]:
    """The adaptive section of a plain classifier (no guardian): AutoAttack's standard ensemble and APGD-DLR."""
    return ["", "## Adaptive attacks on the classifier alone", "",
            "AutoAttack's standard ensemble (APGD-CE, then APGD-T, FAB-T and Square on the images it left standing) "
            "and APGD-DLR on every image; an image is robust only if the classifier is right under all of them "
            f"(worst case). First {a['n']} images. Budgets: APGD {a['steps']} steps, {a['restarts']} restart(s); "
            f"APGD-T and FAB-T {a['targets']} target classes; Square {a['queries']} queries.", "",
            *_bound_table(a), "", "| bound | attack | accuracy | flagged |", "|---|---|---|---|",
            *[row for name, b in _in_order(a["bounds"]) for row in _per_attack_rows(name, b["per_attack"])],
            *binarization_lines(a.get("binarization"))]


TEST_NAMES = {"classifier": "classifier", "reject": "reject policy", "reject-inverted": "reject policy, inverted "
              "guardian (control)", "revise": "ReabsNet (revision)"}


def binarization_lines(b: dict | None) -> list[str]:
    """The binarization test's table (evaluation.binarization): per bound, defense and test, each attack's success
    rate on the binary tasks whose example is known to exist, with its pass/FAIL verdict."""
    if not b:
        return []
    from reabsnet.evaluation.binarization import PASS_RATE

    lines = ["", "Binarization test (Zimmermann, Brendel, Tramer and Carlini 2022): per image, a linear readout on the "
             "defended model's frozen features separates points inside the bound from points on it, so an "
             "adversarial example within the bound is known to exist; each attack of the suite runs unchanged on "
             "the model with that readout. Attack success rate (ASR) over the images whose task could be built; "
             f"an attack passes at ASR >= {PASS_RATE:g}, and one that fails cannot be trusted to show robustness on "
             "that defense. 'random' counts the images where one of 100 random points on the bound already finds "
             "the example (the task is then easy). 'any' is the worst case per image over the attacks.", "",
             "| bound | defense | test | images | random | ASR per attack |", "|---|---|---|---|---|---|"]
    for name, entry in _in_order({k: v for k, v in b.items()}):
        for defense, tests in entry["tests"].items():
            for test, r in tests.items():
                cells = "; ".join(f"{attack} {v['rate']:.2f} ({v['success']}/{v['n']}) "
                                  f"{'pass' if v['passes'] else 'FAIL'}" for attack, v in r["attacks"].items()
                                  if v["n"]) or "no task could be built"
                lines.append(f"| {_bound(name)} | {defense} | {TEST_NAMES.get(test, test)} | {r['usable']} of "
                             f"{r['images']} | {r['random_success']} | {cells} |")
    return lines


def _in_order(bounds: dict) -> list[tuple[str, dict]]:
    """Bounds as the evaluation runs them, L-inf then L2, each ascending ("linf 0.1": ...; results.json sorts its
    keys, so a report rendered from it would otherwise list L2 first)."""
    def key(item):
        norm, eps = item[0].split()
        return norm != "linf", float(eps)
    return sorted(bounds.items(), key=key)


def _bound(name: str) -> str:
    return name.replace("linf", "L-inf").replace("l2", "L2")


def _per_attack_rows(name: str, per_attack: dict) -> list[str]:
    rows = []
    for key, v in per_attack.items():
        if "attacked" in v:
            broke = " / ".join(f"{n}" for n in v["broke"].values())
            flagged = f"{v['flagged']['rate']:.3f}" if v.get("flagged") else ""
            rows.append(f"| {name} | {key} | on {v['attacked']} standing: broke {broke} | {flagged} |")
        else:
            acc = v.get("reabsnet") or v.get("master") or v.get("madry")
            flagged = f"{v['flagged']['rate']:.3f}" if "flagged" in v else ""
            rows.append(f"| {name} | {key} | {_cell(acc)} | {flagged} |")
    return rows


def _hardening(h: dict) -> list[str]:
    bounds = ", ".join(_bound(b) for b in h.get("bounds", []))
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
        for bound, b in _in_order(c["bounds"]):
            lines.append(f"| {name}{' (tuned)' if c.get('tuned') else ''} | {_bound(bound)} | {clean} | "
                         f"{_cell(b['robust'])} | {_cell(b['reject_policy_robust'])} | "
                         f"{_cell(b['madry_robust'])} ({b['madry_autoattack']['rate']:.3f}) |")
            clean = ""
    lead = h.get("lead")
    if lead and lead["verdicts"]:
        lines += ["", f"The bar: correct-or-rejected at L-inf 0.3 at least {lead['margin']:.0%} above the "
                  f"baseline's robust accuracy, with at most {h['max_clean_rejection']:.0%} of clean images "
                  "rejected. " + "; ".join(
                      f"{name}: {v['gap']:+.3f} with {v['clean_rejected']:.3f} rejected "
                      f"({'meets it' if v['beats'] else 'does not'})" for name, v in lead["verdicts"].items()) + "."]
    per = [(name, bound, b["per_attack"]) for name, c in h["configs"].items() for bound, b in _in_order(c["bounds"])]
    lines += ["", "<details><summary>Per attack, each hardening configuration</summary>", "",
              "| configuration | bound | attack | accuracy | flagged |", "|---|---|---|---|---|"]
    for name, bound, pa in per:
        lines += [f"| {name} |{row[1:]}" for row in _per_attack_rows(bound, pa)]
    lines += ["", "</details>"]
    return lines


def _fmt(v: float | None, spec: str = ".3f") -> str:
    """`v` formatted, or "-" where it is undefined (None; NaN in results written before None was)."""
    return "-" if v is None or v != v else format(v, spec)


def write(out: Path, results: dict) -> None:
    results = {**results, "versions": versions()}
    write_json_atomic(out / "results.json", results)
    write_bytes_atomic(out / "REPORT.md", render(results).encode())


def render_hardening(results: dict) -> str:
    """HARDENING.md: the hardening attempts on their own (`reabsnet harden`)."""
    a = results["profile"]["adaptive"]
    h = results["hardening"]
    lines = [f"# Hardening attempts: {results['dataset']}, profile `{results['profile']['name']}`", "",
             f"Command: `{results['command']}`  ", f"Machine: {results['machine'].get('cpu_model', '?')}, "
             f"{results['machine']['cpus']} CPUs, CUDA: {results['machine']['cuda'] or 'none'}  ",
             f"Wall time of this run: {results['wall_seconds'] / 60:.1f} min (reused stages count 0)  ",
             f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}", "",
             "Every configuration faces the adaptive suite of REPORT.md at each bound: joint APGD-CE and APGD-DLR "
             "(master and guardian together), BPDA APGD-CE and APGD-DLR and unrolled APGD-DLR through the modifier, "
             "then on the images still standing joint APGD-T, Square on the joint score and Square on the "
             "pipeline's output. Budgets: APGD "
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
    lines += _hardening(h)[2:]
    if results.get("build_seconds"):
        lines += ["", "## Compute time", "", "| artifact | seconds to build |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in results["build_seconds"].items()]
    return "\n".join(lines) + "\n"


def write_hardening(out: Path, results: dict) -> None:
    results = {**results, "versions": versions()}
    write_json_atomic(out / "hardening.json", results)
    write_bytes_atomic(out / "HARDENING.md", render_hardening(results).encode())


def render_user(results: dict) -> str:
    """`reabsnet evaluate`'s report on a user's master, guardian and data: Tables 1-2's columns per attack
    crafted on the master (when run) and the adaptive section."""
    d, m = results["data"], results["machine"]
    lines = [f"# Evaluation of {results['master']}" + (f" guarded by {results['guardian']}" if results.get("guardian")
                                                      else ""), "",
             f"Command: `{results['command']}`", "",
             f"Data: {d['source']}, {d['n']} images of shape {'x'.join(map(str, d['shape']))}, {d['classes']} "
             f"classes, box [{d['box'][0]:g}, {d['box'][1]:g}]. Master SHA-256 {results['master_sha256'][:12]}"
             + (f", guardian SHA-256 {results['guardian_sha256'][:12]}" if results.get("guardian_sha256") else "")
             + f". Machine: {m.get('cpu_model') or m['processor']} ({m['cpus']} cores)"
             + (f", {m['cuda']}" if m.get("cuda") else "") + f", torch {torch.__version__}.", ""]
    o = results.get("oblivious")
    if o:
        lines += ["## Attacks crafted on the master alone (the paper's Tables 1 and 2)", "",
                  f"Clean accuracy: master {_cell(o['clean']['master'])}, ReabsNet {_cell(o['clean']['reabsnet'])}; "
                  f"natural images the guardian passes: {_cell(o['natural_pass'])}.", "",
                  "| attack | settings | attack success | detection of the successful ones | master alone | "
                  "ReabsNet | ROC-AUC |", "|---|---|---|---|---|---|---|"]
        for row in o["attacks"].values():
            auc = f"{row['roc_auc']:.3f}" if row.get("roc_auc") is not None else "-"
            lines.append(f"| {row['title']} | {row['preset_note']} | {_cell(row['attack_success'])} | "
                         f"{_cell(row['detection'])} | {_cell(row['master_only'])} | {_cell(row['reabsnet'])} | "
                         f"{auc} |")
    if results.get("adaptive"):
        lines += adaptive_section(results["adaptive"])
    return "\n".join(lines) + "\n"


def write_user(out: Path, results: dict) -> None:
    results = {**results, "versions": versions()}
    write_json_atomic(out / "results.json", results)
    write_bytes_atomic(out / "REPORT.md", render_user(results).encode())
