"""A stage is a function from verified inputs to a verified artifact: reuse it when its key matches, else rebuild.

Keys digest everything the artifact depends on (settings, seed, upstream hashes), so a changed input recomputes
the stage and an interrupted run resumes at the first stage without a valid artifact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from reabsnet.artifacts import data_home, is_valid
from reabsnet.models import load_model, place, save_model

log = logging.getLogger(__name__)


def run_dir(dataset: str, profile: str, home: str | Path | None = None) -> Path:
    """Where a profile's artifacts live: <home>/runs/<dataset>/<profile>/."""
    return data_home(home) / "runs" / dataset / profile


def cached_model(path: Path, key: str, build: Callable[[], tuple[nn.Module, dict]],
                 device: torch.device) -> tuple[nn.Module, dict]:
    """Load the model at `path` if it verifies and was made with `key`; otherwise build, save and return it.
    Either way the model comes back in eval mode on `device`."""
    if is_valid(path, key):
        log.info("reusing %s", path)
        model, meta = load_model(path)
        return place(model, device).eval(), meta
    model, meta = build()
    meta = save_model(path, model, {**meta, "key": key})
    return place(model, device).eval(), meta
