"""REPORT.md and results.json: every number beside the paper's, with counts, intervals and settings; assembled
from the sections each package renders (the paper's evaluation, the adaptive suite, the hardening study)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from reabsnet.artifacts import read_json, versions, write_bytes_atomic, write_json_atomic
from reabsnet.evaluation import report as paper_report
from reabsnet.evaluation import table3
from reabsnet.evaluation.paper import ATTACK_SPECS, PAPER
from reabsnet.rates import bound_label, cell, command_text, in_order
from reabsnet.security.report import adaptive_section
from reabsnet.studies.hardening import hardening_lines


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
    for name, b in in_order(r.get("adaptive", {}).get("bounds", {})):
        for who, label in (("reabsnet", "ReabsNet"), ("selective", "reject policy"), ("master", "master alone"),
                           ("madry", "Madry-style")):
            if who in b:
                cells[f"adaptive {bound_label(name)}: {label}"] = (b[who], None)
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
        return cell(v)
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
            lines.append(f"| {name} | {_rate(ours)} | {_rate(theirs[name])} | {paper_report.paper_cell(paper)} |")
    return lines + [""]


def render(results: dict) -> str:
    r, prof = results["results"], results["profile"]
    lines = [f"# ReabsNet reproduction: {results['dataset']}, profile `{prof['name']}`", ""]
    lines += [f"Command: `{command_text(results['command'])}`  ",
              f"Machine: {results['machine'].get('cpu_model', '?')}, "
              f"{results['machine']['cpus']} CPUs, CUDA: {results['machine']['cuda'] or 'none'}  ",
              f"Wall time of this run: {results['wall_seconds'] / 60:.1f} min (stages reused from earlier runs "
              f"count 0; the compute-time table gives each artifact's build time)  ",
              f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}", ""]
    lines += ["Every rate is given as rate (count/n; 95% Wilson interval), beside the paper's value. Tables 1-3 "
              "use the paper's threat model (attacks crafted against the master; the Madry-style baseline attacked "
              "directly); the section on adaptive attacks, if present, uses an attacker who also knows the guardian "
              "and the modifier. See the settings section for what differs from the paper.", ""]
    lines += _beside(results)
    lines += paper_report.tables(r)
    lines += paper_report.baseline(results) + paper_report.table3_section(r) + _adaptive(r)
    lines += ["", "## Figure 4", "", "![Figure 4](figure4.png)", ""]
    lines += ["## Accuracy against the L-inf bound", "",
              "Attacks of Table 2 crafted against the master (ReabsNet and the master) or against the baseline "
              "(white-box), with the paper's rule applied at every bound; PGD run once per bound.", "",
              "![accuracy against the L-inf bound](accuracy-vs-linf.png)", "",
              *(["## Robust accuracy under the adaptive attacks", "",
                 "![robust accuracy against the L-inf bound](adaptive-vs-linf.png)", ""] if r.get("adaptive") else []),
              "## Guardian ROC per attack", "", "![guardian ROC](guardian-roc.png)", "",
              "## What the modifier does", "", "![revision sizes](revision-l2.png)", ""]
    lines += paper_report.settings(results)
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


def _adaptive(r: dict) -> list[str]:
    """The adaptive section, with the hardening attempts after its sanity checks where they ran."""
    a = r.get("adaptive")
    if not a:
        return []
    return adaptive_section(a) + (hardening_lines(a["hardening"]) if a.get("sanity") and a.get("hardening") else [])


def write(out: Path, results: dict) -> None:
    results = {**results, "versions": versions()}
    write_json_atomic(out / "results.json", results)
    write_bytes_atomic(out / "REPORT.md", render(results).encode())


def render_user(results: dict) -> str:
    """`reabsnet evaluate`'s report on a user's master, guardian and data: Tables 1-2's columns per attack
    crafted on the master (when run) and the adaptive section."""
    d, m = results["data"], results["machine"]
    lines = [f"# Evaluation of {results['master']}" + (f" guarded by {results['guardian']}" if results.get("guardian")
                                                      else ""), "",
             f"Command: `{command_text(results['command'])}`", "",
             f"Data: {d['source']}, {d['n']} images of shape {'x'.join(map(str, d['shape']))}, {d['classes']} "
             f"classes, box [{d['box'][0]:g}, {d['box'][1]:g}]. Master SHA-256 {results['master_sha256'][:12]}"
             + (f", guardian SHA-256 {results['guardian_sha256'][:12]}" if results.get("guardian_sha256") else "")
             + f". Machine: {m.get('cpu_model') or m['processor']} ({m['cpus']} cores)"
             + (f", {m['cuda']}" if m.get("cuda") else "") + f", torch {torch.__version__}.", ""]
    o = results.get("oblivious")
    if o:
        lines += ["## Attacks crafted on the master alone (the paper's Tables 1 and 2)", "",
                  f"Clean accuracy: master {cell(o['clean']['master'])}, ReabsNet {cell(o['clean']['reabsnet'])}; "
                  f"natural images the guardian passes: {cell(o['natural_pass'])}.", "",
                  "| attack | settings | attack success | detection of the successful ones | master alone | "
                  "ReabsNet | ROC-AUC |", "|---|---|---|---|---|---|---|"]
        for row in o["attacks"].values():
            auc = f"{row['roc_auc']:.3f}" if row.get("roc_auc") is not None else "-"
            lines.append(f"| {row['title']} | {row['preset_note']} | {cell(row['attack_success'])} | "
                         f"{cell(row['detection'])} | {cell(row['master_only'])} | {cell(row['reabsnet'])} | "
                         f"{auc} |")
    if results.get("adaptive"):
        lines += adaptive_section(results["adaptive"])
    return "\n".join(lines) + "\n"


def write_user(out: Path, results: dict) -> None:
    results = {**results, "versions": versions()}
    write_json_atomic(out / "results.json", results)
    write_bytes_atomic(out / "REPORT.md", render_user(results).encode())
