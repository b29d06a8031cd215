"""The evaluations of the MNIST pipeline for any master and guardian, on the user's images: the same code, given
in-memory data instead of a profile's splits.

    result = evaluate_adaptive(master, guardian, x, y, norm="linf", bounds=[8 / 255], box=(0, 1))
    result.robust_accuracy()         # {"linf 0.0314": 0.0, ...}: worst case per example over the whole suite
    print(result.markdown())         # the report section the MNIST pipeline writes

Both functions build a `Profile` and `Splits` around the arrays and call `evaluation.paper.attack_sets` /
`evaluate` and `evaluation.adaptive.adaptive_evaluation`, so every number is computed exactly as in the committed
MNIST reports. Attack sets are stored (and reused on a rerun) under `out` when given, else in a temporary folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from reabsnet.artifacts import folder_or_temporary, model_sha256
from reabsnet.attacks.common import BOX, Box
from reabsnet.checks import check_data
from reabsnet.data import Splits
from reabsnet.defense import ReabsNet
from reabsnet.errors import ReabsnetError
from reabsnet.evaluation.adaptive import adaptive_evaluation
from reabsnet.evaluation.paper import ATTACK_SPECS, attack_sets, evaluate
from reabsnet.profiles import PROFILES, AdaptiveConfig, EvalConfig, ModifierConfig, Profile

# attack budgets of the adaptive suite: "standard" is AutoAttack's (APGD 100 steps and 3 restarts, the 9 top other
# classes for APGD-T and FAB-T, Square 5,000 queries); "quick" is `make reproduce`'s; "smoke" is for tests only
BUDGETS = {
    "standard": {},
    "quick": {"steps": 30, "restarts": 1, "targets": 3, "queries": 500, "pipeline_queries": 100, "n_cw": 30},
    "smoke": {"steps": 10, "restarts": 1, "targets": 2, "queries": 50, "pipeline_queries": 30, "n_cw": 5},
}


def _profile(name: str, **groups) -> Profile:
    """The paper profile with these setting groups replaced: the settings of an evaluation of the user's data."""
    return dataclasses.replace(PROFILES["paper"], name=name, networks="", dataset=name, **groups)


def evaluate_oblivious(defense: ReabsNet, x: torch.Tensor, y: torch.Tensor, *,
                       attacks: Sequence[str] = tuple(s.key for s in ATTACK_SPECS), preset: str = "quick",
                       settings: dict[str, dict] | None = None, temperature: float = 1.0,
                       out: str | Path | None = None, name: str = "data") -> dict:
    """Tables 1 and 2 for any master/guardian pair: each attack crafted against `defense.master` alone (the
    paper's threat model) on the images x, y (in `defense.box`), then the guardian's detection rate, the master's
    and ReabsNet's accuracy on the adversarial examples, and clean accuracy, each a count with its Wilson
    interval. `attacks`: keys of `evaluation.paper.ATTACK_SPECS` (fgsm, deepfool, cw-l2-u, cw-l2-t, cw-linf-u,
    cw-linf-t); `preset`: their settings (`reabsnet.attacks.presets`); `settings`: per attack key, overrides (e.g.
    {"fgsm": {"eps": 8 / 255}}; FGSM's preset eps is MNIST's 0.3). Returns the results dict of the MNIST report
    (keys "clean", "natural_pass", "attacks", ...)."""
    known = {s.key: s for s in ATTACK_SPECS}
    unknown = [a for a in attacks if a not in known] + [a for a in (settings or {}) if a not in attacks]
    if unknown:
        raise ReabsnetError(f"unknown or unselected attack {unknown[0]!r}; choose from: {', '.join(known)}")
    specs = [dataclasses.replace(known[a], settings=(settings or {}).get(a)) for a in attacks]
    classes = check_data(defense.master, x, y, defense.box)
    splits = Splits.of_arrays(name, x.float().cpu(), y.long().cpu(), classes=classes, box=defense.box)
    n = len(x)
    profile = _profile(name, eval=EvalConfig(n=n, n_cw_l2=n, n_cw_linf=n, n_pgd=n, preset=preset, clean_images=n))
    master_meta = {"sha256": model_sha256(defense.master), "temperature": temperature}
    with folder_or_temporary(out) as folder:
        sets = attack_sets(profile, splits, defense.master, master_meta, folder, {}, specs=specs)
        results, _, _ = evaluate(defense, splits, sets, clean_images=n, specs=specs)
    return results


@dataclasses.dataclass
class AdaptiveResult:
    """The adaptive suite's results (`results`: the dict the MNIST report's section reads) and the policy whose
    rates `robust_accuracy` returns: "revise" (ReabsNet), "reject" (flagged inputs rejected: correct or rejected)
    or "classifier" (a plain classifier, no guardian: the worst case of AutoAttack's ensemble and APGD-DLR)."""

    policy: str
    results: dict

    def robust_accuracy(self) -> dict[str, float]:
        """bound name ("linf 0.0314") -> the fraction of images right under every attack (worst case)."""
        column = {"revise": "reabsnet", "reject": "selective", "classifier": "master"}[self.policy]
        return {name: b[column]["rate"] for name, b in self.results["bounds"].items()}

    def markdown(self) -> str:
        """The adaptive section of the MNIST report, for these results."""
        from reabsnet.evaluation.report import adaptive_section

        return "\n".join(adaptive_section(self.results))


def evaluate_adaptive(master: nn.Module, guardian: nn.Module | None, x: torch.Tensor, y: torch.Tensor, *,
                      norm: str = "linf", bounds: Sequence[float] = (0.3,), policy: str = "revise",
                      budget: str | dict = "standard", box: Box = BOX, threshold: float = 0.5,
                      revise_to: float | None = None, max_iter: int = 50, temperature: float = 1.0,
                      sanity: bool = True, x_calibration: torch.Tensor | None = None, binarization: int = 0,
                      out: str | Path | None = None, name: str = "data") -> AdaptiveResult:
    """The adaptive suite of the Security section on any master and guardian (or, with `guardian` None, the plain
    classifier's AutoAttack-standard ensemble plus APGD-DLR), on the images x, y in `box`, at each bound of
    `norm` ("linf" or "l2"). With a guardian: joint APGD-CE/DLR, BPDA and unrolled APGD through the modifier,
    joint CW-L2 (L2 bounds), then joint APGD-T and Square on the joint score and on the pipeline on the survivors;
    the master alone faces the standard ensemble beside it; Carlini et al.'s sanity checks (single step at the
    largest L-inf bound, the whole box, the loss trace). `budget`: a name of BUDGETS or a dict of
    `profiles.AdaptiveConfig` settings. `temperature`: the master's distillation temperature, which the CE
    attacks undo (1 for an undistilled master). The modifier: `threshold`, `revise_to`, `max_iter` as in
    `ReabsNet`. `x_calibration`: natural images (not the evaluated ones) on which the guardian's thresholds at 1%
    and 5% false positives are set, for the reject policy's rates at those thresholds (`at_thresholds`).
    `binarization`: run the binarization test (`evaluation.binarization`) at each bound on the first N images
    whose balls are disjoint: does each attack find an example known to exist (reject policy, its inverted
    control and ReabsNet; a plain classifier's own test without a guardian)? 0: skip."""
    if norm not in ("linf", "l2"):
        raise ReabsnetError(f"norm {norm!r}: choose linf or l2")
    if not bounds or any(not float(e) > 0 for e in bounds):
        raise ReabsnetError(f"bounds {list(bounds)}: give one or more positive radii")
    if policy not in ("revise", "reject") or (guardian is None and policy != "revise"):
        raise ReabsnetError(f"policy {policy!r}: choose revise or reject (with a guardian)")
    chosen = BUDGETS.get(budget) if isinstance(budget, str) else budget
    if chosen is None:
        raise ReabsnetError(f"budget {budget!r}: choose one of {', '.join(BUDGETS)} or give a dict of settings")
    classes = check_data(master, x, y, box)
    eps = sorted(float(e) for e in bounds)
    text = ",".join(repr(e) for e in eps)
    try:
        if binarization < 0:
            raise ReabsnetError(f"binarization {binarization}: give a number of images, 0 to skip")
        adaptive = dataclasses.replace(AdaptiveConfig(), n=len(x), harden_n=0, binarization=binarization, **chosen,
                                       linf_bounds=text if norm == "linf" else "",
                                       l2_bounds=text if norm == "l2" else "")
    except TypeError as e:
        raise ReabsnetError(f"budget: {e}") from None
    modifier = ModifierConfig(threshold=threshold, revise_to=threshold if revise_to is None else revise_to,
                              max_iter=max_iter)
    profile = _profile(name, adaptive=adaptive, modifier=modifier)
    val = None
    if x_calibration is not None:
        check_data(master, x_calibration, torch.zeros(len(x_calibration), dtype=torch.long), box, "calibration images")
        val = (x_calibration.float().cpu(), torch.zeros(len(x_calibration), dtype=torch.long))
    splits = Splits.of_arrays(name, x.float().cpu(), y.long().cpu(), classes=classes, box=box, val=val)
    master_meta = {"sha256": model_sha256(master), "temperature": temperature}
    defended = guardian_meta = None
    if guardian is not None:
        check_data(guardian, x[:2], torch.zeros(min(2, len(x)), dtype=torch.long), box, "data (for the guardian)")
        defended = ReabsNet(master, guardian, threshold=threshold, revise_to=modifier.revise_to,
                            max_iter=max_iter, box=box).eval()
        guardian_meta = {"sha256": model_sha256(guardian)}
    with folder_or_temporary(out) as folder:
        results = adaptive_evaluation(profile, splits, defended, master_meta, guardian_meta, None, None, folder, {},
                                      bounds=[(norm, e) for e in eps], baselines=("master",), sanity=sanity,
                                      defense=guardian is not None, master=master)
    return AdaptiveResult(policy if guardian is not None else "classifier", results)
