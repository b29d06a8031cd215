"""Files the pipeline writes: atomic writes, SHA-256, checkpoints as safetensors plus a JSON sidecar.

Every artifact is a pair `<stem>.<ext>` + `<stem>.json`. The sidecar is written last and records the SHA-256 of
the payload, so a crash between the two writes leaves a pair that fails verification and is recomputed; no reader
ever sees half a file because each file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from reabsnet.errors import ReabsnetError

SIDECAR_FORMAT = "reabsnet-artifact/1"


def data_home(override: str | os.PathLike | None = None) -> Path:
    """The directory for the data cache and artifacts: `override`, else $REABSNET_HOME, else ~/.cache/reabsnet."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("REABSNET_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "reabsnet"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are ordinary files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def copy_files(src: str | os.PathLike, names: Iterable[str], dest: str | os.PathLike | None) -> Path:
    """Copy the named files of the directory `src` that exist (a report without an adaptive stage has no adaptive
    figure) into `dest` (made when missing), each write atomic; returns where they now are (`src` itself when
    `dest` is None: nothing to copy)."""
    if dest is None:
        return Path(src)
    Path(dest).mkdir(parents=True, exist_ok=True)
    for name in names:
        if (Path(src) / name).exists():
            write_bytes_atomic(Path(dest) / name, (Path(src) / name).read_bytes())
    return Path(dest)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ReabsnetError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReabsnetError(f"{path}: not valid JSON ({e})") from None


def versions() -> dict[str, str]:
    """Library versions recorded in every sidecar and result, so a number can be traced to its software."""
    import safetensors

    from reabsnet import __version__

    return {
        "reabsnet": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }


def sidecar_path(payload: str | os.PathLike) -> Path:
    return Path(payload).with_suffix(".json")


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    """Write `tensors` as safetensors and `meta` (plus hash and versions) as the sidecar; return the sidecar."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
        digest = sha256_file(tmp)
    return write_sidecar(path, digest, meta)


def write_sidecar(payload: str | os.PathLike, digest: str, meta: dict[str, Any]) -> dict:
    """Record `meta` with the payload's SHA-256 and library versions; written after the payload, never before."""
    sidecar = {**meta, "format": SIDECAR_FORMAT, "sha256": digest, "versions": versions()}
    write_json_atomic(sidecar_path(payload), sidecar)
    return sidecar


def verify(path: str | os.PathLike) -> dict:
    """Check that `path` and its sidecar exist and agree; return the sidecar or raise ReabsnetError."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.exists():
        raise ReabsnetError(f"{path}: no such file")
    if not side.exists():
        raise ReabsnetError(f"{path}: its sidecar {side.name} is missing; the artifact is incomplete")
    meta = read_json(side)
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT or "sha256" not in meta:
        raise ReabsnetError(f"{side}: not a reabsnet sidecar")
    if sha256_file(path) != meta["sha256"]:
        raise ReabsnetError(f"{path}: SHA-256 does not match its sidecar; the file is corrupt or was modified")
    return meta


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Verify, then load a safetensors artifact (never unpickles). Returns (tensors, sidecar)."""
    meta = verify(path)
    try:
        return load_file(str(path)), meta
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise ReabsnetError(f"{path}: not a readable safetensors file ({e})") from None


def is_valid(path: str | os.PathLike, key: str | None = None) -> bool:
    """True if the artifact verifies and, when `key` is given, was produced from the same inputs."""
    try:
        meta = verify(path)
    except ReabsnetError:
        return False
    return key is None or meta.get("key") == key


def stage_key(*parts: Any) -> str:
    """A digest of a stage's inputs (configs, upstream hashes); an artifact is reused only if its key matches."""
    blob = json.dumps(parts, sort_keys=True, default=_jsonable).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tensors_sha256(tensors, extra=()) -> str:
    """SHA-256 of tensors' dtypes, shapes and bytes, in order (and of `extra`, JSON): a user's data, or a model's
    state_dict values, identified by content."""
    h = hashlib.sha256(json.dumps(list(extra), default=_jsonable).encode())
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_sha256(model) -> str:
    """A model's identity for stage keys when it has no checkpoint file: its state_dict, by content."""
    state = model.state_dict()
    return tensors_sha256([state[k] for k in sorted(state)], extra=sorted(state))


@contextlib.contextmanager
def folder_or_temporary(out: str | os.PathLike | None) -> Iterator[Path]:
    """`out` as a Path, or a temporary folder removed after the block."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="reabsnet-") as tmp:
        yield Path(tmp)
