"""What every attack shares: the call shape's result, frozen parameters, and one `finish()` that judges success.

No attack decides for itself whether it succeeded: `finish()` runs the model once on the final batch and measures
the distances, so every attack is scored the same way (foolbox 3 and auto-attack do the same).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn as nn

from reabsnet.checks import check_settings

Box = tuple[float, float]
BOX: Box = (-0.5, 0.5)  # the paper's pixel range (Carlini & Wagner's setup_mnist.py)


@dataclass
class AttackResult:
    """The adversarial batch and a per-example record, all tensors of length N on the inputs' device.

    success: the model's label on `x_adv` differs from `y` (untargeted) or equals `target` (targeted);
    l2, linf: distance from the original input; iterations: gradient steps the attack spent on the example;
    label: the model's label on `x_adv`.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    iterations: torch.Tensor
    label: torch.Tensor

    def record(self) -> dict[str, torch.Tensor]:
        return {"success": self.success, "l2": self.l2, "linf": self.linf, "iterations": self.iterations,
                "label": self.label}

    def cpu(self) -> AttackResult:
        return AttackResult(**{k: v.cpu() for k, v in vars(self).items()})


NOT_SETTINGS = frozenset({"model", "x", "y", "target", "box", "trace", "record", "guides"})
F = TypeVar("F", bound=Callable)


def settings_of(attack: Callable, kwargs: dict) -> dict:
    """The attack's settings as it would run with `kwargs`: its signature's defaults, overridden."""
    params = inspect.signature(inspect.unwrap(attack)).parameters
    return {name: kwargs.get(name, p.default) for name, p in params.items()
            if name not in NOT_SETTINGS and p.default is not inspect.Parameter.empty}


def validated(attack: F) -> F:
    """Check the attack's settings (reabsnet.checks) on every call, before any work: the one place that refuses
    eps <= 0, steps <= 0, an unknown norm and the like, for the Python API and the command line alike."""
    @functools.wraps(attack)
    def run(*args, **kwargs):
        check_settings(settings_of(attack, kwargs), f"{attack.__name__}: ")
        return attack(*args, **kwargs)

    return run  # type: ignore[return-value]


class LowPrecision(nn.Module):
    """`model` with its forward passes run under autocast in `dtype` (bfloat16: CPUs with the AVX-512 BF16
    instructions, CUDA GPUs), logits returned in float32: cheaper search passes for an attack. Nothing is judged in
    low precision: `finish` classifies the final batch with `full`, and the attacks that set an example aside at
    its first success (APGD, APGD-T, Square, FAB-T) confirm that success with `full` first (`confirmed`)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.full, self.dtype = model, dtype
        self.train(model.training)      # a new module is in training mode: `frozen` would restore that to `model`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.full(x).float()


def bf16_speedup(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """How much faster `model`'s forward and input-gradient pass (what an attack step runs) is in bfloat16 than in
    float32 on `x`: the best of `repeats` timings of each, interleaved, after one warm-up pass each."""
    low = LowPrecision(model)

    def timed(net: nn.Module) -> float:
        began = time.perf_counter()
        xa = x.detach().clone().requires_grad_(True)
        torch.autograd.grad(net(xa).sum(), xa)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        return time.perf_counter() - began

    with frozen(model):
        best = {"fp32": float("inf"), "bf16": float("inf")}
        for i in range(repeats + 1):
            for name, net in (("fp32", model), ("bf16", low)):
                seconds = timed(net)
                if i:
                    best[name] = min(best[name], seconds)
    return best["fp32"] / best["bf16"]


def full_precision(model: nn.Module) -> nn.Module:
    """The network that judges: `model` itself, or the full-precision network inside a `LowPrecision`."""
    return model.full if isinstance(model, LowPrecision) else model


@torch.no_grad()
def confirmed(model: nn.Module, x: torch.Tensor, logits: torch.Tensor, claimed: torch.Tensor) -> torch.Tensor:
    """`logits` with the rows `claimed` (those a low-precision pass scored a success) scored again by the
    full-precision network; unchanged for a full-precision `model`. One extra forward pass on those rows only."""
    if not isinstance(model, LowPrecision) or not bool(claimed.any()):
        return logits
    out = logits.detach().clone()
    out[claimed] = model.full(x[claimed].detach()).to(out.dtype)
    return out


def confirmed_fooled(model: nn.Module, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
                     reject: int | None, margin: float = 0.0) -> torch.Tensor:
    """Per example: the label of `logits` is neither y nor `reject`, by at least `margin` (`won`), a success a
    low-precision pass claims confirmed in full precision (`confirmed`). What an untargeted attack sets an example
    aside on."""
    claimed = won(logits, y, None, reject, margin)
    return won(confirmed(model, x, logits, claimed), y, None, reject, margin)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate `model` with its parameters frozen (no weight gradients are computed, which roughly halves each
    backward pass) and in eval mode, with input gradients enabled even inside a caller's `torch.no_grad()`;
    restore both afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    model.eval()
    try:
        with torch.enable_grad():
            yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def check_inputs(x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, box: Box) -> None:
    """Errors a caller can make, reported as ValueError before any compute."""
    if x.dim() < 2 or len(x) != len(y):
        raise ValueError(f"inputs {tuple(x.shape)} and labels {tuple(y.shape)} must have the same first dimension")
    if target is not None and target.shape != y.shape:
        raise ValueError(f"target {tuple(target.shape)} must have the labels' shape {tuple(y.shape)}")
    if box[0] >= box[1]:
        raise ValueError(f"box {box}: lower bound must be below upper bound")
    if len(x) and (x.min() < box[0] - 1e-6 or x.max() > box[1] + 1e-6):
        # never clamped silently: (0, 1) images attacked in (-0.5, 0.5) would be other images
        raise ValueError(f"inputs lie outside the box {box}: [{x.min().item():.3f}, {x.max().item():.3f}]; pass "
                         f"box=(low, high), the pixel range your model takes (this package's MNIST: (-0.5, 0.5); "
                         f"torchattacks and AutoAttack: (0, 1))")


def norms(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = delta.flatten(1)
    return flat.norm(dim=1), flat.abs().amax(dim=1)


def is_adversarial(label: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                   reject: int | None = None) -> torch.Tensor:
    """The attacker's win: the target class (targeted) or any label but y, and never `reject` (JointLogits'
    "rejected")."""
    hit = label == target if target is not None else label != y
    return hit & (label != reject) if reject is not None else hit


def lead(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, reject: int | None = None
         ) -> torch.Tensor:
    """How far past the boundary each example is, in logits: the best label the attacker wants minus the best one
    it does not (the target against every other class; untargeted, any label but y and `reject` against those
    two). Positive once the attack has won."""
    unwanted = torch.zeros_like(logits, dtype=torch.bool)
    if target is not None:
        unwanted[:] = True
        unwanted.scatter_(1, target[:, None], False)
    else:
        unwanted.scatter_(1, y[:, None], True)
    if reject is not None:
        unwanted[:, reject] = True
    return (logits.masked_fill(unwanted, float("-inf")).amax(1)
            - logits.masked_fill(~unwanted, float("-inf")).amax(1))


def won(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, reject: int | None = None,
        margin: float = 0.0) -> torch.Tensor:
    """The attacker's win on `logits`: the argmax (`is_adversarial`), and with a success `margin` > 0, a `lead`
    of at least that much, so that the example does not sit on the boundary where another batch's arithmetic can
    flip the verdict."""
    hit = is_adversarial(logits.argmax(1), y, target, reject)
    return hit & (lead(logits, y, target, reject) >= margin) if margin > 0 else hit


@torch.no_grad()
def finish(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
           iterations: torch.Tensor, box: Box = BOX, batch_size: int = 2000,
           reject: int | None = None) -> AttackResult:
    """Clip `x_adv` to the box, classify it, and measure distances: the one judge of every attack, in full
    precision (a `LowPrecision` model's `full`). `reject`: a class that is never a success (JointLogits'
    "rejected")."""
    x_adv = x_adv.detach().clamp(*box)
    model = full_precision(model)
    label = torch.cat([model(x_adv[i:i + batch_size]).argmax(1) for i in range(0, len(x_adv), batch_size)]) \
        if len(x_adv) else y.clone()
    l2, linf = norms(x_adv - x)
    success = is_adversarial(label, y, target, reject)
    return AttackResult(x_adv=x_adv, success=success, l2=l2, linf=linf, iterations=iterations.to(y.device),
                        label=label)


def random_targets(y: torch.Tensor, num_classes: int = 10, seed: int = 0) -> torch.Tensor:
    """A uniformly random class other than the label, per example, from a seeded generator (the evaluation's
    default target for targeted attacks, as in Carlini & Wagner 2017)."""
    gen = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, (len(y),), generator=gen)
    return ((y.cpu() + shift) % num_classes).to(y.device)


def margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """How far each example is from being adversarial, in logits: positive while the attack has not succeeded.

    Untargeted: Z_y - max_{i != y} Z_i. Targeted: max_{i != t} Z_i - Z_t. (Carlini & Wagner's f_6 without kappa.)
    """
    return -lead(logits, y, target)
