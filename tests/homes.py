"""Test homes seeded from the session's smoke run, so a test retrains only what it is about."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path


def copy_networks(src: Path, dest: Path, names: Iterable[str]) -> None:
    """Copy the named networks of one run directory (checkpoint and sidecar) into another."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        for suffix in (".safetensors", ".json"):
            shutil.copy2(src / f"{name}{suffix}", dest / f"{name}{suffix}")
