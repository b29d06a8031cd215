"""One seeded supervised training loop for every network: master, teacher, student, guardian, baseline."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from reabsnet import distributed
from reabsnet.profiles import TrainConfig
from reabsnet.progress import bar

log = logging.getLogger(__name__)

# loss(model, inputs, targets) -> scalar; lets adversarial training perturb the batch inside the loss
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class History:
    val_accuracy: list[float] = field(default_factory=list)
    val_selected: list[float] = field(default_factory=list)   # select(model) per epoch, when given
    train_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1

    @property
    def best_val_accuracy(self) -> float:
        return self.val_accuracy[self.best_epoch] if self.best_epoch >= 0 else float("nan")


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits of `model` on `x`, in batches, on the model's device; returned on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    return (predict_logits(model, x, batch_size).argmax(1) == y).float().mean().item()


def cross_entropy_at(temperature: float = 1.0) -> LossFn:
    """Cross-entropy of softmax(logits / T) against hard labels (int) or soft labels (float rows)."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x) / temperature
        if y.dtype.is_floating_point:
            return -(y * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
        return nn.functional.cross_entropy(logits, y)

    return loss


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: TrainConfig,
    *,
    loss_fn: LossFn,
    generator: torch.Generator,
    desc: str = "train",
    select: Callable[[nn.Module], float] | None = None,
) -> History:
    """Train `model` in place with SGD (Nesterov) or Adam on `train`; after each epoch measure accuracy on `val`
    and keep the best weights, by validation accuracy or, when given, by `select(model)` (adversarial training
    selects by robust validation accuracy); they are loaded back at the end. Returns the per-epoch history."""
    x_train, y_train = train
    if cfg.train_size:
        x_train, y_train = x_train[:cfg.train_size], y_train[:cfg.train_size]
    optimizer = make_optimizer(model, cfg)
    schedule = make_schedule(optimizer, cfg, cfg.epochs * math.ceil(len(x_train) / cfg.batch_size))
    distributed.broadcast_parameters(model)     # under torchrun every rank starts from rank 0's weights
    history = History()
    best_state = copy.deepcopy(model.state_dict())
    best_score = -math.inf                      # any score, even a negative one, beats none
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        running = train_epoch(model, (x_train, y_train), cfg.batch_size, optimizer, schedule, loss_fn, generator,
                              f"{desc} epoch {epoch + 1}/{cfg.epochs}")
        acc = accuracy(model, *val)
        history.val_accuracy.append(acc)
        score = acc
        if select is not None:
            score = select(model)
            history.val_selected.append(score)
        history.train_loss.append(distributed.total(running).item() / len(x_train))
        history.epoch_seconds.append(time.perf_counter() - start)
        if score > best_score:
            best_score, history.best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        log.info("%s epoch %d/%d: loss %.4f, val accuracy %.4f%s (%.0f s)", desc, epoch + 1, cfg.epochs,
                 history.train_loss[-1], acc, f", selection score {score:.4f}" if select else "",
                 history.epoch_seconds[-1])
    model.load_state_dict(best_state)
    model.eval()
    return history


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with `cfg`'s momentum (Nesterov), or Adam where the config says so (profiles.AdamTrainConfig)."""
    kind = getattr(cfg, "optimizer", "sgd")
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}")


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                  total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate per step: cosine to zero over the run, constant, or cyclic (0 -> lr at 2/5 of the run
    -> 0)."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.schedule == "cyclic":
        peak = max(1, int(total_steps * 2 / 5))
        fall = max(1, total_steps - peak)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: step / peak if step < peak else max(0.0, (total_steps - step) / fall))
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def train_epoch(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], batch_size: int,
                optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler, loss_fn: LossFn,
                generator: torch.Generator, desc: str) -> torch.Tensor:
    """One pass over `train` in a fresh random order, one optimizer and schedule step per batch. Returns this
    rank's summed loss (a tensor on the model's device: no host sync per batch)."""
    device = next(model.parameters()).device
    x_train, y_train = train
    n = len(x_train)
    model.train()
    order = torch.randperm(n, generator=generator)
    running = torch.zeros((), device=device)
    with bar(total=n, desc=desc, unit="img") as progress:
        for i in range(0, n, batch_size):
            batch = order[i:i + batch_size]
            idx = distributed.batch_slice(batch)        # under torchrun: this rank's share of the batch
            optimizer.zero_grad(set_to_none=True)
            if len(idx):
                xb, yb = x_train[idx].to(device, non_blocking=True), y_train[idx].to(device, non_blocking=True)
                loss = loss_fn(model, xb, yb)
                loss.backward()
                running += loss.detach() * len(idx)
            distributed.average_gradients(model, len(idx) / len(batch))
            optimizer.step()
            schedule.step()
            progress.update(len(batch))
    return running
