"""MNIST (and Fashion-MNIST) with the paper's splits: 55,000 train, the last 5,000 training images as validation,
and the 10,000 test images. Pixels are stored as uint8 and served as float32 `x/255 - 0.5` in [-0.5, 0.5] with
shape (N, 1, 28, 28), the convention of Carlini & Wagner's setup_mnist.py that the paper follows (section 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from reabsnet.data.cache import Fetched, cache_path, fetch, load_raw
from reabsnet.data.specs import DATASETS, FASHION_MNIST, MNIST, DatasetSpec, get_spec

BOX = (-0.5, 0.5)  # the input domain every model and attack works in

__all__ = ["BOX", "DATASETS", "FASHION_MNIST", "MNIST", "DatasetSpec", "Fetched", "Splits", "cache_path",
           "fetch", "get_spec", "load", "to_float"]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) or (N, 1, 28, 28) -> float32 (N, 1, 28, 28) in [-0.5, 0.5]."""
    images = images if images.dim() == 4 else images.unsqueeze(1)
    return images.to(torch.float32) / 255.0 - 0.5


@dataclass(frozen=True)
class Splits:
    """The three splits as uint8 images (N, 28, 28) and int64 labels; `sha256` identifies the data."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    sha256: str
    source: str

    def split(self, which: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(float images, labels) of 'train', 'val' or 'test'; with `n`, its first n only (converted alone: the
        attack sets take a few images of the test split, dozens of times per run). n 0 or None: all of it, as
        every size setting (train_size, check_size, clean_images) reads 0."""
        x, y = {"train": (self.train_x, self.train_y), "val": (self.val_x, self.val_y),
                "test": (self.test_x, self.test_y)}[which]
        return to_float(x[:n or None]), y[:n or None]


def load(dataset: str = "mnist", home: str | Path | None = None, source: str | Path | None = None) -> Splits:
    """Fetch (or reuse) the verified cache of `dataset` and return its splits."""
    spec = get_spec(dataset)
    fetched = fetch(spec, home=home, source=source)
    raw = load_raw(fetched)
    n_val = spec.val_size
    train_x = torch.from_numpy(raw["train_images"].copy())
    train_y = torch.from_numpy(raw["train_labels"].astype("int64"))
    return Splits(
        name=spec.name,
        train_x=train_x[:-n_val], train_y=train_y[:-n_val],
        val_x=train_x[-n_val:], val_y=train_y[-n_val:],
        test_x=torch.from_numpy(raw["test_images"].copy()),
        test_y=torch.from_numpy(raw["test_labels"].astype("int64")),
        sha256=fetched.sha256, source=fetched.source,
    )
