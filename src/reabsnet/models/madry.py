"""The Madry et al. (2017) MNIST challenge network, the adversarially trained baseline of the paper's Table 3."""

from __future__ import annotations

import torch.nn as nn

from reabsnet.models.registry import Chunked, kaiming_init, register


@register("madry")
def madry(num_classes: int = 10) -> nn.Module:
    """Conv(32,5x5,same)+ReLU, MaxPool 2, Conv(64,5x5,same)+ReLU, MaxPool 2, Flatten, Dense(1024)+ReLU,
    Dense(num_classes); returns logits. As in MadryLab's mnist_challenge model.py (no dropout, no batch norm)."""
    return kaiming_init(Chunked(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 1024), nn.ReLU(inplace=True),
        nn.Linear(1024, num_classes),
    ))
