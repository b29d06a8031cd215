"""The report's plots: accuracy against the L-inf bound, the guardian's ROC per attack, and revision sizes.
Each is a PNG written atomically, readable on its own: title, axis labels with units, legend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from reabsnet.artifacts import atomic_path  # noqa: E402
from reabsnet.evaluation.stats import roc, roc_auc  # noqa: E402

STYLE = {"master": ("master alone (distilled)", "tab:gray", "--"),
         "reabsnet": ("ReabsNet (guardian + modifier + master)", "tab:blue", "-"),
         "madry": ("Madry-style baseline (adversarially trained)", "tab:red", "-.")}


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def accuracy_vs_bound(path: Path, curves: dict, threat: str) -> None:
    """One panel per attack: accuracy against the L-inf bound for the master, ReabsNet and the baseline."""
    panels = [(a["title"], curves["bounds"], a) for a in curves["attacks"].values()]
    if curves.get("pgd", {}).get("bounds"):
        p = curves["pgd"]
        panels.append((f"{p['title']}, one run per bound", p["bounds"], p))
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, bounds, data) in zip(list(axes.flat)[:len(panels)], panels, strict=True):
        for key, (label, color, style) in STYLE.items():
            ax.plot(bounds, data[key], style, color=color, label=label, marker="o" if len(bounds) < 20 else None,
                    markersize=3)
        ax.axvline(0.3, color="black", linewidth=0.6, alpha=0.4)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("L-inf bound eps (pixel range [-0.5, 0.5])")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=9, frameon=False)
    fig.suptitle(f"MNIST accuracy against the L-inf bound ({threat}); an example beyond the bound counts as the "
                 "unattacked original (paper section 4.3.3); grey line: eps 0.3", fontsize=10)
    _save(fig, path)


ADAPTIVE_STYLE = {"reabsnet": ("ReabsNet (revise flagged inputs)", "tab:blue", "-", "o"),
                  "selective": ("reject policy (correct or rejected)", "tab:cyan", ":", "s"),
                  "master": ("master alone (distilled)", "tab:gray", "--", "v"),
                  "madry": ("Madry-style baseline (adversarially trained)", "tab:red", "-.", "D")}


def adaptive_vs_bound(path: Path, adaptive: dict) -> None:
    """Robust accuracy against the L-inf bound under the white-box adaptive attacks (worst case per example), with
    95% Wilson intervals, from the adaptive evaluation's results; the clean rate at bound 0."""
    bounds = sorted((b["eps"], b) for b in adaptive["bounds"].values() if b["norm"] == "linf")
    clean = {"reabsnet": adaptive["clean"]["reabsnet"], "selective": adaptive["clean"]["selective_correct_or_rejected"],
             "master": adaptive["clean"]["master"], "madry": adaptive["clean"]["madry"]}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, (label, color, style, marker) in ADAPTIVE_STYLE.items():
        points = [(0.0, clean[key])] + [(eps, b[key]) for eps, b in bounds if key in b]
        xs = [x for x, _ in points]
        ys = [r["rate"] for _, r in points]
        lo = [r["rate"] - r["ci95"][0] for _, r in points]
        hi = [r["ci95"][1] - r["rate"] for _, r in points]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, marker=marker, color=color, label=label, markersize=4,
                    capsize=2)
    ax.set_xlabel("L-inf bound eps (pixel range [-0.5, 0.5])")
    ax.set_ylabel("robust accuracy (worst case over the suite)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"MNIST under white-box adaptive attacks, first {adaptive['n']:,} test images", fontsize=10)
    _save(fig, path)


def roc_curves(path: Path, natural: torch.Tensor, adversarial: dict[str, tuple[str, torch.Tensor]]) -> dict:
    """The guardian's ROC per attack (natural test images negative, successful adversarial examples positive),
    on linear and logarithmic false-positive axes; returns the AUCs."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    aucs = {}
    for key, (title, scores) in adversarial.items():
        if len(scores) == 0:
            continue
        fpr, tpr = roc(natural, scores)
        aucs[key] = roc_auc(natural, scores)
        for ax in axes:
            ax.plot(fpr.numpy(), tpr.numpy(), label=f"{title} (AUC {aucs[key]:.4f}, n={len(scores)})")
    for ax, scale in zip(axes, ("linear", "log"), strict=True):
        ax.plot([1e-4, 1], [1e-4, 1], ":", color="gray", label="chance")
        ax.set_xscale(scale)
        ax.set_xlim(1e-4 if scale == "log" else 0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel(f"false-positive rate (natural test images flagged){', log scale' if scale == 'log' else ''}")
        ax.set_ylabel("detection rate (adversarial examples flagged)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Guardian ROC per attack (score: P(adversarial); {len(natural):,} natural test images)",
                 fontsize=10)
    _save(fig, path)
    return aucs


def revision_histogram(path: Path, natural: torch.Tensor, adversarial: dict[str, tuple[str, torch.Tensor]],
                       attack_l2: dict[str, torch.Tensor]) -> None:
    """L2 size of the modifier's revision on the inputs it revised (flagged ones), natural against adversarial
    per attack, beside the attacks' own perturbation sizes."""
    def bins_for(values: list[torch.Tensor]):
        top = max([float(v.max()) for v in values if len(v)] + [0.5])
        return torch.linspace(0, top * 1.02, 50).numpy()

    bins = bins_for([v for _, v in adversarial.values()] + [natural])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for title, v in adversarial.values():
        if len(v):
            axes[0].hist(v.numpy(), bins=bins, histtype="step", linewidth=1.4,
                         label=f"{title} (n={len(v)}, median {float(v.median()):.2f})")
    if len(natural):
        axes[0].hist(natural.numpy(), bins=bins, histtype="stepfilled", alpha=0.35, color="black",
                     label=f"natural test images flagged (n={len(natural)})")
    axes[0].set_title("Revision size: how far the modifier moves a flagged input", fontsize=10)
    bins = bins_for(list(attack_l2.values()))
    for key, v in attack_l2.items():
        if len(v):
            axes[1].hist(v.numpy(), bins=bins, histtype="step", linewidth=1.4,
                         label=f"{adversarial[key][0]} (median {float(v.median()):.2f})")
    axes[1].set_title("For scale: the attacks' own perturbation size (successful examples)", fontsize=10)
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("L2 distance (pixel range [-0.5, 0.5], 784 pixels)")
        ax.set_ylabel("inputs (log scale)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    _save(fig, path)


def ablation_bars(path: Path, rows: list[dict], paper: dict) -> None:
    """One panel per attack: ReabsNet's rate for each factor setting (mean over seeds, the bar; min-max, the
    whisker), the paper's value as a dashed line. Horizontal bars, settings top to bottom in the summary's order."""
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, axes = plt.subplots(1, len(attacks), figsize=(2.6 * len(attacks) + 3.4, 0.22 * len(labels) + 1.4),
                             squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks, strict=True):
        mine = {r["label"]: r for r in rows if r["attack"] == attack and r["reabsnet"]["mean"] is not None}
        at = [i for i, name in enumerate(labels) if name in mine]
        mean = [mine[labels[i]]["reabsnet"]["mean"] for i in at]
        # clamped: a mean of equal rates can land a rounding error outside its own min-max
        err = [[max(0.0, m - mine[labels[i]]["reabsnet"]["min"]) for m, i in zip(mean, at, strict=True)],
               [max(0.0, mine[labels[i]]["reabsnet"]["max"] - m) for m, i in zip(mean, at, strict=True)]]
        ax.barh(at, mean, xerr=err, color="tab:blue", capsize=2, height=0.7)
        if paper.get(attack) is not None:   # dashed: the paper's value, named in the title
            ax.axvline(paper[attack], color="black", linestyle="--")
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlim(0, 1.02)
        ax.set_title(f"{attack} (paper {paper[attack]:g}, dashed)" if paper.get(attack) is not None else attack,
                     fontsize=8)
        ax.set_xlabel("ReabsNet: fraction right", fontsize=7)
    _save(fig, path)
