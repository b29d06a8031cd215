"""Named settings for the attacks. Each attack's defaults live in its own signature (the reference values);
a preset holds only overrides, and says in `note` how it departs from the reference, for every report to print."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reabsnet.errors import ReabsnetError


@dataclass(frozen=True)
class Preset:
    attack: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    note: str = "reference defaults"


_PRESETS = [
    Preset("fgsm", "paper", {"eps": 0.3}, "eps 0.3"),
    Preset("pgd", "paper", {}, "Madry et al. MNIST: L-inf eps 0.3, step 0.01, 40 steps, random start"),
    Preset("pgd", "quick", {"steps": 20, "step_size": 0.025}, "reduced: 20 steps of 0.025 (reference 40 of 0.01)"),
    Preset("apgd", "paper", {}, "auto-attack's APGD: 100 steps, initial step 2 eps, momentum 0.75, rho 0.75"),
    Preset("apgd", "smoke", {"steps": 10}, "reduced: 10 steps (reference 100)"),
    Preset("apgd-t", "paper", {}, "auto-attack's APGD-T: targeted DLR toward the 9 top other classes, 100 steps each"),
    Preset("apgd-t", "smoke", {"steps": 10, "targets": 3},
           "reduced: 3 target classes of 10 steps (reference 9 of 100)"),
    Preset("square", "paper", {}, "auto-attack's standard Square: 5,000 queries, p_init 0.8, margin loss"),
    Preset("square", "smoke", {"queries": 200}, "reduced: 200 queries (reference 5,000)"),
    Preset("fab-t", "paper", {}, "auto-attack's FAB-T: the 9 top other classes, 100 iterations each, alpha_max 0.1, "
           "eta 1.05, beta 0.9"),
    Preset("fab-t", "smoke", {"steps": 10, "targets": 3},
           "reduced: 3 target classes of 10 iterations (reference 9 of 100)"),
    Preset("autoattack", "paper", {}, "AutoAttack standard: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), "
           "Square 5,000"),
    Preset("autoattack", "smoke", {"steps": 10, "targets": 3, "queries": 200},
           "reduced: APGD and FAB 10 steps, APGD-T and FAB-T 3 targets, Square 200 queries (reference 100, 9, "
           "5,000)"),
    Preset("selective-pgd", "paper", {}, "Bryniarski et al. 2022: 100 steps of eps / 8, logit margin 0.05, no random "
           "start"),
    Preset("orthogonal-pgd", "paper", {}, "Bryniarski et al. 2022: 100 steps of eps / 8, logit margin 0.05, no random "
           "start"),
    Preset("logit-matching", "paper", {}, "Tramer et al. 2020: 100 steps from eps / 4 decaying linearly, the 3 "
           "nearest natural guides of another class in turn"),
    Preset("deepfool", "paper", {}, "overshoot 0.02, 50 iterations, 10 candidate classes"),
    Preset("deepfool", "quick", {}, "overshoot 0.02, 50 iterations, 10 candidate classes"),
    Preset("cw-l2", "paper", {}),
    Preset("cw-l2", "quick", {"binary_search_steps": 5, "max_iterations": 300, "learning_rate": 0.05,
                              "initial_const": 0.1},
           "reduced: 5 binary-search steps, 300 iterations, lr 0.05, initial c 0.1 (reference 9, 10000, 0.01, 1e-3)"),
    Preset("cw-l2", "smoke", {"binary_search_steps": 3, "max_iterations": 80, "learning_rate": 0.1,
                              "initial_const": 3.0},
           "reduced: 3 binary-search steps, 80 iterations, lr 0.1, initial c 3 (reference 9, 10000, 0.01, 1e-3)"),
    Preset("cw-linf", "paper", {}),
    Preset("cw-linf", "quick", {"max_iterations": 100, "learning_rate": 0.02, "initial_const": 1e-2},
           "reduced: 100 iterations per c, lr 0.02, initial c 1e-2 (reference 1000, 5e-3, 1e-5)"),
    Preset("cw-linf", "smoke", {"max_iterations": 15, "learning_rate": 0.1, "initial_const": 1e-1,
                                "decrease_factor": 0.6},
           "reduced: 15 iterations per c, lr 0.1, initial c 0.1, tau factor 0.6 (reference 1000, 5e-3, 1e-5, 0.9)"),
]
PRESETS: dict[tuple[str, str], Preset] = {(p.attack, p.name): p for p in _PRESETS}


def get_preset(attack: str, name: str) -> Preset:
    """The named preset of `attack`; a preset an attack lacks falls back to its `paper` (reference) settings."""
    if (attack, name) in PRESETS:
        return PRESETS[(attack, name)]
    if name in {p.name for p in _PRESETS} and (attack, "paper") in PRESETS:
        return PRESETS[(attack, "paper")]
    names = sorted({p.name for p in _PRESETS})
    raise ReabsnetError(f"unknown preset {name!r} for attack {attack!r}; choose one of: {', '.join(names)}")
