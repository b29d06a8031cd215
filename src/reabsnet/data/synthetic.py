"""A synthetic colour image set (not MNIST): the data of the tests and the example that show the defense and its
evaluation on another shape. Each class is a smooth random colour pattern; every image is its class pattern at a
random contrast, shifted (circularly) by up to `shift` pixels each way, plus pixel noise, in the box [-0.5, 0.5].
Learnable but not trivial: a small ResNet learns it in two epochs, while the nearest class mean (a linear rule)
gets 0.83 of it (shift 10). `clutter` adds another class's pattern at up to that contrast: images that already
mix two classes, which is what a DeepFool perturbation looks like, so a guardian cannot learn to detect those
(measured: validation accuracy 0.55 with clutter 0.1)."""

from __future__ import annotations

import torch


def _smooth_patterns(count: int, shape: tuple[int, int, int], gen: torch.Generator, scale: int) -> torch.Tensor:
    """`count` random patterns of `shape`, each a low-resolution random field upsampled (smooth), unit std."""
    c, h, w = shape
    low = torch.randn(count, c, max(2, h // scale), max(2, w // scale), generator=gen)
    field = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return field / field.flatten(1).std(dim=1).view(-1, 1, 1, 1)


def synthetic(n: int, *, shape: tuple[int, int, int] = (3, 32, 32), classes: int = 10, seed: int = 0,
              pattern_seed: int = 1234, noise: float = 0.005, shift: int = 10,
              clutter: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images (n, *shape) in [-0.5, 0.5] and their labels (balanced, shuffled). The class patterns depend on
    `pattern_seed` only, so sets drawn with other `seed`s (train, test) share them."""
    patterns = _smooth_patterns(classes, shape, torch.Generator().manual_seed(pattern_seed), 8)
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=gen)]
    contrast = 0.10 + 0.08 * torch.rand(n, 1, 1, 1, generator=gen)
    shifts = torch.randint(-shift, shift + 1, (n, 2), generator=gen)
    x = torch.stack([patterns[c].roll((int(s[0]), int(s[1])), dims=(1, 2)) for c, s in zip(y, shifts, strict=True)])
    other = (y + torch.randint(1, classes, (n,), generator=gen)) % classes
    other_part = clutter * torch.rand(n, 1, 1, 1, generator=gen) * patterns[other]
    x = contrast * x + other_part + noise * torch.randn(n, *shape, generator=gen)
    return x.clamp(-0.5, 0.5), y
