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
    """uint8 (N, 28, 28) or (N, 1, 28, 28) -> float32 (N, 1, 28, 28) in [-0.5, 0.5]; float images (a user's data,
    already in their box) pass as they are."""
    images = images if images.dim() == 4 else images.unsqueeze(1)
    if images.dtype.is_floating_point:
        return images
    return images.to(torch.float32) / 255.0 - 0.5


@dataclass(frozen=True)
class Splits:
    """The three splits as uint8 images (N, 28, 28) and int64 labels; `sha256` identifies the data. A user's data
    (`Splits.of_arrays`) holds float images of any shape (N, C, H, W) in `box`, with `classes` classes."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    sha256: str
    source: str
    classes: int = 10
    box: tuple[float, float] = BOX

    @classmethod
    def of_arrays(cls, name: str, x_test: torch.Tensor, y_test: torch.Tensor, *, classes: int,
                  box: tuple[float, float] = BOX, train: tuple[torch.Tensor, torch.Tensor] | None = None,
                  val: tuple[torch.Tensor, torch.Tensor] | None = None) -> Splits:
        """Float images (N, C, H, W) and labels as splits (train and val empty unless given); `sha256` digests
        the arrays, so the stages keyed on it are keyed on the data."""
        from reabsnet.artifacts import tensors_sha256

        empty = (x_test[:0], y_test[:0])
        train, val = train or empty, val or empty
        arrays = [*train, *val, x_test, y_test]
        return cls(name=name, train_x=train[0], train_y=train[1], val_x=val[0], val_y=val[1], test_x=x_test,
                   test_y=y_test, sha256=tensors_sha256(arrays, extra=(classes, list(box))), source="arrays",
                   classes=classes, box=tuple(box))

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
