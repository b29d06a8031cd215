"""The Madry-style baseline of Table 3: the MNIST challenge network, adversarially trained at L-inf eps 0.3.

Two recipes (profiles.BaselineConfig): Madry et al.'s PGD training (the reference; a GPU job) and fast adversarial
training (Wong et al. 2020: FGSM from a random start), which fits a CPU. Whichever ran is recorded in the sidecar
and named in every report. The trained model is then evaluated the way Madry et al. report it: clean accuracy and
accuracy under PGD-40 and under PGD-100 with restarts at the training eps.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from reabsnet.artifacts import stage_key
from reabsnet.attacks import BOX, pgd
from reabsnet.data import Splits
from reabsnet.models import create_model, place
from reabsnet.profiles import PROFILES, BaselineConfig, Profile, keyed
from reabsnet.rates import rate
from reabsnet.runtime import seed_everything
from reabsnet.stages import SHIPPED_MODELS, cached_model, run_dir, shipped_dir
from reabsnet.train.loop import LossFn, accuracy, fit

log = logging.getLogger(__name__)

METHODS = ("madry", "short-pgd", "fgsm-rs")


def resolve_method(cfg: BaselineConfig, device: torch.device) -> str:
    """"auto" -> Madry's PGD recipe on a GPU, a short PGD schedule on a CPU."""
    method = cfg.method
    if method == "auto":
        method = "madry" if device.type == "cuda" else "short-pgd"
    if method not in METHODS:
        raise ValueError(f"baseline.method must be auto, {' or '.join(METHODS)}; not {cfg.method!r}")
    return method


def describe(cfg: BaselineConfig, method: str) -> str:
    """One line for reports: which recipe trained the baseline, with its settings."""
    t = cfg.madry_train if method == "madry" else cfg.fast_train
    steps = {"madry": f"PGD {cfg.madry_steps} steps of {cfg.madry_step_size} from a random start (Madry et al.)",
             "short-pgd": f"PGD {cfg.short_steps} steps of {2.5 * cfg.eps / cfg.short_steps:.3g} from a random start "
                          f"(a short schedule for a CPU; Madry et al.: 40 of 0.01)",
             "fgsm-rs": f"FGSM step {cfg.fgsm_step} from a uniform random start (Wong et al. 2020)"}[method]
    return (f"L-inf eps {cfg.eps}: {steps}; Adam lr {t.lr} ({t.schedule}), batch {t.batch_size}, {t.epochs} epochs"
            f"{f' on the first {t.train_size:,} training images' if t.train_size else ''}")


def fgsm_rs_loss(eps: float, step: float, gen: torch.Generator) -> LossFn:
    """Cross-entropy at one FGSM step of `step` from a uniform random start in the eps-ball (Wong et al. 2020)."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).to(x.device)
        delta = ((x + delta).clamp(*BOX) - x).requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)   # input gradient only
        x_adv = (x + (delta.detach() + step * grad.sign()).clamp(-eps, eps)).clamp(*BOX)
        return F.cross_entropy(model(x_adv), y)

    return loss


def pgd_loss(eps: float, steps: int, step_size: float, gen: torch.Generator) -> LossFn:
    """Cross-entropy at the PGD adversarial example (Madry et al.: all steps, random start, no early stop)."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        x_adv = pgd(model, x, y, eps=eps, step_size=step_size, steps=steps, early_stop=False, seed=seed).x_adv
        return F.cross_entropy(model(x_adv), y)

    return loss


def robust_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                   step_size: float | None = None, restarts: int = 1, loss: str = "ce", seed: int = 0,
                   batch_size: int = 500) -> torch.Tensor:
    """Per example: still correctly classified after L-inf PGD (step 2.5 eps / steps unless given), on the CPU."""
    device = next(model.parameters()).device
    step_size = step_size if step_size is not None else 2.5 * eps / steps
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        res = pgd(model, xb, yb, eps=eps, step_size=step_size, steps=steps, restarts=restarts, loss=loss,
                  seed=seed + i)
        out.append((res.label == yb).cpu())
    return torch.cat(out)


def evaluate_baseline(model: nn.Module, splits: Splits, cfg: BaselineConfig, check_size: int = 0) -> dict:
    """Madry et al.'s numbers for the trained model: clean accuracy (all test images, or the first `check_size`),
    PGD-40 (cross-entropy, step 0.01, one random start) and PGD-100 (step 0.01, `eval_restarts` restarts,
    cross-entropy then margin loss) on the first `eval_images` test images, and the worst case over all of them."""
    xs, ys = splits.split("test", cfg.eval_images)
    began = time.perf_counter()
    pgd40 = robust_correct(model, xs, ys, eps=cfg.eps, steps=40, step_size=0.01)
    pgd100_ce = robust_correct(model, xs, ys, eps=cfg.eps, steps=100, step_size=0.01, restarts=cfg.eval_restarts,
                               seed=1)
    pgd100_margin = robust_correct(model, xs, ys, eps=cfg.eps, steps=100, step_size=0.01,
                                   restarts=cfg.eval_restarts, loss="margin", seed=2)
    x, y = splits.split("test", check_size)
    return {"clean_accuracy": accuracy(model, x, y), "clean_images": len(y), "eps": cfg.eps, "n": len(ys),
            "pgd40": rate(pgd40), "pgd100_ce": rate(pgd100_ce), "pgd100_margin": rate(pgd100_margin),
            "worst": rate(pgd40 & pgd100_ce & pgd100_margin), "restarts": cfg.eval_restarts,
            "seconds": time.perf_counter() - began}


EVAL_ONLY = ("eval_images", "eval_restarts")      # what `evaluate_baseline` measures, not how it trains


def baseline_key(profile: Profile, method: str, data_sha256: str) -> str:
    """The baseline's stage key. It digests the resolved method, with the config's `method` field as "auto" (the
    value every shipped baseline was made with): an explicit "short-pgd" then reuses the shipped CPU baseline on a
    GPU too, where "auto" means Madry's 91-epoch recipe."""
    named = PROFILES[profile.name].baseline if profile.name in PROFILES else profile.baseline
    # evaluation-only settings never re-key the network: the key holds the named profile's values of them
    cfg = dataclasses.replace(profile.baseline, method="auto", **{f: getattr(named, f) for f in EVAL_ONLY})
    return stage_key("madry", keyed(cfg), method, profile.seed, data_sha256)


def train_madry(profile: Profile, splits: Splits, device: torch.device, home: str | Path | None = None,
                shipped: Path | None = SHIPPED_MODELS) -> tuple[nn.Module, dict]:
    """Train (or reuse, or take from the `shipped` models; None = never) the profile's Madry-style baseline
    (runs/<dataset>/<profile>/madry.safetensors)."""
    cfg = profile.baseline
    method = resolve_method(cfg, device)
    train_cfg = cfg.madry_train if method == "madry" else cfg.fast_train
    out = run_dir(splits.name, profile.name, home)
    key = baseline_key(profile, method, splits.sha256)

    def build() -> tuple[nn.Module, dict]:
        gen = seed_everything(profile.seed + 20)
        noise = torch.Generator().manual_seed(profile.seed + 21)
        model = place(create_model("madry"), device)
        if method == "madry":
            loss = pgd_loss(cfg.eps, cfg.madry_steps, cfg.madry_step_size, noise)
        elif method == "short-pgd":
            loss = pgd_loss(cfg.eps, cfg.short_steps, 2.5 * cfg.eps / cfg.short_steps, noise)
        else:
            loss = fgsm_rs_loss(cfg.eps, cfg.fgsm_step, noise)
        xv, yv = splits.split("val", cfg.val_images)

        def select(m: nn.Module) -> float:
            return float(robust_correct(m, xv, yv, eps=cfg.eps, steps=cfg.val_steps).float().mean())

        began = time.perf_counter()
        history = fit(model, splits.split("train"), splits.split("val", train_cfg.check_size), train_cfg,
                      loss_fn=loss, generator=gen, desc=f"madry ({method})", select=select)
        seconds = time.perf_counter() - began
        return model, {"profile": profile.name, "seed": profile.seed, "config": keyed(cfg),
                       "method": method, "recipe": describe(cfg, method), "data_sha256": splits.sha256,
                       "training": {"val_accuracy": history.val_accuracy, "val_pgd_accuracy": history.val_selected,
                                    "train_loss": history.train_loss, "best_epoch": history.best_epoch,
                                    "seconds": seconds},
                       "metrics": evaluate_baseline(model, splits, cfg, train_cfg.check_size)}

    model, meta = cached_model(out / "madry.safetensors", key, build, device,
                               shipped_dir(splits.name, profile.trained_as, shipped))
    measured = meta["metrics"]
    if (measured.get("n"), measured.get("restarts")) != (min(cfg.eval_images, len(splits.test_y)), cfg.eval_restarts):
        # a reused network measured at other evaluation settings: measured again at these (not stored)
        meta = {**meta, "metrics": evaluate_baseline(model, splits, cfg, train_cfg.check_size)}
    return model, meta
