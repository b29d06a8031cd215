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


def test_adam_with_the_cyclic_schedule_learns_and_select_picks_the_epoch():
    from reabsnet.profiles import AdamTrainConfig

    torch.manual_seed(0)
    model = place(create_model("madry"), "cpu")
    scores = iter([0.3, 0.9, 0.5])      # the selection score, not validation accuracy, picks the epoch kept
    history = fit(model, _blobs(512, 1), _blobs(256, 2), AdamTrainConfig(epochs=3, batch_size=64, lr=5e-3,
                                                                          schedule="cyclic"),
                  loss_fn=cross_entropy_at(1.0), generator=torch.Generator().manual_seed(0),
                  select=lambda m: next(scores))
    assert history.val_selected == [0.3, 0.9, 0.5] and history.best_epoch == 1
    assert max(history.val_accuracy) > 0.9


def test_select_keeps_the_best_epoch_whatever_the_sign_of_its_scores():
    # a score below every starting value (the hardened guardian's runs from -1: clean rejection over the bar) must
    # still pick its epoch, not leave the network at its weights before training
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    seen, scores = [], iter([-3.0, -2.0, -5.0])

    def select(m):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    history = fit(model, _blobs(128, 1), _blobs(64, 2), TrainConfig(epochs=3, batch_size=64, lr=0.05),
                  loss_fn=cross_entropy_at(1.0), generator=torch.Generator().manual_seed(0), select=select)
    assert history.best_epoch == 1
    assert all(torch.equal(v, seen[1][k]) for k, v in model.state_dict().items())


def test_adversarial_training_losses_perturb_within_eps():
    from reabsnet.train.madry import fgsm_rs_loss, pgd_loss

    torch.manual_seed(0)
    model = place(create_model("madry"), "cpu").eval()
    x, y = _blobs(32, 3)
    seen = []
    hook = model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    for loss in (fgsm_rs_loss(0.3, 0.375, torch.Generator().manual_seed(1)),
                 pgd_loss(0.3, 3, 0.1, torch.Generator().manual_seed(1))):
        seen.clear()
        value = loss(model, x, y)
        assert value.requires_grad and value.item() > 0
        trained_on = seen[-1]                           # the batch the loss is computed on
        assert (trained_on - x).abs().max() <= 0.3 + 1e-6 and (trained_on - x).abs().max() > 0.2
        assert trained_on.min() >= -0.5 and trained_on.max() <= 0.5
    hook.remove()
    assert all(p.requires_grad for p in model.parameters())   # the attack's freezing is undone


def test_baseline_method_resolution():
    import pytest

    from reabsnet.profiles import get_profile
    from reabsnet.train.madry import describe, resolve_method

    cfg = get_profile("paper", ["baseline.method=auto"]).baseline
    assert resolve_method(cfg, torch.device("cpu")) == "short-pgd"
    assert resolve_method(cfg, torch.device("cuda")) == "madry"
    # the paper profile itself names the shipped baseline's method, on every device
    assert resolve_method(get_profile("paper").baseline, torch.device("cuda")) == "short-pgd"
    assert "40 steps of 0.01" in describe(cfg, "madry") and "91 epochs" in describe(cfg, "madry")
    with pytest.raises(ValueError, match="baseline.method"):
        resolve_method(get_profile("paper", ["baseline.method=free"]).baseline, torch.device("cpu"))
