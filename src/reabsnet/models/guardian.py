"""The guardian network: a two-class CNN (natural vs adversarial) with two feature paths, as in Figure 3."""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.models.registry import in_chunks, kaiming_init, register


class TwoPathDetector(nn.Module):
    """Two convolutional paths over the same image, flattened and concatenated, then a dense head.

    Figure 3 shows two branches joined by 'Concatenate' but not their layers; this is our design (a deviation the
    report states). The fine path repeats the master's 3x3 stack, because the perturbations DeepFool and CW add
    are small, high-frequency and live at that scale. The coarse path uses 5x5 kernels and pools early, so it sees
    whole strokes and can tell a perturbation from the digit's own edges. Cost: about 9 M multiply-adds per
    image, a little under the master's 10 M, so detection and revision cost no more than classification.
    Output: logits for (natural, adversarial).

    Other image shapes (C, H, W), C in {1, 3}, H and W at least 16: the same layers take C channels, and each path
    ends in an adaptive max pooling to its MNIST grid (5x5, 4x4), so the head keeps its size. On 28x28 inputs that
    pooling is exactly the 2x2 pooling of the design (same outputs, same state_dict keys).
    """

    def __init__(self, num_outputs: int = 2, dropout: float = 0.5, in_channels: int = 1):
        super().__init__()
        self.fine = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                    # 12x12
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),    # 10x10
            nn.AdaptiveMaxPool2d(5),            # 5x5
            nn.Flatten(),                       # 1600
        )
        self.coarse = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5), nn.ReLU(inplace=True),     # 24x24
            nn.MaxPool2d(2),                    # 12x12
            nn.Conv2d(16, 32, 5), nn.ReLU(inplace=True),    # 8x8
            nn.AdaptiveMaxPool2d(4),            # 4x4
            nn.Flatten(),                       # 512
        )
        self.head = nn.Sequential(
            nn.Linear(64 * 5 * 5 + 32 * 4 * 4, 200), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(200, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_chunks(self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.fine(x), self.coarse(x)], dim=1))


@register("guardian")
def guardian(dropout: float = 0.5, in_channels: int = 1) -> nn.Module:
    """The paper's guardian; `in_channels` 3 for colour images (any H, W >= 16: TwoPathDetector)."""
    return kaiming_init(TwoPathDetector(num_outputs=2, dropout=dropout, in_channels=in_channels))


# Two other readings of Figure 3, for the ablation (factor d). Both are checkpoints like any guardian.

@register("guardian-master")
def guardian_master(dropout: float = 0.5) -> nn.Module:
    """The master's architecture (Figure 2) as a two-class network: no second path at all."""
    from reabsnet.models.master import master
    return master(num_classes=2, dropout=dropout)


class TwoStepDetector(nn.Module):
    """Figure 3's caption read literally: 'Concatenate' joins the features of two steps of one path. The master's
    convolutional stack, with the features after its first pooling (32x12x12) and after its second (64x4x4) both
    flattened and concatenated before the master's dense head: a skip path from the earlier, finer step."""

    def __init__(self, num_outputs: int = 2, dropout: float = 0.5):
        super().__init__()
        self.step1 = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                    # 12x12
        )
        self.step2 = nn.Sequential(
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                    # 4x4
        )
        self.head = nn.Sequential(
            nn.Linear(32 * 12 * 12 + 64 * 4 * 4, 200), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(200, 200), nn.ReLU(inplace=True),
            nn.Linear(200, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_chunks(self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.step1(x)
        return self.head(torch.cat([first.flatten(1), self.step2(first).flatten(1)], dim=1))


@register("guardian-two-step")
def guardian_two_step(dropout: float = 0.5) -> nn.Module:
    return kaiming_init(TwoStepDetector(num_outputs=2, dropout=dropout))
