"""The command line, end to end: the smoke profile trains a distilled master; bad input is one line, exit != 0."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

from homes import copy_networks
from reabsnet.cli import main


def test_train_master_smoke_end_to_end_then_reuses_artifacts(home, capsys, smoke_master, shared_home):
    # the session's smoke master (trained by the same train_master the command calls) seeds this home, so the
    # first command reuses it; the third command below trains init, teacher and master from scratch
    run = home / "runs" / "mnist" / "smoke"
    copy_networks(shared_home / "runs" / "mnist" / "smoke", run, ("init", "teacher", "master"))
    assert main(["-q", "train", "master", "--profile", "smoke", "--home", str(home), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "distilled at T=100" in out and "test accuracy" in out
    meta = json.loads((run / "master.json").read_text())
    assert meta["model"] == "master" and meta["distilled"] and meta["temperature"] == 100.0
    assert meta["metrics"]["test_accuracy"] > 0.85            # 3,000 images, 2+2 epochs: 0.90 (AMD CPU)
    assert meta["data_sha256"] and meta["sha256"] and meta["teacher_sha256"]
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}

    # a second run reuses every verified stage: nothing is rewritten, the same accuracy is printed
    assert main(["-q", "train", "master", "--profile", "smoke", "--home", str(home), "--device", "cpu"]) == 0
    assert capsys.readouterr().out == out
    assert before == {p.name: p.stat().st_mtime_ns for p in run.iterdir()}

    # a changed setting (the seed) is a new key: the stages are rebuilt
    assert main(["-q", "train", "master", "--profile", "smoke", "--home", str(home), "--seed", "1",
                 "--set", "master.epochs=1", "--set", "master.train_size=1000"]) == 0
    seed1 = json.loads((run / "master.json").read_text())
    assert seed1["seed"] == 1 and seed1["training"]["seconds"] > 0
    assert seed1["teacher_sha256"] != meta["teacher_sha256"] and seed1["init_sha256"] != meta["init_sha256"]


def _cli(*args: str, process: bool = False) -> subprocess.CompletedProcess:
    """The command's exit status, stdout and stderr. process=True runs `python -m reabsnet` (what a user runs,
    log lines included); otherwise main() in this process, which is the same code without the 4 s it takes a new
    process to import torch here (its log lines go to pytest's log capture, not to stderr)."""
    if process:
        return subprocess.run([sys.executable, "-m", "reabsnet", *args], capture_output=True, text=True)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:        # argparse's own errors
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("args,message,process", [
    (["train", "master", "--profile", "huge"], "unknown profile", True),
    (["train", "master", "--set", "master.lr=fast"], "not a valid", False),
    (["train", "master", "--device", "tpu"], "unknown device", False),
    (["data", "fetch", "--dataset", "cifar"], "unknown dataset", False),
    (["frobnicate"], "invalid choice", True),
    (["reproduce", "--workers", "0"], "--workers 0: must be between 1 and 64", False),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, message, process):
    proc = _cli(*args, *(["--home", str(tmp_path)] if args[0] != "frobnicate" else []), process=process)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def test_bad_source_dir_is_one_line(tmp_path):
    proc = _cli("-q", "data", "fetch", "--home", str(tmp_path), "--source", str(tmp_path / "nope"))
    want = f"reabsnet: error: source {tmp_path / 'nope'}: not a directory"
    assert proc.returncode == 2 and proc.stderr.strip() == want


def test_corrupt_cache_is_reported_then_missing_source_is_one_line(tmp_path):
    # refetching after a corrupt cache is covered in test_data; here the CLI must report the corrupt file and
    # then fail on the missing source with one line and exit 2, never a traceback
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fashion-mnist.npz").write_bytes(b"garbage")
    proc = _cli("data", "fetch", "--dataset", "fashion-mnist", "--home", str(tmp_path),
                "--source", str(tmp_path / "src"), process=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unusable" in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("reabsnet: error:")


def test_attack_cli_writes_a_verified_set_readable_without_pickles(shared_home, smoke_master, tmp_path, capsys):
    import numpy as np

    from reabsnet.attacks.run import load_set

    model = shared_home / "runs" / "mnist" / "smoke" / "master.safetensors"
    out = tmp_path / "df.npz"
    assert main(["-q", "attack", "--model", str(model), "--attack", "deepfool", "--n", "20", "--home",
                 str(shared_home), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 20 and summary["success_rate"] >= 0.9
    arrays, meta = load_set(out)
    assert meta["attack"] == "deepfool" and meta["model_sha256"] and arrays["target"] is None
    with np.load(out, allow_pickle=False) as f:
        assert f["x_adv"].shape == (20, 1, 28, 28) and f["x_adv"].min() >= -0.5
    assert main(["-q", "attack", "--model", str(model), "--attack", "cw-l2", "--targeted", "--preset", "smoke",
                 "--n", "8", "--home", str(shared_home), "--out", str(tmp_path / "cw.npz")]) == 0
    arrays, meta = load_set(tmp_path / "cw.npz")
    assert (arrays["target"] != arrays["y"]).all() and "reduced" in meta["preset_note"]
    # a tampered set is refused with one line
    out.write_bytes(out.read_bytes()[:-10])
    proc = _cli("attack", "--model", str(out), "--attack", "fgsm", "--home", str(shared_home))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_attack_cli_runs_the_autoattack_ensemble_and_square(shared_home, smoke_master, tmp_path, capsys):
    from reabsnet.attacks.run import load_set

    model = shared_home / "runs" / "mnist" / "smoke" / "master.safetensors"
    for attack in ("autoattack", "square"):
        out = tmp_path / f"{attack}.npz"
        assert main(["-q", "attack", "--model", str(model), "--attack", attack, "--preset", "smoke", "--n", "10",
                     "--set", "eps=0.2", "--home", str(shared_home), "--out", str(out)]) == 0
        summary = json.loads(capsys.readouterr().out)
        arrays, meta = load_set(out)
        assert summary["n"] == 10 and meta["settings"]["eps"] == 0.2 and "reduced" in meta["preset_note"]
        assert (arrays["linf"] <= 0.2 + 1e-5).all()
    # untargeted only: --targeted is refused in one line
    proc = _cli("attack", "--model", str(model), "--attack", "autoattack", "--targeted", "--preset", "smoke",
                "--n", "4", "--home", str(shared_home), "--out", str(tmp_path / "t.npz"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "untargeted" in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--attack", "jsma"], "unknown attack"),
    (["--attack", "fgsm", "--set", "eps=big"], "not a valid float"),
    (["--attack", "fgsm", "--set", "steps=3"], "KEY one of: eps"),
    (["--attack", "fgsm", "--preset", "turbo"], "unknown preset"),
])
def test_attack_cli_bad_input_is_one_line(shared_home, smoke_master, args, message):
    model = shared_home / "runs" / "mnist" / "smoke" / "master.safetensors"
    proc = _cli("attack", "--model", str(model), "--home", str(shared_home), *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


def test_classify_images_and_batches_and_reports_bad_files(smoke_run, shared_home, mnist, tmp_path):
    import numpy as np
    from PIL import Image

    x, y = mnist.split("test")
    digit = ((x[0, 0].numpy() + 0.5) * 255).round().astype(np.uint8)
    Image.fromarray(digit).resize((56, 56)).convert("RGB").save(tmp_path / "big.png")
    np.save(tmp_path / "batch.npy", x[:3].numpy())
    (tmp_path / "bad.png").write_bytes(b"not a png")
    proc = _cli("classify", str(tmp_path / "big.png"), str(tmp_path / "bad.png"), str(tmp_path / "batch.npy"),
                "--profile", "smoke", "--home", str(shared_home), process=True)
    out = proc.stdout.strip().splitlines()
    assert proc.returncode == 2                                     # one input failed
    assert [line.split(":")[0] for line in out] == ["big.png", "batch.npy[0]", "batch.npy[1]", "batch.npy[2]"]
    assert f"label {int(y[0])}" in out[0] and "guardian:" in out[0] and "P(adversarial)" in out[0]
    assert "converted to 28x28 grayscale" in proc.stderr
    assert "bad.png: not a readable image" in proc.stderr and "Traceback" not in proc.stderr


def test_classify_without_trained_models_is_one_line(tmp_path):
    proc = _cli("classify", "x.png", "--profile", "smoke", "--home", str(tmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "reabsnet reproduce" in lines[0]


def test_version_and_help_name_every_option_and_the_papers_authors(capsys):
    from reabsnet import __version__
    from reabsnet.cli import DEFAULT_PROFILE, PROFILE_NAMES, build_parser
    from reabsnet.profiles import PROFILES

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"reabsnet {__version__}"
    assert set(PROFILE_NAMES) == set(PROFILES) and DEFAULT_PROFILE in PROFILES
    parser = build_parser()
    assert "Chen, Meng, Sun, Tang and Zhu" in parser.description
    pending = [parser]
    while pending:                      # every option of every subcommand says what it does
        p = pending.pop()
        for action in p._actions:
            if action.choices and isinstance(action.choices, dict):
                pending += action.choices.values()
            elif action.dest != "help":
                assert action.help, f"{p.prog}: {action.option_strings or action.dest} has no help text"
