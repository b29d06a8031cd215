"""User inputs for `reabsnet classify`: image files (any size and mode) and .npy / .npz batches."""

from __future__ import annotations

import logging
import struct
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from reabsnet.errors import ReabsnetError

log = logging.getLogger(__name__)
ARRAY_KEYS = ("x_adv", "x", "images")   # the keys an .npz batch is read from, in this order
ARRAY_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
# Resource limits, checked from the file's header before anything is decoded or allocated:
MAX_IMAGE_PIXELS = 4096 * 4096   # one image file: a photo of a digit fits easily; a decompression bomb does not
MAX_BATCH_IMAGES = 100_000       # one .npy/.npz batch: MNIST's 70,000 images fit (float32: 314 MB at the limit)


def list_inputs(path: str | Path) -> tuple[list[Path], list[Path]]:
    """The files to classify for one argument: a file is itself; a directory gives its image and array files,
    sorted by name (not recursive). Returns (files, skipped files of other kinds)."""
    path = Path(path)
    if path.is_dir():
        entries = sorted(p for p in path.iterdir() if p.is_file())
        keep = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES]
        if not keep:
            raise ReabsnetError(f"{path}: a directory with no image or .npy/.npz files")
        return keep, [p for p in entries if p not in keep]
    if not path.exists():
        raise ReabsnetError(f"{path}: no such file or directory")
    if not path.is_file():
        raise ReabsnetError(f"{path}: not a regular file")
    return [path], []


def read_inputs(path: str | Path, invert: bool = False) -> tuple[list[str], torch.Tensor]:
    """Names and float images (N, 1, 28, 28) in [-0.5, 0.5] from one file; ReabsnetError on anything unusable.

    Images: converted to 8-bit grayscale and resized to 28x28 with a warning when they are not already that;
    MNIST digits are light on dark, `invert` flips a dark-on-light scan. Arrays: uint8 is scaled by 1/255 - 0.5;
    float arrays must already be in [-0.5, 0.5]; shapes (28, 28), (N, 28, 28) or (N, 1, 28, 28). Limits:
    MAX_IMAGE_PIXELS per image file, MAX_BATCH_IMAGES per array file.
    """
    path = Path(path)
    if path.is_dir():
        raise ReabsnetError(f"{path}: is a directory (list_inputs gives its files)")
    if not path.is_file():
        raise ReabsnetError(f"{path}: no such file")
    if path.suffix.lower() in ARRAY_SUFFIXES:
        names, x = _read_array(path)
    else:
        names, x = [path.name], _read_image(path)
    return names, (-x if invert else x)


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns of corrupt headers (EXIF, truncated chunks) and of possible decompression bombs; such a
            # file is refused, never classified from a half-decoded picture
            warnings.simplefilter("error")
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise ReabsnetError(f"{path}: image of {w}x{h} pixels exceeds the limit of {MAX_IMAGE_PIXELS:,} "
                                        f"pixels; scale it down first")
                img.load()
                if img.mode != "L" or img.size != (28, 28):
                    log.warning("%s: %s image of %dx%d converted to 28x28 grayscale", path.name, img.mode, w, h)
                img = img.convert("L").resize((28, 28), Image.Resampling.LANCZOS)
                pixels = np.asarray(img, dtype=np.float32)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ReabsnetError(f"{path}: refused as a possible decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError, struct.error, MemoryError,
            OverflowError, IndexError, TypeError, KeyError, ZeroDivisionError, Warning) as e:
        # Pillow's decoders raise these on truncated or malformed files; the fuzz tests found each of them
        raise ReabsnetError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return torch.from_numpy(pixels / 255.0 - 0.5).view(1, 1, 28, 28)


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an .npy stream's header, without reading the data."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return shape, dtype


def _check_header(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise ReabsnetError(f"{path}: holds Python objects; only uint8 or float images are read (never unpickled)")
    if len(shape) in (3, 4) and shape[0] > MAX_BATCH_IMAGES:
        raise ReabsnetError(f"{path}: {shape[0]:,} images exceed the limit of {MAX_BATCH_IMAGES:,} per file; split it")
    if len(shape) not in (2, 3, 4) or tuple(shape[-2:]) != (28, 28) or (len(shape) == 4 and shape[1] != 1):
        raise ReabsnetError(f"{path}: expected images of shape (N, 1, 28, 28), (N, 28, 28) or (28, 28), "
                            f"the file holds {tuple(shape)}")


def _load_array(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        with open(path, "rb") as f:
            _check_header(path, *_npy_header(f))
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as f:
        key = next((k for k in ARRAY_KEYS if k in f.files), None)
        if key is None:
            raise ReabsnetError(f"{path}: no array named {', '.join(ARRAY_KEYS)} (has: {', '.join(f.files) or 'none'})")
        with f.zip.open(f"{key}.npy") as member:
            _check_header(path, *_npy_header(member))
        return f[key]


def _read_array(path: Path) -> tuple[list[str], torch.Tensor]:
    try:
        arr = _load_array(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, SyntaxError,
            UnicodeError, MemoryError, OverflowError, NotImplementedError, TypeError, struct.error, zlib.error,
            tokenize.TokenError) as e:   # numpy's header parser tokenizes the header: the fuzz tests found this one
        raise ReabsnetError(f"{path}: not a readable numpy file ({type(e).__name__}: {e})") from None
    _check_header(path, arr.shape, arr.dtype)   # what was read, in case the header and the data disagree
    shape, arr = arr.shape, arr.reshape(-1, 1, 28, 28)
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0 - 0.5
    elif np.issubdtype(arr.dtype, np.floating):
        x = arr.astype(np.float32)   # a float64 beyond float32's range becomes inf, refused below
        finite = np.isfinite(x)
        if not finite.all():
            raise ReabsnetError(f"{path}: {int((~finite).sum()):,} pixel values are NaN or infinite")
        if x.size and (x.min() < -0.5 - 1e-6 or x.max() > 0.5 + 1e-6):
            raise ReabsnetError(f"{path}: float images must lie in [-0.5, 0.5] (x/255 - 0.5); "
                                f"got [{x.min():.3f}, {x.max():.3f}]")
    else:
        raise ReabsnetError(f"{path}: images must be uint8 or float, not {arr.dtype}")
    if not len(x):
        raise ReabsnetError(f"{path}: holds no images (shape {shape})")
    return [f"{path.name}[{i}]" for i in range(len(x))], torch.from_numpy(np.clip(x, -0.5, 0.5))
