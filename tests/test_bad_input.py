"""Every bad input found when the tool was tried as a new user would (issue 12): one line, exit 2, the rest of the
work done; settings out of range refused before any work, from the CLI and the Python API alike."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from reabsnet.attacks import ATTACKS, JointLogits, apgd, carlini_wagner_linf, deepfool, pgd
from reabsnet.checks import SettingError
from reabsnet.cli import main
from reabsnet.data.images import MAX_BATCH_IMAGES, MAX_IMAGE_PIXELS, read_inputs
from reabsnet.defense import ReabsNet
from reabsnet.errors import ReabsnetError
from reabsnet.models import create_model, save_model
from reabsnet.profiles import get_profile


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """Untrained master and guardian checkpoints: enough for classify's input handling, in milliseconds."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    for name in ("master", "guardian"):
        save_model(root / f"{name}.safetensors", create_model(name))
    return ["--master", str(root / "master.safetensors"), "--guardian", str(root / "guardian.safetensors"),
            "--device", "cpu", "--home", str(root)]


def classify(capsys, untrained, *inputs) -> tuple[int, list[str], list[str]]:
    code = main(["-q", "classify", *map(str, inputs), *untrained])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def png_bomb(path, side: int = 20000) -> None:
    """A valid grayscale PNG of side x side black pixels: under 1 MB on disk (0.4 MB), `side`^2 bytes decoded (24x
    the pixel limit; 30,000 took 8 s to compress here for no more proof)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    rows = b"".join(z.compress(b"\0" * (side + 1)) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_an_empty_file_is_one_line_and_the_next_file_is_still_classified(tmp_path, capsys, untrained):
    np.save(tmp_path / "ok.npy", np.zeros((2, 28, 28), np.uint8))
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "u8.npy", np.full((1, 28, 28), 255, np.uint8))
    code, out, err = classify(capsys, untrained, tmp_path / "ok.npy", tmp_path / "empty.npy", tmp_path / "u8.npy")
    assert code == 2
    assert [line.split(":")[0] for line in out] == ["ok.npy[0]", "ok.npy[1]", "u8.npy[0]"]
    assert len(err) == 1 and "empty.npy: not a readable numpy file" in err[0] and "internal error" not in err[0]


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, capsys, untrained):
    png_bomb(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 1_000_000
    np.save(tmp_path / "after.npy", np.zeros((1, 28, 28), np.uint8))
    code, out, err = classify(capsys, untrained, tmp_path / "bomb.png", tmp_path / "after.npy")
    assert code == 2 and [line.split(":")[0] for line in out] == ["after.npy[0]"]
    assert len(err) == 1 and "bomb.png" in err[0] and "internal error" not in err[0]


def test_an_image_just_over_the_pixel_limit_is_refused_with_the_limit(tmp_path):
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1
    png_bomb(tmp_path / "big.png", side)
    with pytest.raises(ReabsnetError, match=f"exceeds the limit of {MAX_IMAGE_PIXELS:,} pixels"):
        read_inputs(tmp_path / "big.png")


def test_a_batch_over_the_image_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 28, 28), np.uint8))
    header["shape"] = (MAX_BATCH_IMAGES + 1, 28, 28)
    with open(path, "wb") as f:                 # the header alone: the 78 MB of data are never there
        np.lib.format.write_array_header_1_0(f, header)
    with pytest.raises(ReabsnetError, match=f"exceed the limit of {MAX_BATCH_IMAGES:,} per file"):
        read_inputs(path)


def test_a_directory_is_classified_file_by_file_and_other_files_are_skipped(tmp_path, capsys, untrained):
    folder = tmp_path / "digits"
    folder.mkdir()
    np.save(folder / "b.npy", np.zeros((1, 28, 28), np.uint8))
    np.save(folder / "a.npy", np.zeros((2, 28, 28), np.uint8))
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    code, out, err = classify(capsys, untrained, folder)
    assert code == 0 and [line.split(":")[0] for line in out] == ["a.npy[0]", "a.npy[1]", "b.npy[0]"]
    assert err == [f"reabsnet: skipped {folder / 'notes.txt'}: not an image or .npy/.npz file"]
    (tmp_path / "nothing").mkdir()
    code, _, err = classify(capsys, untrained, tmp_path / "nothing")
    assert code == 2 and len(err) == 1 and "a directory with no image" in err[0]


def test_nan_pixels_are_one_line_without_a_numpy_warning(tmp_path, capsys, untrained):
    np.save(tmp_path / "nan.npy", np.full((1, 28, 28), np.nan, np.float32))
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")   # any RuntimeWarning would fail the test
        code, out, err = classify(capsys, untrained, tmp_path / "nan.npy")
    assert code == 2 and out == [] and err == [f"reabsnet: error: {tmp_path / 'nan.npy'}: 784 pixel values are "
                                               f"NaN or infinite"]


@pytest.mark.parametrize("shape", [(3, 5), (28,), (2, 3, 28, 28), (2, 28, 27)])
def test_a_wrong_shape_is_reported_as_the_file_holds_it(tmp_path, shape):
    np.save(tmp_path / "bad.npy", np.zeros(shape, np.float32))
    with pytest.raises(ReabsnetError, match=rf"the file holds \({', '.join(map(str, shape))},?\)"):
        read_inputs(tmp_path / "bad.npy")


@pytest.mark.parametrize("setting", ["eps=-1", "eps=0", "eps=nan", "eps=inf", "steps=0", "step_size=0",
                                     "norm=l7", "restarts=0", "loss=hinge", "seed=-3"])
def test_pgd_settings_out_of_range_are_refused_before_any_work(setting, capsys, tmp_path):
    # --model names a file that does not exist: a refusal that mentions the setting proves nothing was loaded
    code = main(["-q", "attack", "--model", str(tmp_path / "none.safetensors"), "--attack", "pgd", "--set", setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and setting.split("=")[0] in err[0] and "none.safetensors" not in err[0]


@pytest.mark.parametrize("attack,setting", [
    ("fgsm", "eps=-0.1"), ("deepfool", "overshoot=-0.5"), ("deepfool", "max_iter=0"), ("deepfool", "candidates=0"),
    ("cw-l2", "confidence=-1"), ("cw-l2", "binary_search_steps=0"), ("cw-l2", "learning_rate=0"),
    ("cw-linf", "const_factor=1"), ("cw-linf", "decrease_factor=1.5"), ("cw-linf", "max_iterations=-2"),
    ("apgd", "rho=2"), ("apgd", "norm=l1"), ("apgd", "momentum=-0.1"), ("apgd", "steps=0"),
])
def test_every_attack_refuses_its_settings_out_of_range(attack, setting, capsys, tmp_path):
    code = main(["-q", "attack", "--model", str(tmp_path / "none.safetensors"), "--attack", attack,
                 "--set", setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and setting.split("=")[0] in err[0] and "none.safetensors" not in err[0]


def test_the_python_api_refuses_the_same_settings_before_any_work():
    class Exploding(torch.nn.Module):      # any forward pass would raise: a refusal must come first
        def forward(self, x):
            raise AssertionError("the model ran")

    model, x, y = Exploding(), torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    for call in (lambda: pgd(model, x, y, eps=-1), lambda: pgd(model, x, y, steps=0),
                 lambda: pgd(model, x, y, norm="l7"), lambda: apgd(model, x, y, eps=float("nan")),
                 lambda: deepfool(model, x, y, overshoot=-1),
                 lambda: carlini_wagner_linf(model, x, y, const_factor=0.5),
                 lambda: ReabsNet(model, model, threshold=1.0), lambda: JointLogits(model, model, threshold=0.0)):
        with pytest.raises(SettingError):
            call()
    with pytest.raises(ValueError):         # a SettingError is a ValueError too, for callers that catch those
        pgd(model, x, y, eps=0)


def test_every_attack_default_passes_its_own_checks():
    from reabsnet.attacks.settings import attack_settings
    from reabsnet.checks import check_settings

    for name, attack in ATTACKS.items():
        check_settings(attack_settings(attack), f"{name}: ")


@pytest.mark.parametrize("override", ["master.epochs=0", "guardian.shard_size=0", "modifier.threshold=1",
                                      "modifier.revise_to=0", "eval.n=0", "baseline.eps=-0.3", "master.lr=nan",
                                      "adaptive.restarts=0", "baseline.method=fast", "eval.preset=turbo",
                                      "temperature=0", "seed=-1"])
def test_profile_settings_out_of_range_are_refused(override, capsys, tmp_path):
    with pytest.raises(SettingError, match=override.split("=")[0]):
        get_profile("quick", [override])
    assert main(["-q", "train", "master", "--profile", "smoke", "--set", override, "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and override.split("=")[0] in err[0]
    assert not (tmp_path / "runs").exists()   # refused before any stage


def test_a_threshold_outside_the_unit_interval_is_refused_before_models_load(capsys, tmp_path):
    code = main(["-q", "classify", "x.png", "--threshold", "1.5", "--home", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "threshold=1.5" in err[0]
