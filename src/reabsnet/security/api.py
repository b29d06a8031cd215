"""The adaptive evaluation's one core (`evaluate`) and its two callers: `evaluate_adaptive` on a user's networks
and images, and `evaluate_profile`, `reabsnet reproduce`'s adaptive stage.

    result = evaluate_adaptive(master, guardian, x, y, norm="linf", bounds=[8 / 255], box=(0, 1))
    result.robust_accuracy()         # {"linf 0.0314": 0.0, ...}: worst case per example over the whole suite
    print(result.markdown())         # the report section the MNIST pipeline writes

    suite = Suite.standard().only("joint-apgd-ce", "pipeline-square")     # pick steps, or add your own
    evaluate_adaptive(master, guardian, x, y, suite=suite, budget="smoke")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from reabsnet.artifacts import folder_or_temporary, model_sha256
from reabsnet.attacks import bf16_speedup
from reabsnet.attacks.common import BOX, Box
from reabsnet.checks import check_data
from reabsnet.data import Splits
from reabsnet.defense import ReabsNet
from reabsnet.errors import ReabsnetError
from reabsnet.evaluation.stats import rate
from reabsnet.profiles import EvalConfig, Profile, bound_list
from reabsnet.runtime import search_precision
from reabsnet.security.alarm import masking_alarm
from reabsnet.security.binarization import binarization_tests
from reabsnet.security.engine import Run, Setup, run_bound, start
from reabsnet.security.ledger import Ledger
from reabsnet.security.networks import Baseline, Target, unscale_of
from reabsnet.security.results import POLICIES
from reabsnet.security.sanity import sanity_checks
from reabsnet.security.suite import TUNED, Budget, Suite, parse_names

GUIDES = 1000            # logit matching's natural images: the first validation images

# attack budgets of the adaptive suite: "standard" is AutoAttack's (APGD 100 steps and 3 restarts, the 9 top other
# classes for APGD-T and FAB-T, Square 5,000 queries); "quick" is `make reproduce`'s; "smoke" is for tests only
BUDGETS = {
    "standard": Budget(),
    "quick": Budget(steps=30, restarts=1, targets=3, queries=500, pipeline_queries=100, n_cw=30),
    "smoke": Budget(steps=10, restarts=1, targets=2, queries=50, pipeline_queries=30, n_cw=5),
}


def evaluate(target: Target, suite: Suite, setup: Setup, bounds: list[tuple[str, float]], *, sanity: bool = True,
             binarization: int = 0) -> tuple[dict, dict[str, Ledger]]:
    """Run `suite` on `target` at every bound (nested where `setup.nested`: within a norm, ascending, each larger
    bound attacking only what the smaller left standing) and return the results (the dict results.json holds)
    and each bound's ledger."""
    run = start(target, suite, setup)
    results = header(run)
    if setup.nested:
        bounds = sorted(bounds, key=lambda b: ([v for v, _ in bounds].index(b[0]), b[1]))
    results["nested"] = setup.nested
    ledgers: dict[str, Ledger] = {}
    smaller: dict[str, Ledger] = {}
    for norm, eps in bounds:
        result, ledger = run_bound(run, norm, eps, smaller.get(norm) if setup.nested else None)
        smaller[norm] = ledgers[result.name] = ledger
        results["bounds"][result.name] = result.to_json()
    if binarization:
        classifiers = {"Madry-style baseline": target.baselines["madry"].net} if "madry" in target.baselines else {}
        if target.defense is None:
            classifiers["classifier"] = target.master
        results["binarization"] = binarization_tests(target.defense, classifiers, run.x, bounds, binarization,
                                                     setup.budget.steps, setup.budget.queries, setup.splits.box)
    if sanity and target.defense is not None:
        results["sanity"] = sanity_checks(run, results, bounds)
    if setup.escalate:
        results["escalation_tolerance"] = setup.tolerance
    results["alarm"] = masking_alarm(results)
    cw = run.minimal_sets.get("joint-cw-l2-t")
    results["n_cw"] = len(cw[0]["y"]) if cw else 0
    return results, ledgers


def header(run: Run) -> dict:
    """The results' settings and clean rates."""
    b, baselines = run.setup.budget, run.target.baselines
    precision = next((v.precision for v in baselines.values() if v.precision != "fp32"), "fp32")
    speedup = next((v.speedup for v in baselines.values() if v.speedup is not None), None)
    results = {"n": run.setup.n, "steps": b.steps, "restarts": b.restarts, "targets": b.targets,
               **({"baseline_precision": precision} if precision != "fp32" else {}),
               **({"bf16_speedup": round(speedup, 2)} if speedup is not None else {}),
               "queries": b.queries, "pipeline_queries": b.pipeline_queries,
               **({"success_margin": b.success_margin} if b.success_margin else {}), "bounds": {},
               "clean": {"master": rate(run.clean["master"]),
                         **{who: rate(run.clean[who]) for who in baselines if who != "master"}}}
    if run.target.defense is not None:
        p = run.clean["pipeline"]
        if run.calibration:
            results["calibration"] = run.calibration
        results["clean"] |= {"reabsnet": rate(run.columns["reabsnet"]),
                             "selective_correct_or_rejected": rate(run.columns["selective"]),
                             "selective_rejected": rate(p.flagged)}
    return results


def threats(cfg) -> list[tuple[str, float]]:
    """The (norm, eps) pairs a profile's adaptive evaluation attacks: `cfg` is its AdaptiveConfig."""
    return [("linf", e) for e in bound_list(cfg.linf_bounds)] + [("l2", e) for e in bound_list(cfg.l2_bounds)]


def profile_suite(profile: Profile, tuned: bool = False) -> Suite:
    """The suite a profile runs: the standard one, or the steps `adaptive.suite` names; the tuned attack only on a
    hardened guardian (`tuned`)."""
    names = parse_names(profile.adaptive.suite)
    suite = Suite.named(names) if names else Suite.standard()
    if tuned and TUNED.name not in suite.names and all(n.startswith("+") for n in names):
        suite = suite.add(TUNED, after="joint-apgd-t")         # the standard suite's, with its additions
    return suite if tuned or TUNED.name not in suite.names else suite.without(TUNED.name)


def profile_setup(profile: Profile, splits: Splits, out: Path, timings: dict, n: int | None = None,
                  subdir: str = "adaptive", baseline_subdir: str | None = None) -> Setup:
    """Where a profile's adaptive sets go and with which budget."""
    a = profile.adaptive
    return Setup(splits, n or a.n, out, profile_budget(profile), profile.eval, subdir, baseline_subdir, a.nested,
                 timings, factors(a.escalate), a.escalate_tolerance)


def factors(text: str) -> tuple[int, ...]:
    """"3,10" -> (3, 10): escalation's budget multiples; "" -> () (off)."""
    return tuple(int(part) for part in text.split(",")) if text else ()


def profile_budget(profile: Profile) -> Budget:
    """The budget a profile's adaptive settings give (the fields of `Budget`, as `adaptive.*` names them)."""
    return Budget(**{f.name: getattr(profile.adaptive, f.name) for f in dataclasses.fields(Budget)})


def profile_target(profile: Profile, splits: Splits, defended: ReabsNet | None, master_meta: dict,
                   guardian_meta: dict | None, baselines: dict[str, tuple[nn.Module, dict]],
                   master: nn.Module | None = None) -> Target:
    """The pipeline's networks as a Target: the master alone (its CE view / T) and the Madry-style baseline (its
    cheap attacks searching at `adaptive.precision`), logit matching's guides the first GUIDES validation images."""
    master = defended.master if defended is not None else master
    out = {}
    for who, (net, meta) in baselines.items():
        if who == "master":
            out[who] = Baseline(net, meta, unscale_of(meta))
            continue
        device = next(net.parameters()).device
        x = splits.split("test", profile.adaptive.n)[0][:128].to(device)
        precision, speedup = search_precision(profile.adaptive.precision, device,
                                              lambda n=net, x=x: bf16_speedup(n, x))
        out[who] = Baseline(net, meta, None, precision, speedup)
    guides = splits.split("val", GUIDES)[0] if defended is not None else None
    return Target(defended, master, master_meta, guardian_meta, out, guides)


def evaluate_profile(profile: Profile, splits: Splits, target: Target, out: Path, timings: dict, *,
                     bounds: list[tuple[str, float]] | None = None, n: int | None = None, subdir: str = "adaptive",
                     baseline_subdir: str | None = None, sanity: bool = True, tuned: bool = False) -> dict:
    """`reproduce`'s adaptive stage: the profile's suite on `target` at its bounds (or `bounds`), on its first
    `adaptive.n` (or `n`) test images; sets under out/<subdir>/ (the baselines' under `baseline_subdir`)."""
    setup = profile_setup(profile, splits, out, timings, n, subdir, baseline_subdir)
    results, _ = evaluate(target, profile_suite(profile, tuned), setup, bounds or threats(profile.adaptive),
                          sanity=sanity, binarization=profile.adaptive.binarization)
    return results


@dataclasses.dataclass
class AdaptiveResult:
    """The adaptive suite's results (`results`: the dict the MNIST report's section reads), each bound's per-image
    ledger, and the policy whose rates `robust_accuracy` returns: "revise" (ReabsNet), "reject" (flagged inputs
    rejected: correct or rejected) or "classifier" (a plain classifier, no guardian: the worst case of AutoAttack's
    ensemble and APGD-DLR)."""

    policy: str
    results: dict
    ledgers: dict[str, Ledger] = dataclasses.field(default_factory=dict)

    def robust_accuracy(self) -> dict[str, float]:
        """bound name ("linf 0.0314") -> the fraction of images right under every attack (worst case)."""
        column = POLICIES[self.policy].column
        return {name: b[column]["rate"] for name, b in self.results["bounds"].items()}

    def broken_by(self, bound: str) -> list[str | None]:
        """Per image at `bound`, the attack set that first broke it under the policy (None: it stands)."""
        return self.ledgers[bound].breaker(POLICIES[self.policy].column)

    def markdown(self) -> str:
        """The adaptive section of the MNIST report, for these results."""
        from reabsnet.security.report import adaptive_section

        return "\n".join(adaptive_section(self.results))


def evaluate_adaptive(master: nn.Module, guardian: nn.Module | None, x: torch.Tensor, y: torch.Tensor, *,
                      norm: str = "linf", bounds: Sequence[float] = (0.3,), policy: str = "revise",
                      budget: str | dict | Budget = "standard", box: Box = BOX, threshold: float = 0.5,
                      revise_to: float | None = None, max_iter: int = 50, temperature: float = 1.0,
                      sanity: bool = True, x_calibration: torch.Tensor | None = None, binarization: int = 0,
                      suite: Suite | Sequence[str] | None = None, nested: bool = False,
                      escalate: Sequence[int] = (), tolerance: float = 0.01,
                      out: str | Path | None = None, name: str = "data") -> AdaptiveResult:
    """The adaptive suite of the Security section on any master and guardian (or, with `guardian` None, the plain
    classifier's AutoAttack-standard ensemble plus APGD-DLR), on the images x, y in `box`, at each bound of
    `norm` ("linf" or "l2"). `suite`: the steps to run (a `Suite`, or names of the standard suite's steps;
    default all of them: `reabsnet suite` lists them). With a guardian: joint APGD-CE/DLR, BPDA and unrolled APGD
    through the modifier, joint CW-L2 (L2 bounds), then joint APGD-T, Selective and Orthogonal PGD, logit matching
    and Square on the joint score and on the pipeline on the survivors; the master alone faces the standard
    ensemble beside it; Carlini et al.'s sanity checks (single step at the largest L-inf bound, the whole box, the
    loss trace). `budget`: a name of BUDGETS, a `Budget` or a dict of its fields. `temperature`: the master's
    distillation temperature, which the CE attacks undo (1 for an undistilled master). The modifier: `threshold`,
    `revise_to`, `max_iter` as in `ReabsNet`. `x_calibration`: natural images (not the evaluated ones) on which
    the guardian's thresholds at 1%, 5% and 50% false positives are set, for the reject policy's rates at those
    thresholds, and logit matching's natural images. `binarization`: run the binarization test
    (`security.binarization`) at each bound on the first N images whose balls are disjoint. 0: skip. `nested`:
    within the norm, each larger bound attacks only the images the smaller left standing. `escalate`: budget
    multiples, ascending (e.g. (3, 10)): after the suite, the images still standing are attacked again by every
    step at each multiple in turn, until a round breaks at most `tolerance` of the images in every verdict column
    (the rates stopped falling); the rates are the last round's, the report says where each converged. Whatever
    the setting, `results["alarm"]` says whether the evaluation shows signs of gradient masking
    (`security.alarm`)."""
    eps, chosen, suite = _checked(norm, bounds, policy, guardian, budget, binarization, suite)
    escalate = _escalation(escalate, tolerance)
    classes = check_data(master, x, y, box)
    val = None
    if x_calibration is not None:
        check_data(master, x_calibration, torch.zeros(len(x_calibration), dtype=torch.long), box, "calibration images")
        val = (x_calibration.float().cpu(), torch.zeros(len(x_calibration), dtype=torch.long))
    splits = Splits.of_arrays(name, x.float().cpu(), y.long().cpu(), classes=classes, box=box, val=val)
    master_meta = {"sha256": model_sha256(master), "temperature": temperature}
    defended = guardian_meta = None
    if guardian is not None:
        check_data(guardian, x[:2], torch.zeros(min(2, len(x)), dtype=torch.long), box, "data (for the guardian)")
        defended = ReabsNet(master, guardian, threshold=threshold, revise_to=revise_to, max_iter=max_iter,
                            box=box).eval()
        guardian_meta = {"sha256": model_sha256(guardian)}
    guides = splits.split("val", GUIDES)[0] if defended is not None else None
    target = Target(defended, master, master_meta, guardian_meta,
                    {"master": Baseline(master, master_meta, unscale_of(master_meta))}, guides)
    with folder_or_temporary(out) as folder:
        # the attack sets start from the presets `make reproduce` uses (joint CW-L2 at its quick preset)
        setup = Setup(splits, len(x), folder, chosen, EvalConfig(preset="quick"), nested=nested, escalate=escalate,
                      tolerance=tolerance)
        results, ledgers = evaluate(target, suite, setup, [(norm, e) for e in eps], sanity=sanity,
                                    binarization=binarization)
    return AdaptiveResult(policy if guardian is not None else "classifier", results, ledgers)


def _escalation(escalate, tolerance) -> tuple[int, ...]:
    """evaluate_adaptive's escalation: whole multiples above 1, ascending, and a tolerance in [0, 1]."""
    factors = tuple(escalate)
    if any(isinstance(f, bool) or not isinstance(f, int) or f < 2 for f in factors) or list(factors) != sorted(
            set(factors)):
        raise ReabsnetError(f"escalate {list(factors)}: give whole budget multiples above 1, ascending, e.g. (3, 10)")
    if not 0 <= tolerance <= 1:
        raise ReabsnetError(f"tolerance {tolerance}: give the share of images a calm round may break, in [0, 1]")
    return factors


def _checked(norm, bounds, policy, guardian, budget, binarization, suite) -> tuple[list[float], Budget, Suite]:
    """evaluate_adaptive's arguments, each refused in one line where it is out of range."""
    if norm not in ("linf", "l2"):
        raise ReabsnetError(f"norm {norm!r}: choose linf or l2")
    if not bounds or any(not float(e) > 0 for e in bounds):
        raise ReabsnetError(f"bounds {list(bounds)}: give one or more positive radii")
    if policy not in ("revise", "reject") or (guardian is None and policy != "revise"):
        raise ReabsnetError(f"policy {policy!r}: choose revise or reject (with a guardian)")
    if binarization < 0:
        raise ReabsnetError(f"binarization {binarization}: give a number of images, 0 to skip")
    chosen = BUDGETS.get(budget) if isinstance(budget, str) else budget
    if chosen is None:
        raise ReabsnetError(f"budget {budget!r}: choose one of {', '.join(BUDGETS)} or give a dict of settings")
    if isinstance(chosen, dict):
        try:
            chosen = Budget(**chosen)
        except TypeError as e:
            raise ReabsnetError(f"budget: {e}") from None
    if suite is None:
        suite = Suite.standard()
    elif not isinstance(suite, Suite):
        suite = Suite.named(list(suite))
    return sorted(float(e) for e in bounds), chosen, suite
