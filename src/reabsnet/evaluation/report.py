"""REPORT.md and results.json: every number beside the paper's, with counts, intervals and settings."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from reabsnet.artifacts import versions, write_bytes_atomic, write_json_atomic
from reabsnet.evaluation.paper import ATTACK_SPECS, PAPER


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


def render(results: dict) -> str:
    r, prof = results["results"], results["profile"]
    lines = [f"# ReabsNet reproduction: {results['dataset']}, profile `{prof['name']}`", ""]
    lines += [f"Command: `{results['command']}`  ", f"Machine: {results['machine'].get('cpu_model', '?')}, "
              f"{results['machine']['cpus']} CPUs, CUDA: {results['machine']['cuda'] or 'none'}  ",
              f"Wall time of this run: {results['wall_seconds'] / 60:.1f} min (stages reused from earlier runs "
              f"count 0; the compute-time table gives each artifact's build time)  ",
              f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}", ""]
    lines += ["Every rate is given as rate (count/n; 95% Wilson interval), beside the paper's value. Attacks are "
              "crafted against the master only (the paper's threat model); see the settings section for what "
              "differs from the paper.", ""]
    lines += ["## Clean accuracy (all test images)", "", "| | ours | paper |", "|---|---|---|",
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
                     f"{a['roc_auc']:.4f} | {a['detection_at_fpr_1']:.3f} / {a['detection_at_fpr_5']:.3f} |")
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
    lines += ["", "## Figure 4", "", "![Figure 4](figure4.png)", ""]
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
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def write(out: Path, results: dict) -> None:
    results = {**results, "versions": versions()}
    write_json_atomic(out / "results.json", results)
    write_bytes_atomic(out / "REPORT.md", render(results).encode())
