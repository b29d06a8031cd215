"""The guardian's detection thresholds: calibrated to fixed false-positive rates on natural images, and the reject
policy's rates at each of them (Tramer 2022's rejection-is-an-error accuracy, Bryniarski et al. 2022's SR@FPR, the
ROC-AUC of the attacker's final examples)."""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.evaluation.stats import rate, roc_auc
from reabsnet.train.loop import predict_logits

# clean false-positive rates the guardian's threshold is calibrated to, beside 0.5: Tramer 2022's 1% and 5%, and
# Bryniarski et al. 2022's SR@5 and SR@50
FPRS = (0.01, 0.05, 0.5)


def calibrate(guardian: nn.Module, x_val: torch.Tensor) -> dict | None:
    """The guardian's thresholds on P(adversarial) that flag 1%, 5% and 50% of the natural images `x_val` (the
    validation split; None where there is none), beside the paper's 0.5 and the share of them it flags."""
    if not len(x_val):
        return None
    p = predict_logits(guardian, x_val).softmax(1)[:, 1]
    ranked = p.sort(descending=True).values
    thresholds = {f"{f:g}": float(ranked[int(f * len(p))]) for f in FPRS}
    return {"val_images": len(p), "thresholds": thresholds, "flagged_at_0.5": rate(p > 0.5)}


def at_thresholds(calibration: dict | None, p_clean: torch.Tensor, clean_correct: torch.Tensor, y: torch.Tensor,
                  seen: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """The reject policy at each threshold t (0.5, and the calibrated 1%, 5% and 50% false-positive
    ones): flagged when
    P(adversarial) > t, rejected then, else the master's label. Per threshold: the clean images rejected; robust
    accuracy as correct-or-rejected; robust accuracy counting a rejected clean input as an error (Tramer 2022:
    right on the clean input, and correct or rejected under every attack); the attack success rate on the images
    the policy gets right clean (SR, Bryniarski et al. 2022: some attack set's example wrong and not flagged); and
    the ROC-AUC of the guardian between the clean images and, per image, the attacker's final example (the wrong
    one with the lowest P(adversarial)). Every attack set in `seen` counts at every threshold; the suite adds
    joint APGD-CE and Orthogonal PGD aimed under each calibrated threshold (`at_threshold_attacks`)."""
    thresholds = {"0.5": 0.5, **({f"fpr {k}": v for k, v in calibration["thresholds"].items()}
                                 if calibration else {})}
    p_adv = torch.stack([p for p, _ in seen]) if seen else torch.zeros(0, len(y))
    wrong = torch.stack([label != y for _, label in seen]) if seen else torch.zeros(0, len(y), dtype=torch.bool)
    # the attacker's final example per image: the wrong one the guardian scores lowest (none: not fooled)
    final = torch.where(wrong, p_adv, torch.full_like(p_adv, float("inf"))).amin(0) if seen else torch.full(
        (len(y),), float("inf"))
    fooled = (final < float("inf")) & clean_correct
    out = {}
    for name, t in thresholds.items():
        accepted_right = (p_clean <= t) & clean_correct
        broken = broken_at(t, y, seen)
        ok = ((p_clean > t) | clean_correct) & ~broken
        out[name] = {"threshold": t, "clean_rejected": rate(p_clean > t), "correct_or_rejected": rate(ok),
                     "robust_rejection_is_error": rate(accepted_right & ~broken),
                     "attack_success": rate(broken[accepted_right]) if accepted_right.any() else None}
    out["roc_auc_final_examples"] = roc_auc(p_clean, final[fooled]) if fooled.any() else None
    return out


def held_at_thresholds(calibration: dict | None, p_clean: torch.Tensor, clean_correct: torch.Tensor,
                       y: torch.Tensor, seen: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The images the reject policy still holds at some calibrated threshold t (correct-or-rejected clean, and no
    example in `seen` wrong with P(adversarial) <= t): what a nested larger bound must attack again."""
    held = torch.zeros(len(y), dtype=torch.bool)
    for t in (calibration or {}).get("thresholds", {}).values():
        held |= ((p_clean > t) | clean_correct) & ~broken_at(t, y, seen)
    return held


def broken_at(t: float, y: torch.Tensor, seen: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Per image: some example in `seen` (P(adversarial), the master's label) is wrong and not flagged at t."""
    if not seen:
        return torch.zeros(len(y), dtype=torch.bool)
    return torch.stack([(label != y) & (p <= t) for p, label in seen]).any(0)
