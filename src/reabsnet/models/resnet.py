"""A small ResNet-style classifier for colour images (not in the paper): the master of the synthetic 3x32x32 data
that tests and `examples/own_model.py` use, and a registered architecture a user's checkpoint may name."""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.models.registry import in_chunks, kaiming_init, register


class Block(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1, when the shape changes) shortcut; no batch norm, so the
    network is the same function in train and eval mode, as attacks expect."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Identity() if (cin, stride) == (cout, 1) else nn.Conv2d(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(Block(width, width, 1), Block(width, 2 * width, 2),
                                    Block(2 * width, 4 * width, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_chunks(self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@register("resnet-small")
def resnet_small(in_channels: int = 3, num_classes: int = 10, width: int = 16) -> nn.Module:
    model = kaiming_init(SmallResNet(in_channels, num_classes, width))
    for block in model.blocks:      # each block starts as its shortcut (Fixup's rule): trains without batch norm
        nn.init.zeros_(block.conv2.weight)
    return model
