"""Figure 4: natural, adversarial and revised images per attack, each with the label it receives."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from reabsnet.artifacts import atomic_path  # noqa: E402


def figure4(path: Path, sets: dict, predictions: dict, titles: dict[str, str], per_attack: int = 4) -> list[int]:
    """One row per attack: `per_attack` triples (natural | adversarial | revised), chosen as the first test images
    the attack fooled the master on and the guardian flagged. Writes a PNG atomically; returns the rows' counts."""
    rows = []
    for key, (arrays, _) in sets.items():
        pred = predictions[key]
        picks = (arrays["success"].bool() & pred.flagged).nonzero().squeeze(1)[:per_attack]
        rows.append((key, arrays, pred, picks))
    fig, axes = plt.subplots(len(rows), 3 * per_attack, figsize=(1.35 * 3 * per_attack, 1.6 * len(rows) + 0.6),
                             squeeze=False)
    for r, (key, arrays, pred, picks) in enumerate(rows):
        for c in range(per_attack):
            for j, (image, caption) in enumerate(_triple(arrays, pred, picks, c)):
                ax = axes[r, 3 * c + j]
                ax.set_xticks([])
                ax.set_yticks([])
                if image is not None:
                    ax.imshow(image.squeeze().numpy() + 0.5, cmap="gray", vmin=0, vmax=1)
                    ax.set_xlabel(caption, fontsize=7)
                else:
                    ax.axis("off")
        axes[r, 0].set_ylabel(titles[key], fontsize=8)
    fig.suptitle("ReabsNet on MNIST: natural | adversarial (against the master) | revised by the modifier; "
                 "label under each image", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return [len(p) for _, _, _, p in rows]


def _triple(arrays: dict, pred, picks: torch.Tensor, c: int):
    if c >= len(picks):
        return [(None, ""), (None, ""), (None, "")]
    i = int(picks[c])
    return [(arrays["x"][i], f"natural: {int(arrays['y'][i])}"),
            (arrays["x_adv"][i], f"master: {int(arrays['label'][i])}"),
            (pred.x[i], f"ReabsNet: {int(pred.label[i])}")]
