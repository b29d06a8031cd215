"""The command line, end to end: the smoke profile trains a distilled master; bad input is one line, exit != 0."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reabsnet.cli import main


def test_train_master_smoke_end_to_end_then_reuses_artifacts(home, capsys):
    assert main(["-q", "train", "master", "--profile", "smoke", "--home", str(home), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "distilled at T=100" in out and "test accuracy" in out
    run = home / "runs" / "mnist" / "smoke"
    meta = json.loads((run / "master.json").read_text())
    assert meta["model"] == "master" and meta["distilled"] and meta["temperature"] == 100.0
    assert meta["metrics"]["test_accuracy"] > 0.85            # 6,000 images, 2+2 epochs: about 0.93 here
    assert meta["data_sha256"] and meta["sha256"] and meta["teacher_sha256"]
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}

    # a second run reuses every verified stage: nothing is rewritten, the same accuracy is printed
    assert main(["-q", "train", "master", "--profile", "smoke", "--home", str(home), "--device", "cpu"]) == 0
    assert capsys.readouterr().out == out
    assert before == {p.name: p.stat().st_mtime_ns for p in run.iterdir()}

    # a changed setting (the seed) is a new key: the stages are rebuilt
    assert main(["-q", "train", "master", "--profile", "smoke", "--home", str(home), "--seed", "1",
                 "--set", "master.epochs=1", "--set", "master.train_size=1000"]) == 0
    assert json.loads((run / "master.json").read_text())["seed"] == 1


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reabsnet", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args,message", [
    (["train", "master", "--profile", "huge"], "unknown profile"),
    (["train", "master", "--set", "master.lr=fast"], "not a valid"),
    (["train", "master", "--device", "tpu"], "unknown device"),
    (["data", "fetch", "--dataset", "cifar"], "unknown dataset"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, message):
    proc = _cli(*args, *(["--home", str(tmp_path)] if args[0] != "frobnicate" else []))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def test_bad_source_dir_is_one_line(tmp_path):
    proc = _cli("-q", "data", "fetch", "--home", str(tmp_path), "--source", str(tmp_path / "nope"))
    assert proc.returncode == 2 and proc.stderr.strip() == f"reabsnet: error: source {tmp_path / 'nope'}: not a directory"


def test_corrupt_cache_is_reported_and_refetched_from_source(tmp_path):
    from fakes import tiny_raw, write_idx_dir  # noqa: F401  (kept import-light for the subprocess tests)
    src = tmp_path / "src"
    # a real-looking MNIST source is too big to fake; the data tests cover refetching. Here: a garbage cache
    # file for fashion-mnist without any source must give one line and exit 2, never a traceback.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fashion-mnist.npz").write_bytes(b"garbage")
    proc = _cli("data", "fetch", "--dataset", "fashion-mnist", "--home", str(tmp_path), "--source", str(src))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unusable" in proc.stderr
