"""The training loop: learns, keeps the best validation weights, is deterministic for a seed."""

from __future__ import annotations

import torch

from reabsnet.models import create_model, place
from reabsnet.profiles import TrainConfig
from reabsnet.train import accuracy, cross_entropy_at, fit


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten classes, each a fixed random image plus noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(99)
    centers = torch.rand(10, 1, 28, 28, generator=g) - 0.5
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    return (centers[y] + 0.1 * torch.randn(n, 1, 28, 28, generator=g)).clamp(-0.5, 0.5), y


def _train(seed: int, epochs: int = 4, temperature: float = 1.0):
    torch.manual_seed(seed)
    model = place(create_model("master"), "cpu")
    history = fit(model, _blobs(512, 1), _blobs(256, 2), TrainConfig(epochs=epochs, batch_size=64, lr=0.05),
                  loss_fn=cross_entropy_at(temperature), generator=torch.Generator().manual_seed(seed))
    return model, history


def test_fit_learns_and_restores_best_validation_weights():
    model, history = _train(0)
    assert history.best_val_accuracy > 0.9
    assert abs(accuracy(model, *_blobs(256, 2)) - history.best_val_accuracy) < 1e-6
    assert not model.training


def test_same_seed_same_weights():
    a, _ = _train(5, epochs=1)
    b, _ = _train(5, epochs=1)
    c, _ = _train(6, epochs=1)
    pa, pb, pc = (torch.cat([p.reshape(-1) for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_soft_labels_train_too():
    x, y = _blobs(512, 1)
    soft = torch.nn.functional.one_hot(y, 10).float() * 0.9 + 0.01
    torch.manual_seed(0)
    model = place(create_model("master"), "cpu")
    history = fit(model, (x, soft), _blobs(256, 2), TrainConfig(epochs=4, batch_size=64, lr=0.05),
                  loss_fn=cross_entropy_at(1.0), generator=torch.Generator().manual_seed(0))
    assert history.best_val_accuracy > 0.9
