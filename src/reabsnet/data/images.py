"""User inputs for `reabsnet classify`: image files (any size and mode) and .npy / .npz batches."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from reabsnet.errors import ReabsnetError

log = logging.getLogger(__name__)
ARRAY_KEYS = ("x_adv", "x", "images")   # the keys an .npz batch is read from, in this order


def read_inputs(path: str | Path, invert: bool = False) -> tuple[list[str], torch.Tensor]:
    """Names and float images (N, 1, 28, 28) in [-0.5, 0.5] from one file; ReabsnetError on anything unusable.

    Images: converted to 8-bit grayscale and resized to 28x28 with a warning when they are not already that;
    MNIST digits are light on dark, `invert` flips a dark-on-light scan. Arrays: uint8 is scaled by 1/255 - 0.5;
    float arrays must already be in [-0.5, 0.5]; shapes (28, 28), (N, 28, 28) or (N, 1, 28, 28).
    """
    path = Path(path)
    if not path.is_file():
        raise ReabsnetError(f"{path}: no such file")
    if path.suffix.lower() in (".npy", ".npz"):
        names, x = _read_array(path)
    else:
        names, x = [path.name], _read_image(path)
    return names, (-x if invert else x)


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode != "L" or img.size != (28, 28):
                log.warning("%s: %s image of %dx%d converted to 28x28 grayscale", path.name, img.mode, *img.size)
            img = img.convert("L").resize((28, 28), Image.Resampling.LANCZOS)
            pixels = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ReabsnetError(f"{path}: not a readable image ({e})") from None
    return torch.from_numpy(pixels / 255.0 - 0.5).view(1, 1, 28, 28)


def _read_array(path: Path) -> tuple[list[str], torch.Tensor]:
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as f:
                key = next((k for k in ARRAY_KEYS if k in f.files), None)
                if key is None:
                    raise ReabsnetError(f"{path}: no array named {', '.join(ARRAY_KEYS)} (has: {', '.join(f.files)})")
                arr = f[key]
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise ReabsnetError(f"{path}: not a readable numpy file ({e})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1:] != (1, 28, 28):
        raise ReabsnetError(f"{path}: expected images of shape (N, 1, 28, 28), (N, 28, 28) or (28, 28), "
                            f"got {arr.shape}")
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0 - 0.5
    elif np.issubdtype(arr.dtype, np.floating):
        x = arr.astype(np.float32)
        if not np.isfinite(x).all() or x.min() < -0.5 - 1e-6 or x.max() > 0.5 + 1e-6:
            raise ReabsnetError(f"{path}: float images must lie in [-0.5, 0.5] (x/255 - 0.5); "
                                f"got [{np.nanmin(x):.3f}, {np.nanmax(x):.3f}]")
    else:
        raise ReabsnetError(f"{path}: images must be uint8 or float, not {arr.dtype}")
    return [f"{path.name}[{i}]" for i in range(len(x))], torch.from_numpy(np.clip(x, -0.5, 0.5))
