"""Attacks with one call shape: `attack(model, x, y, *, target=None, box=(-0.5, 0.5), **settings)` returns an
`AttackResult` (the adversarial batch and a per-example record). Any `nn.Module` returning logits works."""

from __future__ import annotations

from collections.abc import Callable

from reabsnet.attacks.adaptive import JointLogits, Scaled, apgd, apgd_t
from reabsnet.attacks.carlini_wagner import carlini_wagner_l2, carlini_wagner_linf
from reabsnet.attacks.common import (
    BOX,
    AttackResult,
    LowPrecision,
    bf16_speedup,
    finish,
    frozen,
    full_precision,
    margin,
    random_targets,
)
from reabsnet.attacks.deepfool import deepfool, deepfool_binary
from reabsnet.attacks.ensemble import autoattack, robust_accuracy
from reabsnet.attacks.fab import fab_t
from reabsnet.attacks.fgsm import fgsm
from reabsnet.attacks.matching import logit_matching
from reabsnet.attacks.orthogonal import orthogonal_pgd, selective_pgd
from reabsnet.attacks.pgd import pgd
from reabsnet.attacks.presets import PRESETS, Preset, get_preset
from reabsnet.attacks.square import square
from reabsnet.errors import ReabsnetError

ATTACKS: dict[str, Callable[..., AttackResult]] = {
    "fgsm": fgsm,
    "pgd": pgd,
    "apgd": apgd,
    "apgd-t": apgd_t,
    "fab-t": fab_t,
    "square": square,
    "autoattack": autoattack,
    "deepfool": deepfool,
    "cw-l2": carlini_wagner_l2,
    "cw-linf": carlini_wagner_linf,
    "orthogonal-pgd": orthogonal_pgd,
    "selective-pgd": selective_pgd,
    "logit-matching": logit_matching,
}


def get_attack(name: str) -> Callable[..., AttackResult]:
    """The attack function registered under `name` (a key of ATTACKS); an unknown name is one line naming them."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise ReabsnetError(f"unknown attack {name!r}; choose one of: {', '.join(ATTACKS)}") from None


__all__ = ["ATTACKS", "AttackResult", "BOX", "JointLogits", "LowPrecision", "PRESETS", "Preset", "Scaled", "apgd",
           "apgd_t", "autoattack", "bf16_speedup", "carlini_wagner_l2", "carlini_wagner_linf", "deepfool",
           "deepfool_binary", "fab_t", "fgsm", "finish", "frozen", "full_precision", "get_attack", "get_preset",
           "logit_matching", "margin", "orthogonal_pgd", "pgd", "random_targets", "robust_accuracy", "selective_pgd",
           "square"]
