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
    device = next(model.parameters()).device
    x_train, y_train = train
    if cfg.train_size:
        x_train, y_train = x_train[:cfg.train_size], y_train[:cfg.train_size]
    n = len(x_train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    kind = getattr(cfg, "optimizer", "sgd")     # profiles.AdamTrainConfig carries "adam"
    if kind == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                    weight_decay=cfg.weight_decay)
    elif kind == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {kind!r}")
    if cfg.schedule == "cosine":
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    elif cfg.schedule == "constant":
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    elif cfg.schedule == "cyclic":
        peak = max(1, int(total_steps * 2 / 5))
        fall = max(1, total_steps - peak)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: step / peak if step < peak else max(0.0, (total_steps - step) / fall))
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}")

    distributed.broadcast_parameters(model)     # under torchrun every rank starts from rank 0's weights
    history = History()
    best_state = copy.deepcopy(model.state_dict())
    best_acc = -1.0
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator)
        running = torch.zeros((), device=device)
        with bar(total=n, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", unit="img") as progress:
            for i in range(0, n, cfg.batch_size):
                batch = order[i:i + cfg.batch_size]
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
        acc = accuracy(model, *val)
        history.val_accuracy.append(acc)
        score = acc
        if select is not None:
            score = select(model)
            history.val_selected.append(score)
        history.train_loss.append(distributed.total(running).item() / n)
        history.epoch_seconds.append(time.perf_counter() - start)
        if score > best_acc:
            best_acc, history.best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        log.info("%s epoch %d/%d: loss %.4f, val accuracy %.4f%s (%.0f s)", desc, epoch + 1, cfg.epochs,
                 history.train_loss[-1], acc, f", selection score {score:.4f}" if select else "",
                 history.epoch_seconds[-1])
    model.load_state_dict(best_state)
    model.eval()
    return history
