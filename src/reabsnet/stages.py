"""A stage is a function from verified inputs to a verified artifact: reuse it when its key matches, else rebuild.

Keys digest everything the artifact depends on (settings, seed, upstream hashes), so a changed input recomputes
the stage and an interrupted run resumes at the first stage without a valid artifact.

Trained networks also ship with the package (`reabsnet/shipped/<dataset>/<profile>/`, package data of the wheel and
of an editable install alike): a shipped model
whose key matches is taken as the stage's artifact, after the same SHA-256 check as any other, and copied into the
run directory, so the stages downstream of it run without retraining. A shipped file that fails the check is an
error, never silently replaced by a retrained one.
"""

from __future__ import annotations

import importlib.resources
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from reabsnet import distributed
from reabsnet.artifacts import atomic_path, data_home, is_valid, sidecar_path, verify
from reabsnet.errors import ReabsnetError
from reabsnet.models import load_model, place, save_model

log = logging.getLogger(__name__)

# The shipped networks: package data, found the same way in a wheel and in an editable install
SHIPPED_MODELS = Path(str(importlib.resources.files("reabsnet") / "shipped"))
# ... and the full-scale reports of the shipped networks (docs/results/<dataset>-<profile>/ of a clone; absent from
# an installed wheel, where a subset run then has no full-scale report to set its cells beside)
SHIPPED_REPORTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def run_dir(dataset: str, profile: str, home: str | Path | None = None) -> Path:
    """Where a profile's artifacts live: <home>/runs/<dataset>/<profile>/."""
    return data_home(home) / "runs" / dataset / profile


def shipped_dir(dataset: str, profile: str, root: Path | None = SHIPPED_MODELS) -> Path | None:
    """Where a profile's shipped networks live (<root>/<dataset>/<profile>/); None when `root` is None (retrain)."""
    return None if root is None else Path(root) / dataset / profile


def _take_shipped(path: Path, key: str, shipped: Path | None) -> bool:
    """Copy the shipped twin of `path` into place if its key matches; refuse one that fails verification."""
    if shipped is None or not (shipped / path.name).exists():
        return False
    source = shipped / path.name
    try:
        meta = verify(source)
    except ReabsnetError as e:
        raise ReabsnetError(f"shipped model refused: {e}; restore it (reinstall reabsnet, or git checkout "
                            f"src/reabsnet/shipped/) or rerun with --retrain to train it instead") from None
    if meta.get("key") != key:                     # made with other settings: not this stage's artifact
        return False
    for src in (source, sidecar_path(source)):     # payload first, sidecar last, as save_tensors writes them
        with atomic_path(path.parent / src.name) as tmp:
            shutil.copyfile(src, tmp)
    log.info("using the shipped %s", source)
    return True


def cached_model(path: Path, key: str, build: Callable[[], tuple[nn.Module, dict]] | None,
                 device: torch.device, shipped: Path | None = None) -> tuple[nn.Module, dict] | None:
    """Load the model at `path` if it verifies and was made with `key`; else take its shipped twin in `shipped`
    (a folder) if that was made with `key`; otherwise build, save and return it (with `build` None: return None).
    Either way the model comes back in eval mode on `device`."""
    if distributed.is_main() and not is_valid(path, key):
        _take_shipped(path, key, shipped)     # rank 0 alone copies; the others then find it in place
    distributed.barrier()
    if is_valid(path, key):
        log.info("reusing %s", path)
        model, meta = load_model(path)
        return place(model, device).eval(), meta
    if build is None:
        return None
    model, meta = build()        # under torchrun: built by every rank together, saved by rank 0
    if distributed.is_main():
        meta = save_model(path, model, {**meta, "key": key})
    distributed.barrier()
    if not distributed.is_main():
        model, meta = load_model(path)
    return place(model, device).eval(), meta
