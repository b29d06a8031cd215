"""Shipped networks (reabsnet/shipped/<dataset>/<profile>/): taken as the stages' artifacts when their keys match,
verified by SHA-256 like any other artifact, refused when modified, ignored with --retrain."""

from __future__ import annotations

import pytest
import torch

from homes import copy_networks
from reabsnet.artifacts import verify
from reabsnet.cli import main
from reabsnet.errors import ReabsnetError
from reabsnet.profiles import get_profile
from reabsnet.stages import SHIPPED_MODELS
from reabsnet.train import guardian as guardian_stage
from reabsnet.train import madry as madry_stage
from reabsnet.train import master as master_stage
from reabsnet.train import train_madry, train_master
from reabsnet.train.guardian import train_guardian

NETWORKS = ("init", "teacher", "master", "guardian", "madry")
CPU = torch.device("cpu")


class TrainingRan(Exception):
    pass


@pytest.fixture
def no_training(monkeypatch):
    """Any training or guardian-data stage raises: a test passes only if every network came from elsewhere."""
    def refuse(*args, **kwargs):
        raise TrainingRan

    for module in (master_stage, guardian_stage, madry_stage):
        monkeypatch.setattr(module, "fit", refuse)
    monkeypatch.setattr(guardian_stage, "deepfool_split", refuse)


@pytest.fixture
def shipped_smoke(tmp_path, smoke_run):
    """The smoke run's networks laid out as shipped models: <root>/mnist/smoke/<name>.safetensors + .json."""
    root = tmp_path / "models"
    copy_networks(smoke_run, root / "mnist" / "smoke", NETWORKS)
    return root


def _all_networks(profile, splits, home, shipped):
    master, master_meta = train_master(profile, splits, CPU, home, shipped)
    _, guardian_meta = train_guardian(profile, splits, master, master_meta, CPU, home, shipped)
    _, madry_meta = train_madry(profile, splits, CPU, home, shipped)
    return master_meta, guardian_meta, madry_meta


def test_empty_home_with_shipped_models_trains_nothing(home, mnist, shipped_smoke, no_training):
    metas = _all_networks(get_profile("smoke"), mnist, home, shipped_smoke)
    shipped = shipped_smoke / "mnist" / "smoke"
    assert [m["sha256"] for m in metas] == [verify(shipped / f"{n}.safetensors")["sha256"]
                                            for n in ("master", "guardian", "madry")]
    run = home / "runs" / "mnist" / "smoke"
    assert not (run / "guardian-data").exists()        # the guardian's DeepFool data is not built either
    for name in NETWORKS:                              # copied into the run directory, verified there too
        assert verify(run / f"{name}.safetensors")["sha256"] == verify(shipped / f"{name}.safetensors")["sha256"]


def test_shipped_model_made_with_other_settings_is_not_taken(home, mnist, shipped_smoke, no_training):
    with pytest.raises(TrainingRan):   # another seed is another key: the stage trains
        train_master(get_profile("smoke", ["seed=3"]), mnist, CPU, home, shipped_smoke)


def test_modified_shipped_model_is_refused_then_retrain_ignores_it(home, mnist, shipped_smoke, no_training):
    path = shipped_smoke / "mnist" / "smoke" / "teacher.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(ReabsnetError, match="shipped model refused.*SHA-256 does not match.*--retrain"):
        train_master(get_profile("smoke"), mnist, CPU, home, shipped_smoke)
    assert not (home / "runs" / "mnist" / "smoke" / "teacher.safetensors").exists()
    with pytest.raises(TrainingRan):   # shipped=None (--retrain): the stage trains instead
        train_master(get_profile("smoke"), mnist, CPU, home, None)


def test_cli_refuses_a_modified_shipped_model_in_one_line(home, shipped_smoke, no_training, monkeypatch, capsys):
    monkeypatch.setattr("reabsnet.stages.SHIPPED_MODELS", shipped_smoke)
    (shipped_smoke / "mnist" / "smoke" / "init.json").write_text("{not json")
    args = ["train", "master", "--profile", "smoke", "--home", str(home), "--device", "cpu"]
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shipped model refused" in err[0] and "init.json" in err[0]
    with pytest.raises(TrainingRan):
        main(["--debug", *args, "--retrain"])


def test_classify_falls_back_to_the_shipped_models(home, shipped_smoke, monkeypatch, capsys, tmp_path):
    import numpy as np

    monkeypatch.setattr("reabsnet.stages.SHIPPED_MODELS", shipped_smoke)
    batch = tmp_path / "zeros.npy"
    np.save(batch, np.zeros((2, 28, 28), dtype=np.uint8))
    assert main(["-q", "classify", str(batch), "--profile", "smoke", "--home", str(home), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("label ") == 2


@pytest.mark.skipif(not (SHIPPED_MODELS / "mnist" / "paper").exists(), reason="no shipped paper models here")
def test_the_repository_ships_the_paper_profiles_networks(home, mnist, no_training):
    # The shipped files verify and their keys are those of the paper profile as it is now: a change to the profile
    # (or to a stage key) that would silently retrain them fails here instead.
    master_meta, guardian_meta, madry_meta = _all_networks(get_profile("paper"), mnist, home, SHIPPED_MODELS)
    assert master_meta["distilled"] and master_meta["metrics"]["test_accuracy"] > 0.99
    assert guardian_meta["metrics"]["val_accuracy"] > 0.98 and guardian_meta["train_set"]["images"] == 55000
    assert madry_meta["method"] == "short-pgd" and madry_meta["metrics"]["worst"]["rate"] > 0.85


def test_the_shipped_paper_baseline_is_found_by_an_explicit_short_pgd_on_any_device():
    """`--set baseline.method=short-pgd` is how a GPU user reuses the shipped CPU baseline ("auto" means Madry's
    91-epoch recipe there): its key is the shipped one; an explicit "madry" on a CPU is "auto" on a GPU."""
    from reabsnet.artifacts import read_json
    from reabsnet.train.madry import baseline_key, resolve_method

    meta = read_json(SHIPPED_MODELS / "mnist" / "paper" / "madry.json")
    data = meta["data_sha256"]
    for method, device in (("auto", "cpu"), ("short-pgd", "cpu"), ("short-pgd", "cuda")):
        profile = get_profile("paper", [f"baseline.method={method}"])
        resolved = resolve_method(profile.baseline, torch.device(device))
        assert baseline_key(profile, resolved, data) == meta["key"], (method, device)
    auto, madry = get_profile("paper", ["baseline.method=auto"]), get_profile("paper", ["baseline.method=madry"])
    assert baseline_key(madry, resolve_method(madry.baseline, CPU), data) == \
        baseline_key(auto, resolve_method(auto.baseline, torch.device("cuda")), data)
    assert baseline_key(auto, "madry", data) != meta["key"]


def test_the_paper_profile_takes_the_shipped_baseline_on_a_gpu_too():
    """`make reproduce PROFILE=paper` on a GPU must not start Madry's 91-epoch recipe: the profile says short-pgd."""
    from reabsnet.artifacts import read_json
    from reabsnet.train.madry import baseline_key, resolve_method

    meta = read_json(SHIPPED_MODELS / "mnist" / "paper" / "madry.json")
    for name in ("paper", "paper-subset"):
        profile = get_profile(name)
        resolved = resolve_method(profile.baseline, torch.device("cuda"))
        assert baseline_key(profile, resolved, meta["data_sha256"]) == meta["key"], name


@pytest.mark.skipif(not (SHIPPED_MODELS / "mnist" / "paper").exists(), reason="no shipped paper models here")
def test_the_paper_subset_profile_evaluates_the_shipped_paper_networks(home, mnist, no_training):
    metas = _all_networks(get_profile("paper-subset"), mnist, home, SHIPPED_MODELS)
    shipped = SHIPPED_MODELS / "mnist" / "paper"
    assert [m["sha256"] for m in metas] == [verify(shipped / f"{n}.safetensors")["sha256"]
                                            for n in ("master", "guardian", "madry")]
    assert (home / "runs" / "mnist" / "paper-subset" / "master.safetensors").exists()


def test_load_pretrained_gives_the_papers_reabsnet_and_baseline_verified(mnist, tmp_path):
    import shutil

    import reabsnet
    from reabsnet.defense import ReabsNet

    assert reabsnet.pretrained_names() == ["mnist-paper", "mnist-paper-madry"]
    net = reabsnet.load_pretrained("mnist-paper")
    assert isinstance(net, ReabsNet) and not net.training and not net.master.training
    x, y = mnist.split("test", 100)
    pred = net.predict(x)
    assert (pred.label == y).sum() >= 99 and not pred.flagged.any()   # the committed report: 99.45% on 10,000
    madry = reabsnet.load_pretrained("mnist-paper-madry")
    assert madry.registry_name == "madry" and net.master.registry_name == "master" and not madry.training
    assert net.guardian.registry_name == "guardian" and net.threshold == get_profile("paper").modifier.threshold
    assert (madry(x).argmax(1) == y).sum() >= 98
    with pytest.raises(ReabsnetError, match="unknown pretrained network 'mnist'; choose one of: mnist-paper"):
        reabsnet.load_pretrained("mnist")
    root = tmp_path / "models"
    shutil.copytree(SHIPPED_MODELS / "mnist" / "paper", root / "mnist" / "paper")
    path = root / "mnist" / "paper" / "guardian.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(ReabsnetError, match="SHA-256 does not match"):
        reabsnet.load_pretrained("mnist-paper", root=root)
    with pytest.raises(ReabsnetError, match="no shipped networks there.*reinstall it"):
        reabsnet.load_pretrained("mnist-paper", root=tmp_path / "elsewhere")


def test_classify_on_a_fresh_home_uses_the_shipped_paper_networks(home, mnist, capsys, tmp_path):
    import numpy as np

    x, y = mnist.split("test", 3)
    batch = tmp_path / "three.npy"
    np.save(batch, ((x[:, 0] + 0.5) * 255).round().to(torch.uint8).numpy())
    assert main(["-q", "classify", str(batch), "--home", str(home), "--device", "cpu"]) == 0
    labels = [int(line.split("label ")[1].split(";")[0]) for line in capsys.readouterr().out.splitlines()]
    assert labels == y.tolist()
