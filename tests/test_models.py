"""Architectures, the registry, and checkpoints that verify themselves."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from reabsnet.errors import ReabsnetError
from reabsnet.models import create_model, load_model, model_names, place, registry, save_model


def test_registry_builds_by_name_and_refuses_unknown_names():
    assert {"master", "guardian", "madry"} <= set(model_names())
    with pytest.raises(ReabsnetError, match="unknown model"):
        create_model("resnet9000")


@pytest.mark.parametrize("name,outputs", [("master", 10), ("guardian", 2), ("madry", 10)])
def test_models_map_mnist_batches_to_logits(name, outputs):
    model = place(create_model(name), "cpu").eval()
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, outputs)


def test_madry_matches_the_mnist_challenge_network():
    layers = [m for m in create_model("madry") if isinstance(m, (nn.Conv2d, nn.Linear, nn.MaxPool2d))]
    shapes = [(m.out_channels, m.kernel_size, m.padding) if isinstance(m, nn.Conv2d) else
              m.out_features if isinstance(m, nn.Linear) else "MP" for m in layers]
    assert shapes == [(32, (5, 5), (2, 2)), "MP", (64, (5, 5), (2, 2)), "MP", 1024, 10]
    # MadryLab's model.py: 3,274,634 parameters
    assert sum(p.numel() for p in create_model("madry").parameters()) == 3_274_634


def test_master_matches_figure_2():
    layers = [m for m in create_model("master") if isinstance(m, (nn.Conv2d, nn.Linear, nn.MaxPool2d))]
    shapes = [(m.out_channels, m.kernel_size) if isinstance(m, nn.Conv2d) else
              m.out_features if isinstance(m, nn.Linear) else "MP" for m in layers]
    assert shapes == [(32, (3, 3)), (32, (3, 3)), "MP", (64, (3, 3)), (64, (3, 3)), "MP", 200, 200, 10]


def _multiply_adds(model: nn.Module) -> int:
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    model.eval()(torch.zeros(1, 1, 28, 28))
    for h in handles:
        h.remove()
    return total


def test_guardian_is_no_more_expensive_than_the_master():
    guardian, master = _multiply_adds(create_model("guardian")), _multiply_adds(create_model("master"))
    assert guardian <= master, (guardian, master)


def test_guardian_has_two_paths_concatenated():
    g = create_model("guardian")
    x = torch.randn(3, 1, 28, 28)
    assert g.fine(x).shape[1] + g.coarse(x).shape[1] == g.head[0].in_features


def test_checkpoint_round_trip_records_architecture(tmp_path):
    model = create_model("master")
    path = tmp_path / "m.safetensors"
    save_model(path, model, {"profile": "smoke"})
    loaded, meta = load_model(path, expect="master")
    assert meta["model"] == "master" and meta["profile"] == "smoke" and "torch" in meta["versions"]
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model.eval()(x), loaded(x))


def test_tampered_checkpoint_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, create_model("master"))
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ReabsnetError, match="SHA-256"):
        load_model(path)


def test_wrong_architecture_is_refused(tmp_path):
    path = tmp_path / "g.safetensors"
    save_model(path, create_model("guardian"))
    with pytest.raises(ReabsnetError, match="expected 'master'"):
        load_model(path, expect="master")
    # a sidecar that lies about the architecture is caught by the shapes
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["model"] = "master"
    side.write_text(json.dumps(meta))
    with pytest.raises(ReabsnetError, match="do not fit"):
        load_model(path)


def test_missing_sidecar_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, create_model("master"))
    path.with_suffix(".json").unlink()
    with pytest.raises(ReabsnetError, match="sidecar"):
        load_model(path)


@pytest.mark.parametrize("name", ["master", "guardian", "madry", "guardian-two-step"])
def test_chunked_cpu_forward_matches_one_batch_with_its_gradients(name):
    """Large CPU batches run in chunks of CPU_CHUNK (faster, cache-sized); logits and input gradients must be those
    of the whole batch at once, up to floating-point order."""
    torch.manual_seed(0)
    model = place(create_model(name), "cpu").eval()
    x = (torch.rand(300, 1, 28, 28) - 0.5).requires_grad_(True)
    calls = []
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))

    def run():
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.logsumexp(1).sum(), x)
        return logits.detach(), grad

    chunked = run()
    assert calls == [128, 128, 44]
    with pytest.raises(RuntimeError), registry.cpu_chunk(None):   # restored after an error too
        raise RuntimeError
    with registry.cpu_chunk(None):
        whole = run()
    assert calls[3:] == [300] and registry.CPU_CHUNK == 128
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-4, atol=1e-5)
