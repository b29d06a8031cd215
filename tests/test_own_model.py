"""Bring your own classifier and data: the generic guardian, fit_guardian, evaluate_oblivious, evaluate_adaptive,
the data loaders and the fit-guardian / evaluate commands, on a synthetic 3x16x16 set and on MNIST."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import reabsnet
from reabsnet.cli import main
from reabsnet.errors import ReabsnetError
from reabsnet.models import create_model, place, save_model
from reabsnet.profiles import AdamTrainConfig
from reabsnet.train.loop import accuracy, cross_entropy_at, fit

EPS = 8 / 255
# the default off MNIST: validation accuracy 0.983 on this module's 3x16x16 set (0.858 on `synthetic`'s 3x32x32 default)
GUARDIAN_RUN = AdamTrainConfig(epochs=12, batch_size=64, lr=1e-3)
NOT_LOGITS = nn.Sequential(nn.Flatten(), nn.Linear(768, 4), nn.Unflatten(1, (2, 2)))      # (N, 2, 2) outputs
# colour images at the guardian's smallest side: the networks train in seconds (at 3x32x32, the default of
# `synthetic`, the ResNet and its guardian took a minute on 2 cores)
SHAPE = (3, 16, 16)


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return reabsnet.synthetic(n, shape=SHAPE, shift=5, seed=seed)


# --- the guardian's shape ---

def test_the_guardian_on_28x28_images_is_figure_3s_network_exactly():
    """The adaptive pooling that lets the guardian take other shapes is MNIST's 2x2 pooling on 28x28 inputs."""
    torch.manual_seed(0)
    g = create_model("guardian").eval()
    x = torch.rand(8, 1, 28, 28) - 0.5
    before = g(x)
    assert isinstance(g.fine[7], nn.AdaptiveMaxPool2d) and isinstance(g.coarse[5], nn.AdaptiveMaxPool2d)
    g.fine[7], g.coarse[5] = nn.MaxPool2d(2), nn.MaxPool2d(2)
    assert torch.equal(before, g(x))
    assert g.registry_kwargs == {}          # MNIST checkpoints keep their sidecar


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 16, 16), (3, 64, 48)])
def test_the_guardian_takes_colour_and_other_sizes(shape):
    g = create_model("guardian", in_channels=shape[0]).eval()
    assert g(torch.zeros(4, *shape)).shape == (4, 2)


# --- the synthetic 3x16x16 data, end to end ---

@pytest.fixture(scope="module")
def synthetic_setup(tmp_path_factory):
    """A small ResNet trained on the synthetic set and a guardian fitted to it (about 10 s on one core)."""
    x_train, y_train = images(1200, seed=1)
    x_test, y_test = images(300, seed=2)
    torch.manual_seed(0)
    master = place(create_model("resnet-small"), "cpu")
    fit(master, (x_train, y_train), (x_test, y_test), AdamTrainConfig(epochs=4, batch_size=64, lr=2e-3),
        loss_fn=cross_entropy_at(1.0), generator=torch.Generator().manual_seed(0), desc="resnet")
    master.eval()
    out = tmp_path_factory.mktemp("guardian")
    guardian, record = reabsnet.fit_guardian(master, x_train, y_train=y_train, out=out)   # default_recipe
    return master, guardian, record, x_test, y_test, out


def test_synthetic_data_is_learnable_but_not_linearly_trivial():
    x, y = reabsnet.synthetic(600, seed=3)
    assert x.shape == (600, 3, 32, 32) and x.min() >= -0.5 and x.max() <= 0.5
    assert torch.equal(torch.bincount(y), torch.full((10,), 60))
    # nearest class mean (a linear rule) is far from perfect: the shifts and clutter make it not trivial
    x_train, y_train = reabsnet.synthetic(2000, seed=4)
    means = torch.stack([x_train[y_train == c].flatten(1).mean(0) for c in range(10)])
    nearest = torch.cdist(x.flatten(1), means).argmin(1)
    assert (nearest == y).float().mean() < 0.9


def test_fit_guardian_detects_the_masters_deepfool_examples_and_reabsnet_keeps_clean_accuracy(synthetic_setup):
    master, guardian, record, x, y, _ = synthetic_setup
    assert accuracy(master, x, y) > 0.9
    assert record["metrics"]["val_accuracy"] > 0.75, record["training"]
    assert record["train_set"]["kept"] > 1000          # of 1,080
    net = reabsnet.ReabsNet(master, guardian).eval()
    assert (net.predict_batches(x).label == y).float().mean() >= accuracy(master, x, y) - 0.02
    r = reabsnet.evaluate_oblivious(net, x[:60], y[:60], attacks=["deepfool"])
    row = r["attacks"]["deepfool"]
    assert row["attack_success"]["rate"] > 0.9 and row["master_only"]["rate"] < 0.1
    assert row["detection"]["rate"] > 0.7 and row["roc_auc"] > 0.8
    assert row["reabsnet"]["rate"] > row["master_only"]["rate"] + 0.3     # the revision restores DeepFool


def test_fit_guardian_reuses_its_folder(synthetic_setup):
    master, guardian, _, _, _, out = synthetic_setup
    x_train, y_train = images(1200, seed=1)
    again, _ = reabsnet.fit_guardian(master, x_train, y_train=y_train, out=out, train=GUARDIAN_RUN)
    assert all(torch.equal(a, b) for a, b in zip(guardian.state_dict().values(), again.state_dict().values(),
                                                 strict=True))


def test_evaluate_adaptive_at_8_over_255_passes_its_sanity_checks(synthetic_setup):
    master, guardian, _, x, y, _ = synthetic_setup
    natural, _ = images(300, seed=7)
    result = reabsnet.evaluate_adaptive(master, guardian, x[:20], y[:20], bounds=[EPS / 2, EPS], budget="smoke",
                                        x_calibration=natural, binarization=3)
    r = result.results
    s = r["sanity"]
    assert s["monotone"]["holds"] and s["iterative_beats_single_step"]["holds"] and s["loss_increases"]["holds"]
    assert s["iterative_beats_single_step"]["bound"] == f"linf {EPS:g}"
    assert s["unbounded"]["pipeline_wrong"]["rate"] >= 0.9 and s["unbounded"]["eps"] == 1.0
    robust = result.robust_accuracy()
    assert set(robust) == {f"linf {EPS / 2:g}", f"linf {EPS:g}"}
    assert robust[f"linf {EPS:g}"] <= r["clean"]["reabsnet"]["rate"]
    # the master alone faces AutoAttack's ensemble beside it, and the reject policy's rate is reported too
    assert "master_autoattack" in r["bounds"][f"linf {EPS:g}"] and "selective" in r["bounds"][f"linf {EPS:g}"]
    # the detector attacks ran on what the others left standing, and the reject policy at calibrated thresholds
    attacks = r["bounds"][f"linf {EPS:g}"]["per_attack"]
    assert {f"{who}-orthogonal-pgd-linf-{EPS:.6g}" for who in ("joint", "bpda", "unrolled")} <= set(attacks)
    assert f"joint-selective-pgd-linf-{EPS:.6g}" in attacks
    assert r["calibration"]["val_images"] == 300 and set(r["calibration"]["thresholds"]) == {"0.01", "0.05", "0.5"}
    assert set(r["bounds"][f"linf {EPS:g}"]["fixed_fpr"]) == {"0.5", "fpr 0.01", "fpr 0.05", "fpr 0.5",
                                                                  "roc_auc_final_examples"}
    text = result.markdown()
    assert "| L-inf 0.0313725 |" in text and "iterative beats single-step at L-inf 0.0313725" in text
    # the binarization test of the reject policy, its inverted control and ReabsNet, at each bound
    tests = r["binarization"][f"linf {EPS:g}"]["tests"]["ReabsNet"]
    assert set(tests) == {"reject", "reject-inverted", "revise"}
    assert set(tests["revise"]["attacks"]) == {"BPDA APGD-CE", "unrolled APGD-CE", "joint APGD-CE", "any attack"}
    assert "| L-inf 0.0313725 | ReabsNet | ReabsNet (revision) |" in text


class Shift(nn.Module):
    """x + offset: a network trained on [-0.5, 0.5] made to take [0, 1]."""

    def __init__(self, net: nn.Module, offset: float):
        super().__init__()
        self.net, self.offset = net, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + self.offset)


def test_evaluate_adaptive_keeps_every_attack_in_the_users_box(synthetic_setup, tmp_path):
    from reabsnet.attacks.run import load_set

    master, guardian, _, x, y, _ = synthetic_setup
    result = reabsnet.evaluate_adaptive(Shift(master, -0.5), Shift(guardian, -0.5), x[:8] + 0.5, y[:8],
                                        bounds=[EPS], budget="smoke", box=(0.0, 1.0), out=tmp_path)
    assert result.results["sanity"]["unbounded"]["eps"] == 1.0
    sets = sorted(tmp_path.glob("adaptive/*.npz"))
    assert len(sets) >= 8
    for path in sets:
        arrays, _ = load_set(path)
        assert float(arrays["x_adv"].min()) >= 0.0 and float(arrays["x_adv"].max()) <= 1.0, path.name
    assert max(float(load_set(p)[0]["x_adv"].max()) for p in sets) > 0.9


def test_nested_bounds_attack_only_what_the_smaller_bound_left_and_agree_with_bounds_apart(synthetic_setup,
                                                                                            tmp_path):
    import json

    from reabsnet.security.api import BUDGETS

    master, guardian, _, x, y, _ = synthetic_setup
    small, large = f"linf {EPS / 2:g}", f"linf {EPS:g}"
    runs = {}
    for nested in (True, False):
        runs[nested] = reabsnet.evaluate_adaptive(
            master, guardian, x[:12], y[:12], bounds=[EPS, EPS / 2], budget=BUDGETS["smoke"], nested=nested,
            out=tmp_path / str(nested)).results
    nested, apart = runs[True]["bounds"], runs[False]["bounds"]
    assert runs[True]["nested"] and not runs[False]["nested"]
    # the smaller bound runs first and is the same evaluation either way
    assert nested[small]["reabsnet"] == apart[small]["reabsnet"] and nested[small]["selective"] == apart[small][
        "selective"]
    # at the larger bound, BPDA ran on exactly the images ReabsNet still held at the smaller one
    sidecar = json.loads((tmp_path / "True" / "adaptive" / f"bpda-apgd-ce-linf-{EPS:.6g}.json").read_text())
    assert len(sidecar["indices"]) == nested[small]["reabsnet"]["k"] == nested[large]["per_attack"][
        f"bpda-apgd-ce-linf-{EPS:.6g}"]["attacked"]
    assert nested[large]["reabsnet"]["k"] <= nested[small]["reabsnet"]["k"]
    # the worst case agrees with the bounds evaluated apart (measured: equal; random starts drawn for other batches
    # could move an image)
    for view in ("reabsnet", "selective", "master", "master_autoattack"):
        assert abs(nested[large][view]["k"] - min(apart[large][view]["k"], apart[small][view]["k"])) <= 1, view


def test_evaluate_adaptive_on_a_plain_classifier_runs_the_standard_ensemble(synthetic_setup):
    master, _, _, x, y, _ = synthetic_setup
    result = reabsnet.evaluate_adaptive(master, None, x[:10], y[:10], norm="l2", bounds=[0.5], budget="smoke",
                                        binarization=6)
    assert result.policy == "classifier"
    test = result.results["binarization"]["l2 0.5"]["tests"]["classifier"]["classifier"]
    assert test["images"] == 6 and test["usable"] >= 2 and test["attacks"]["any attack"]["n"] == test["usable"]
    assert "Binarization test" in result.markdown()
    b = result.results["bounds"]["l2 0.5"]
    assert set(b) >= {"master", "master_autoattack"} and "reabsnet" not in b
    assert b["master"]["rate"] <= b["master_autoattack"]["rate"]
    assert "classifier alone" in result.markdown()


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: reabsnet.evaluate_adaptive(m, None, x[:, :1], y), "does not take images"),
    (lambda m, x, y: reabsnet.evaluate_adaptive(m, None, x, y + 10), "outside the model's 10 classes"),
    (lambda m, x, y: reabsnet.evaluate_adaptive(m, None, x + 1, y), "outside the box"),
    (lambda m, x, y: reabsnet.evaluate_adaptive(NOT_LOGITS, None, x, y), "(N, classes) logits"),
    (lambda m, x, y: reabsnet.evaluate_adaptive(m, None, x, y, norm="l1"), "choose linf or l2"),
    (lambda m, x, y: reabsnet.evaluate_adaptive(m, None, x, y, budget="huge"), "budget 'huge'"),
    (lambda m, x, y: reabsnet.fit_guardian(m, x[:, :, :8, :8]), "sides of 16 or more"),
])
def test_bad_input_to_the_api_is_one_clear_error(synthetic_setup, call, message):
    master, _, _, x, y, _ = synthetic_setup
    with pytest.raises(ReabsnetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(master, x[:4], y[:4])


# --- the MNIST pipeline and the public function are one implementation ---

def test_fit_guardian_gives_the_profile_pipelines_guardian_bit_for_bit(tmp_path, mnist, small_model):
    from reabsnet.profiles import get_profile
    from reabsnet.train.guardian import train_guardian

    profile = get_profile("smoke", ["guardian.train_images=100", "guardian.val_images=25",
                                    "guardian.train.epochs=2"])
    ours, _ = train_guardian(profile, mnist, small_model, {"sha256": "small"}, torch.device("cpu"), home=tmp_path,
                             shipped=None)
    x_train, y_train = mnist.split("train", 100)
    x_val, y_val = mnist.split("val", 25)
    theirs, _ = reabsnet.fit_guardian(small_model, x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                                      train=profile.guardian.train, seed=profile.seed)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# --- data from the user ---

@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_load_npz_takes_each_layout_and_maps_uint8_onto_the_box(tmp_path, layout):
    gen = np.random.default_rng(0)
    images = gen.integers(0, 256, (5, 3, 20, 20), dtype=np.uint8) if layout != "nhw" else \
        gen.integers(0, 256, (5, 20, 20), dtype=np.uint8)
    stored = images.transpose(0, 2, 3, 1) if layout == "nhwc" else images
    np.savez(tmp_path / "d.npz", x=stored, y=np.arange(5))
    x, y, box = reabsnet.load_npz(tmp_path / "d.npz")
    assert box == (0.0, 1.0) and x.dtype == torch.float32 and y.tolist() == [0, 1, 2, 3, 4]
    expect = images if layout != "nhw" else images[:, None]
    assert torch.allclose(x, torch.from_numpy(expect / 255.0).float())
    x, _, box = reabsnet.load_npz(tmp_path / "d.npz", box=(-0.5, 0.5))
    assert box == (-0.5, 0.5) and float(x.min()) >= -0.5 and torch.allclose(x + 0.5, torch.from_numpy(
        expect / 255.0).float(), atol=1e-6)


def test_load_npz_float_pixels_take_the_box_they_lie_in(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.full((2, 1, 16, 16), -0.25, np.float32), y=[0, 1])
    assert reabsnet.load_npz(tmp_path / "a.npz")[2] == (-0.5, 0.5)
    np.savez(tmp_path / "b.npz", x=np.full((2, 1, 16, 16), 3.0, np.float32), y=[0, 1])
    with pytest.raises(ReabsnetError, match="give the box"):
        reabsnet.load_npz(tmp_path / "b.npz")


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((2, 16, 16), np.uint8)}, "no array 'y'"),
    ({"x": np.zeros((2, 16, 16), np.uint8), "y": [0, 1, 2]}, "3 labels"),
    ({"x": np.zeros((2, 16, 16), np.uint8), "y": [0.5, 1]}, "labels must be integers"),
    ({"x": np.zeros((2, 5, 16, 16), np.uint8), "y": [0, 1]}, "1 or 3 channels"),
    ({"x": np.full((2, 16, 16), np.nan, np.float32), "y": [0, 1]}, "NaN"),
    ({"x": np.array([None, None], dtype=object), "y": [0, 1]}, "not a readable .npz"),
])
def test_load_npz_refuses_bad_files_in_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ReabsnetError, match=message):
        reabsnet.load_npz(tmp_path / "bad.npz")


def test_load_image_folder_reads_class_subfolders(tmp_path):
    from PIL import Image

    for c, value in (("cat", 10), ("dog", 200)):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (24, 20), (value, i, 0)).save(tmp_path / c / f"{i}.png")
    x, y, box, classes = reabsnet.load_image_folder(tmp_path)
    assert classes == ["cat", "dog"] and y.tolist() == [0, 0, 0, 1, 1, 1] and x.shape == (6, 3, 20, 24)
    assert box == (0.0, 1.0) and abs(float(x[3, 0, 0, 0]) - 200 / 255) < 1e-6
    Image.new("L", (10, 10)).save(tmp_path / "dog" / "small.png")
    with pytest.raises(ReabsnetError, match="different sizes"):
        reabsnet.load_image_folder(tmp_path)


# --- the commands ---

@pytest.fixture(scope="module")
def user_files(synthetic_setup, tmp_path_factory):
    master, _, _, x, y, _ = synthetic_setup
    root = tmp_path_factory.mktemp("user")
    save_model(root / "master.safetensors", master, {})
    x_train, y_train = images(300, seed=5)
    np.savez(root / "train.npz", x=x_train.numpy(), y=y_train.numpy())
    np.savez(root / "test.npz", x=x[:10].numpy(), y=y[:10].numpy())
    (root / "factory.py").write_text(
        "import reabsnet.models\n"
        f"def master():\n    m, _ = reabsnet.models.load_model({str(root / 'master.safetensors')!r})\n    return m\n")
    return root


def test_fit_guardian_and_evaluate_commands_write_a_guardian_and_a_report(user_files, capsys):
    root = user_files
    assert main(["fit-guardian", "--master", f"{root / 'factory.py'}:master", "--data", str(root / "train.npz"),
                 "--out", str(root / "g"), "--epochs", "2"]) == 0
    assert "validation accuracy" in capsys.readouterr().out
    assert (root / "g" / "guardian.safetensors").is_file()
    assert main(["evaluate", "--master", str(root / "master.safetensors"), "--guardian",
                 str(root / "g" / "guardian.safetensors"), "--data", str(root / "test.npz"), "--attacks",
                 "fgsm,deepfool", "--preset", "smoke", "--budget", "smoke", "--bounds", "4/255,8/255",
                 "--calibration", str(root / "train.npz"), "--out", str(root / "ev")]) == 0
    out = capsys.readouterr().out
    assert "robust accuracy (revise" in out
    results = json.loads((root / "ev" / "results.json").read_text())
    assert results["data"]["shape"] == [3, 16, 16] and results["data"]["box"] == [-0.5, 0.5]
    assert results["oblivious"]["attacks"]["fgsm"]["settings"]["eps"] == pytest.approx(4 / 255)
    assert results["adaptive"]["calibration"]["val_images"] == 300
    report = (root / "ev" / "REPORT.md").read_text()
    assert "| DeepFool |" in report and "## Adaptive attacks" in report
    # --suite runs the steps named, and the report lists just those
    assert main(["evaluate", "--master", str(root / "master.safetensors"), "--guardian",
                 str(root / "g" / "guardian.safetensors"), "--data", str(root / "test.npz"), "--attacks", "none",
                 "--budget", "smoke", "--suite", "joint-apgd-ce,pipeline-square", "--out", str(root / "ev2")]) == 0
    rows = json.loads((root / "ev2" / "results.json").read_text())["adaptive"]["bounds"]["linf 0.0313725"]
    assert list(rows["per_attack"]) == ["joint-apgd-ce-linf-0.0313725", "pipeline-square-linf-0.0313725"]
    report = (root / "ev2" / "REPORT.md").read_text()
    assert "- `joint-apgd-ce`:" in report and "- `pipeline-square`:" in report and "- `bpda-apgd-ce`" not in report


@pytest.mark.parametrize("args, message", [
    (["--data", "{root}/missing.npz"], "no such file"),
    (["--master", "{root}/nowhere.py:master"], "no such file"),
    (["--master", "reabsnet.models:no_such"], "has no function"),
    (["--master", "{root}/factory.py:master", "--bounds", "a/b"], "not a number"),
    (["--box", "1,0"], "LOW must be below HIGH"),
    (["--box=-0.5,0.5", "--data", "{root}/labels.npz"], "outside the model's 10 classes"),
    (["--master", "mnist-master"], "expected a .safetensors checkpoint"),
    (["--binarization", "-1"], "give a number of images"),
    (["--margin", "-0.1"], "--margin=-0.1: must be a number >= 0"),
])
def test_evaluate_refuses_bad_input_in_one_line_and_writes_nothing(user_files, capsys, args, message):
    root = user_files
    x, y = images(4, seed=6)
    np.savez(root / "labels.npz", x=x.numpy(), y=(y + 10).numpy())
    base = {"--master": str(root / "master.safetensors"), "--data": str(root / "test.npz")}
    given = [a.format(root=root) for a in args]
    for flag in list(base):
        if flag in given:
            del base[flag]
    out = root / "refused"
    code = main(["evaluate", *[v for pair in base.items() for v in pair], *given, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_reproduce_takes_a_dataset(capsys):
    from reabsnet.cli import build_parser
    from reabsnet.commands import _profile

    args = build_parser().parse_args(["reproduce", "--profile", "quick", "--dataset", "fashion-mnist"])
    assert _profile(args).dataset == "fashion-mnist"
    assert main(["reproduce", "--dataset", "cifar"]) == 2
    assert "unknown dataset 'cifar'" in capsys.readouterr().err


def test_fit_guardians_default_run_is_the_paper_profiles_on_mnist_and_adam_elsewhere():
    from reabsnet.profiles import get_profile
    from reabsnet.train.guardian import default_recipe

    assert default_recipe((1, 28, 28)) == get_profile("paper").guardian.train
    assert default_recipe((3, 32, 32)) == GUARDIAN_RUN


FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(not __import__("pathlib").Path(FASHION).is_dir(),
                    reason=f"Fashion-MNIST is absent ({FASHION}: apt install dataset-fashion-mnist)")
def test_fashion_mnist_takes_the_mnist_networks_and_fit_guardian(tmp_path):
    from reabsnet import data
    from reabsnet.profiles import TrainConfig

    splits = data.load("fashion-mnist", home=tmp_path)
    assert splits.name == "fashion-mnist" and len(splits.train_y) == 55000 and len(splits.test_y) == 10000
    torch.manual_seed(0)
    master = place(create_model("master"), "cpu")
    fit(master, splits.split("train", 3000), splits.split("val", 500), TrainConfig(epochs=2, batch_size=64, lr=0.05),
        loss_fn=cross_entropy_at(1.0), generator=torch.Generator().manual_seed(0), desc="fashion")
    x, y = splits.split("test", 500)
    assert accuracy(master.eval(), x, y) > 0.6
    x_train, y_train = splits.split("train", 400)
    _, record = reabsnet.fit_guardian(master, x_train, y_train=y_train, train=TrainConfig(epochs=2, lr=0.02))
    assert record["train_set"]["kept"] > 250 and record["metrics"]["val_accuracy"] > 0.5
