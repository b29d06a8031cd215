"""A user's labelled images: a `.npz` file or a folder of class subfolders (the ImageFolder convention).

Both return float32 images (N, C, H, W) in a box and int64 labels. uint8 pixels map linearly onto the box (0 to
its low end, 255 to its high end; default box (0, 1)). Float pixels are taken as they are, in the box given or,
when none is, in (0, 1) or (-0.5, 0.5) if they lie inside one (else: give the box).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reabsnet.errors import ReabsnetError

Box = tuple[float, float]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _channels_first(x: np.ndarray, origin: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, C) with C in {1, 3} -> (N, C, H, W); (N, C, H, W) as it is."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] in (1, 3):
            return x
        if x.shape[3] in (1, 3):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise ReabsnetError(f"{origin}: images of shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
                        f"with 1 or 3 channels")


def to_box(x: np.ndarray, box: Box | None, origin: str) -> tuple[torch.Tensor, Box]:
    """Pixels as float32 in a box (see the module's docstring); returns the images and the box."""
    if x.dtype == np.uint8:
        box = tuple(box) if box is not None else (0.0, 1.0)
        return torch.from_numpy(x.astype(np.float32) / 255.0 * (box[1] - box[0]) + box[0]), box
    if not np.issubdtype(x.dtype, np.floating):
        raise ReabsnetError(f"{origin}: pixels of type {x.dtype}; expected uint8 or float")
    if not np.isfinite(x).all():
        raise ReabsnetError(f"{origin}: pixels hold NaN or infinite values")
    if not x.size:
        raise ReabsnetError(f"{origin}: no images")
    low, high = float(x.min()), float(x.max())
    if box is None:
        box = next((b for b in ((0.0, 1.0), (-0.5, 0.5)) if b[0] <= low and high <= b[1]), None)
        if box is None:
            raise ReabsnetError(f"{origin}: float pixels span [{low:.3g}, {high:.3g}]; give the box they lie in "
                                f"(--box low,high)")
    box = (float(box[0]), float(box[1]))
    if box[0] >= box[1]:
        raise ReabsnetError(f"box {box}: the lower bound must be below the upper bound")
    if low < box[0] - 1e-6 or high > box[1] + 1e-6:
        raise ReabsnetError(f"{origin}: pixels span [{low:.3g}, {high:.3g}], outside the box {box}")
    return torch.from_numpy(x.astype(np.float32)), box


def _labels(y: np.ndarray, n: int, origin: str) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n:
        raise ReabsnetError(f"{origin}: {len(y) if y.ndim else 0} labels of shape {y.shape} for {n} images; "
                            f"expected one integer label per image")
    if not np.issubdtype(y.dtype, np.integer) and (not np.issubdtype(y.dtype, np.floating)
                                                   or not np.array_equal(y, np.round(y))):
        raise ReabsnetError(f"{origin}: labels must be integers, got {y.dtype}")
    if n and y.min() < 0:
        raise ReabsnetError(f"{origin}: negative label {int(y.min())}")
    return torch.from_numpy(y.astype(np.int64))


def load_npz(path: str | Path, box: Box | None = None) -> tuple[torch.Tensor, torch.Tensor, Box]:
    """Images and labels from a `.npz` with arrays `x` (images, a layout of `_channels_first`) and `y` (integer
    labels); no pickles are read. Returns (x (N, C, H, W) float32, y int64, box)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise ReabsnetError(f"{path}: no array {missing[0]!r} (have: {', '.join(f.files) or 'none'}); "
                                    f"expected x (images) and y (labels)")
            x, y = f["x"], f["y"]
    except (OSError, ValueError, EOFError) as e:      # missing, not a zip, or object arrays that need pickle
        raise ReabsnetError(f"{path}: not a readable .npz of plain arrays ({str(e).splitlines()[0]})") from None
    x = _channels_first(x, str(path))
    images, box = to_box(x, box, str(path))
    return images, _labels(y, len(images), str(path)), box


def load_image_folder(root: str | Path, box: Box | None = None) -> tuple[torch.Tensor, torch.Tensor, Box,
                                                                         list[str]]:
    """Images from `root/<class>/<image>` (the ImageFolder convention: classes sorted by name are labels 0, 1,
    ...). Every image must have the same size; all grayscale gives 1 channel, otherwise RGB. Needs Pillow.
    Returns (x (N, C, H, W) float32 in the box (uint8 pixels: default (0, 1)), y, box, class names)."""
    try:
        from PIL import Image
    except ImportError:
        raise ReabsnetError("reading an image folder needs Pillow: pip install pillow") from None
    root = Path(root)
    if not root.is_dir():
        raise ReabsnetError(f"{root}: not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(f, label) for label, c in enumerate(classes)
             for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ReabsnetError(f"{root}: no images in class subfolders (expected {root}/<class>/<image>.png)")
    opened = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                opened.append(im.copy())
        except (OSError, ValueError) as e:
            raise ReabsnetError(f"{f}: not a readable image ({e})") from None
    mode = "L" if all(im.mode in ("L", "1", "I;16") for im in opened) else "RGB"
    arrays = [np.asarray(im.convert(mode), dtype=np.uint8) for im in opened]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ReabsnetError(f"{root}: images of different sizes {sorted(sizes)[:3]}; resize them to one size first")
    x = _channels_first(np.stack(arrays), str(root))
    images, box = to_box(x, box, str(root))
    return images, torch.tensor([label for _, label in files], dtype=torch.int64), box, classes


def load_user_data(path: str | Path, box: Box | None = None) -> tuple[torch.Tensor, torch.Tensor, Box]:
    """`load_npz` for a file, `load_image_folder` for a folder."""
    path = Path(path)
    if path.is_dir():
        return load_image_folder(path, box)[:3]
    if not path.exists():
        raise ReabsnetError(f"{path}: no such file or folder")
    return load_npz(path, box)
