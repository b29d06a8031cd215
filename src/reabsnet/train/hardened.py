"""A hardened guardian: the detector adversarially trained against the joint attack (not in the paper).

The paper's guardian learns DeepFool examples of the master; an adaptive attacker instead looks for inputs the
guardian calls natural that the master gets wrong, which it never saw. Here the guardian is fine-tuned, starting
from its paper weights, on exactly those: every batch, joint L-inf PGD (Madry et al.'s recipe: random start, all
steps, step 2.5 eps / steps) against `JointLogits(master, guardian)` with the guardian as it is at that moment, the
examples labelled adversarial and their natural twins natural (the detector counterpart of adversarial training,
as in Carlini & Wagner 2017's suggestion and Yin et al. 2020's adversarially trained detectors). Each epoch is
scored on validation images by the reject policy's correct-or-rejected rate under a fresh joint PGD, an epoch whose
guardian flags more than `max_clean_rejection` of the clean validation images scoring below every one that does
not; the best epoch is kept.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from reabsnet.artifacts import stage_key
from reabsnet.attacks import BOX, JointLogits
from reabsnet.attacks.adaptive import outcome_loss
from reabsnet.attacks.common import frozen
from reabsnet.attacks.pgd import _project, _random_start
from reabsnet.data import Splits
from reabsnet.defense import ADVERSARIAL, NATURAL
from reabsnet.profiles import Profile, keyed
from reabsnet.runtime import seed_everything
from reabsnet.stages import cached_model, run_dir
from reabsnet.train.loop import fit, predict_logits


def joint_pgd(master: nn.Module, guardian: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
              threshold: float, gen: torch.Generator) -> torch.Tensor:
    """L-inf PGD on the joint outcome (wrong label and not flagged), all steps from a random start; the networks'
    modes are the caller's, their parameter gradients untouched (input gradients only)."""
    joint = JointLogits(master, guardian, threshold)
    step = 2.5 * eps / steps
    x_adv = (x + _random_start(x, eps, "linf", gen)).clamp(*BOX)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        logits = joint(x_adv)
        # the joint logits' last class is "rejected"
        (grad,) = torch.autograd.grad(outcome_loss(logits, y, "ce", logits.shape[1] - 1).sum(), x_adv)
        x_adv = (x + _project(x_adv.detach() + step * grad.sign() - x, eps, "linf")).clamp(*BOX)
    return x_adv.detach()


def reject_policy_correct(master: nn.Module, guardian: nn.Module, x: torch.Tensor, threshold: float) -> tuple:
    """Per example: the guardian's flag and the master's label (the reject policy's two outputs)."""
    p_adv = predict_logits(guardian, x).softmax(1)[:, ADVERSARIAL]
    return p_adv > threshold, predict_logits(master, x).argmax(1)


def train_hardened_guardian(profile: Profile, splits: Splits, master: nn.Module, master_meta: dict,
                            guardian: nn.Module, guardian_meta: dict, device: torch.device,
                            home: str | Path | None = None, name: str = "guardian-hardened"
                            ) -> tuple[nn.Module, dict]:
    """Fine-tune (or reuse) a copy of `guardian` against joint PGD on `master` (runs/.../<name>.safetensors)."""
    cfg = profile.adaptive
    threshold = profile.modifier.threshold
    out = run_dir(splits.name, profile.name, home)
    key = stage_key("guardian-hardened", keyed(cfg.harden_train), cfg.harden_eps, cfg.harden_steps,
                    cfg.harden_val_images, threshold, profile.seed, master_meta["sha256"], guardian_meta["sha256"],
                    splits.sha256)

    def build() -> tuple[nn.Module, dict]:
        gen = seed_everything(profile.seed + 30)
        noise = torch.Generator(device=device).manual_seed(profile.seed + 31)
        model = copy.deepcopy(guardian).to(device)
        x_train, y_train = splits.split("train")
        xv, yv = splits.split("val", cfg.harden_val_images)

        def loss(g: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            g.eval()                  # the attack sees the guardian as it will be used (no dropout)
            with frozen(master):
                x_adv = joint_pgd(master, g, x, y, eps=cfg.harden_eps, steps=cfg.harden_steps,
                                  threshold=threshold, gen=noise)
            g.train()
            labels = torch.cat([torch.full((len(x),), NATURAL), torch.full((len(x),), ADVERSARIAL)]).to(x.device)
            return F.cross_entropy(g(torch.cat([x, x_adv])), labels)

        scores: list[dict] = []

        def select(g: nn.Module) -> float:
            score = validation_score(master, g, xv, yv, eps=cfg.harden_eps, steps=2 * cfg.harden_steps,
                                     threshold=threshold, seed=profile.seed + 32)
            scores.append(score)
            ok = score["clean_rejected"] <= cfg.max_clean_rejection
            return score["correct_or_rejected"] - (0.0 if ok else 1.0)

        natural_val = (xv, torch.full((len(xv),), NATURAL))   # the guardian's val accuracy: natural images passed
        began = time.perf_counter()
        history = fit(model, (x_train, y_train), natural_val, cfg.harden_train, loss_fn=loss, generator=gen,
                      desc="hardened guardian", select=select)
        return model, {"profile": profile.name, "seed": profile.seed, "from_guardian": guardian_meta["sha256"],
                       "master_sha256": master_meta["sha256"], "data_sha256": splits.sha256,
                       "recipe": f"fine-tuned from the paper guardian on joint L-inf PGD ({cfg.harden_steps} steps "
                                 f"of 2.5 eps / steps, eps {cfg.harden_eps:g}, random start) against the master",
                       "config": keyed(cfg.harden_train),
                       "training": {"natural_pass": history.val_accuracy, "val_scores": scores,
                                    "best_epoch": history.best_epoch, "train_loss": history.train_loss,
                                    "seconds": time.perf_counter() - began},
                       "metrics": {"val_accuracy": history.best_val_accuracy,
                                   **scores[history.best_epoch]}}

    return cached_model(out / f"{name}.safetensors", key, build, device, None)


def validation_score(master: nn.Module, guardian: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                     steps: int, threshold: float, seed: int, batch_size: int = 500) -> dict:
    """The reject policy on `x`: clean rejection rate, and correct-or-rejected under joint PGD."""
    device = next(guardian.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    flagged, label = reject_policy_correct(master, guardian, x, threshold)
    kept = []
    with frozen(master), frozen(guardian):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            kept.append(joint_pgd(master, guardian, xb, yb, eps=eps, steps=steps, threshold=threshold,
                                  gen=gen).cpu())
    f_adv, l_adv = reject_policy_correct(master, guardian, torch.cat(kept), threshold)
    return {"clean_rejected": float(flagged.float().mean()), "clean_correct": float((label == y).float().mean()),
            "correct_or_rejected": float((f_adv | (l_adv == y)).float().mean()), "images": len(y)}
