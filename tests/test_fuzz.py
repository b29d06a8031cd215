"""Property-based fuzzing of every reader of user-supplied bytes and of the command line's settings: each call either
succeeds or raises ReabsnetError (the CLI: exit 2 and one line), never anything else.

`make test` runs a few hundred derandomised examples per target; `pytest -m slow tests/test_fuzz.py` runs thousands
of random ones.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reabsnet.artifacts import sha256_file, write_sidecar
from reabsnet.attacks import ATTACKS
from reabsnet.attacks.settings import attack_settings, parse_settings
from reabsnet.cli import main
from reabsnet.data.idx import maybe_gunzip, parse_idx
from reabsnet.data.images import read_inputs
from reabsnet.data.sources import unpickle_arrays
from reabsnet.errors import ReabsnetError
from reabsnet.models import create_model, load_model, save_model
from reabsnet.profiles import get_profile

FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=3000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def fuzz(strategy):
    """Two tests from one property: FAST in `make test`, SLOW under -m slow."""
    def wrap(check):
        fast = FAST(given(strategy)(check))
        slow = pytest.mark.slow(SLOW(given(strategy)(check)))
        return fast, slow
    return wrap


def succeeds_or_refuses(fn, *args, **kwargs):
    """Run fn; a ReabsnetError is an allowed answer (returns None); any other exception or warning fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*converted to 28x28.*")
        try:
            return fn(*args, **kwargs)
        except ReabsnetError as e:
            assert str(e) and "\n" not in str(e)
            return None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _valid_images() -> dict[str, bytes]:
    from PIL import Image

    img = Image.fromarray((np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28))
    out = {}
    for fmt, ext in (("PNG", ".png"), ("BMP", ".bmp"), ("GIF", ".gif"), ("JPEG", ".jpg"), ("TIFF", ".tif")):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[ext] = buf.getvalue()
    return out


VALID_IMAGES = _valid_images()
SUFFIXES = [".npy", ".npz", ".png", ".jpg", ".bmp", ".gif", ".tif", ".webp", ".pgm", ""]


@st.composite
def mutated(draw, blob: bytes):
    """`blob` with a few bytes overwritten, inserted or cut: damaged headers more than random noise does."""
    data = bytearray(blob)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["set", "insert", "cut"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i:i + draw(st.integers(1, 64))]
    return bytes(data)


# -- readers of user files ------------------------------------------------------------------------------------------

def _check_read(scratch, suffix: str, blob: bytes) -> None:
    path = scratch / f"input{suffix}"
    path.write_bytes(blob)
    got = succeeds_or_refuses(read_inputs, path)
    if got is not None:
        names, x = got
        assert x.dtype == torch.float32 and x.shape == (len(names), 1, 28, 28) and len(names) >= 1
        assert torch.isfinite(x).all() and x.min() >= -0.5 and x.max() <= 0.5


@fuzz(st.tuples(st.sampled_from(SUFFIXES), st.binary(max_size=2048)))
def test_random_bytes_under_any_suffix(scratch, case):
    _check_read(scratch, *case)


test_random_bytes_under_any_suffix, test_random_bytes_under_any_suffix_slow = test_random_bytes_under_any_suffix


@fuzz(st.sampled_from(sorted(VALID_IMAGES)).flatmap(lambda ext: st.tuples(st.just(ext), mutated(VALID_IMAGES[ext]))))
def test_damaged_image_headers(scratch, case):
    _check_read(scratch, *case)


test_damaged_image_headers, test_damaged_image_headers_slow = test_damaged_image_headers

DTYPES = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes(),
                   hnp.complex_number_dtypes())
SHAPES = st.one_of(st.sampled_from([(28, 28), (0, 28, 28), (1, 28, 28), (3, 1, 28, 28), (2, 2, 28, 28), (3, 5),
                                    (28,), (), (1, 28, 27), (0,)]),
                   hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))


def _cast(v: float, dtype: np.dtype):
    with np.errstate(over="ignore"):   # 1e30 in float16 is inf: one more special value
        return np.array(v).astype(dtype).item()


@st.composite
def arrays(draw):
    dtype = draw(DTYPES)
    shape = draw(SHAPES)
    # uniform values, or special ones (NaN, inf, huge, tiny, the box edges)
    elements = None
    if dtype.kind == "f":
        elements = st.one_of(st.floats(-0.5, 0.5, width=dtype.itemsize * 8),
                             st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.5000001, -0.5])
                             .map(lambda v: _cast(v, dtype)))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@fuzz(st.tuples(arrays(), st.sampled_from(["npy", "x_adv", "x", "images", "other"])))
def test_random_arrays_in_npy_and_npz(scratch, case):
    arr, how = case
    if how == "npy":
        buf = io.BytesIO()
        np.save(buf, arr)
        _check_read(scratch, ".npy", buf.getvalue())
    else:
        buf = io.BytesIO()
        np.savez(buf, **{how: arr})
        _check_read(scratch, ".npz", buf.getvalue())


test_random_arrays_in_npy_and_npz, test_random_arrays_in_npy_and_npz_slow = test_random_arrays_in_npy_and_npz


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@fuzz(mutated(_npy(np.zeros((2, 28, 28), np.uint8))))
def test_damaged_npy_headers(scratch, blob):
    _check_read(scratch, ".npy", blob)


test_damaged_npy_headers, test_damaged_npy_headers_slow = test_damaged_npy_headers


# -- readers of data sources and artifacts --------------------------------------------------------------------------

def _idx(arr: np.ndarray) -> bytes:
    from reabsnet.data.idx import encode_idx

    return encode_idx(arr)


@fuzz(st.one_of(st.binary(max_size=512), mutated(_idx(np.zeros((3, 4, 4), np.uint8)))))
def test_idx_reader(blob):
    got = succeeds_or_refuses(lambda b: parse_idx(maybe_gunzip(b), "fuzz.idx"), blob)
    assert got is None or isinstance(got, np.ndarray)


test_idx_reader, test_idx_reader_slow = test_idx_reader

ARRAY_PICKLE = pickle.dumps((np.zeros(3, np.float32), np.arange(4)), protocol=2)


@fuzz(st.one_of(st.binary(max_size=512), mutated(ARRAY_PICKLE)))
def test_restricted_unpickler(blob):
    succeeds_or_refuses(unpickle_arrays, blob, "fuzz.pkl")


test_restricted_unpickler, test_restricted_unpickler_slow = test_restricted_unpickler

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3), max_leaves=8)


@pytest.fixture(scope="module")
def guardian_bytes(scratch):
    path = scratch / "real.safetensors"
    save_model(path, create_model("guardian"))
    return path.read_bytes(), json.loads(path.with_suffix(".json").read_text())


@fuzz(st.tuples(st.one_of(st.binary(max_size=256), st.just(b"keep")),
                st.dictionaries(st.sampled_from(["model", "model_kwargs", "format", "key", "sha256"]), JSON)))
def test_checkpoint_loader(scratch, guardian_bytes, case):
    payload, side = case
    real, real_side = guardian_bytes
    path = scratch / "ckpt.safetensors"
    path.write_bytes(real if payload == b"keep" else payload)
    # a sidecar whose hash matches (so the loader gets past verification) with fuzzed fields over the real ones
    write_sidecar(path, sha256_file(path), {**{k: v for k, v in real_side.items() if k != "sha256"},
                                            **{k: v for k, v in side.items() if k != "sha256"}})
    got = succeeds_or_refuses(load_model, path)
    assert got is None or isinstance(got[0], torch.nn.Module)


test_checkpoint_loader, test_checkpoint_loader_slow = test_checkpoint_loader


@fuzz(st.one_of(st.binary(max_size=64), JSON.map(lambda v: json.dumps(v).encode())))
def test_sidecar_reader(scratch, blob):
    path = scratch / "side.safetensors"
    path.write_bytes(b"payload")
    path.with_suffix(".json").write_bytes(blob)
    succeeds_or_refuses(load_model, path)


test_sidecar_reader, test_sidecar_reader_slow = test_sidecar_reader


# -- the command line's settings ------------------------------------------------------------------------------------

PROFILE_KEYS = ["seed", "temperature", "distill", "init_epochs", "master.epochs", "master.lr", "master.schedule",
                "guardian.shard_size", "guardian.train.batch_size", "modifier.threshold", "modifier.revise_to",
                "modifier.overshoot", "eval.n", "eval.preset", "baseline.method", "baseline.eps",
                "adaptive.restarts", "adaptive.enabled", "dataset", "eval", "nope", "master.epochs.x", ""]
ATTACK_KEYS = sorted({k for a in ATTACKS.values() for k in attack_settings(a)} | {"", "box", "x", "eps "})
VALUES = st.one_of(st.text(max_size=12), st.integers(-10**30, 10**30).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["0", "-1", "1", "0.5", "nan", "inf", "-inf", "1e400", "none", "true", "linf",
                                    "l2", "ce", "dlr", "margin", "paper", "auto", " 3 ", "0x10", "1_000"]))


def setting_strings(keys):
    return st.one_of(st.tuples(st.sampled_from(keys), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
                     st.text(max_size=24))


@fuzz(st.tuples(st.sampled_from(["smoke", "quick", "paper"]), st.lists(setting_strings(PROFILE_KEYS), max_size=3)))
def test_profile_overrides(case):
    name, overrides = case
    succeeds_or_refuses(get_profile, name, overrides)


test_profile_overrides, test_profile_overrides_slow = test_profile_overrides


@fuzz(st.tuples(st.sampled_from(sorted(ATTACKS)), st.lists(setting_strings(ATTACK_KEYS), max_size=3)))
def test_attack_settings(case):
    name, items = case
    succeeds_or_refuses(parse_settings, ATTACKS[name], items)


test_attack_settings, test_attack_settings_slow = test_attack_settings


def _cli_one_line(argv, capsys) -> None:
    """In process: exit 0, or exit 2 with exactly one line on stderr; never a traceback or an internal error."""
    try:
        code = main(argv)
    except SystemExit as e:     # argparse's own refusals (e.g. --threshold abc) exit 2 with one line
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "internal error" not in err[0], (argv, code, err)


@fuzz(st.tuples(st.sampled_from(sorted(ATTACKS)), st.lists(setting_strings(ATTACK_KEYS), min_size=1, max_size=2)))
def test_cli_attack_settings(scratch, capsys, case):
    # --model does not exist: whatever the settings, the run ends in one line (the setting's, or the missing file's)
    name, items = case
    _cli_one_line(["-q", "attack", "--model", str(scratch / "absent.safetensors"), "--attack", name,
                   *[a for item in items for a in ("--set", item)]], capsys)


@fuzz(st.tuples(st.sampled_from(["train master", "train madry", "reproduce"]),
                st.lists(setting_strings(PROFILE_KEYS), min_size=1, max_size=2)))
def test_cli_profile_settings(scratch, capsys, monkeypatch, case):
    # data loading is stubbed to refuse, so a valid setting ends there, in one line, before any training
    def no_data(*args, **kwargs):
        raise ReabsnetError("stop: no data in this test")

    monkeypatch.setattr("reabsnet.data.load", no_data)
    command, items = case
    _cli_one_line(["-q", *command.split(), "--home", str(scratch), "--device", "cpu",
                   *[a for item in items for a in ("--set", item)]], capsys)


for _name in ("test_cli_attack_settings", "test_cli_profile_settings"):
    globals()[_name], globals()[f"{_name}_slow"] = globals()[_name]


@fuzz(st.one_of(st.text(max_size=10), st.sampled_from(["0", "1", "nan", "-0.5", "0.5", "inf", "1e-300"])))
def test_cli_threshold(scratch, capsys, value):
    _cli_one_line(["-q", "classify", "x.png", "--profile", "smoke", "--home", str(scratch), f"--threshold={value}"],
                  capsys)


test_cli_threshold, test_cli_threshold_slow = test_cli_threshold
