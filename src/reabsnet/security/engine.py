"""The engine: runs a suite's steps at each bound, judges every step's examples once through the defense (or the
baseline), and keeps one ledger per bound; every rate of the Security section is read off the ledgers.

auto-attack's runner, with more columns in its mask: a step that runs on every image attacks them all; a survivor
step attacks only the images still standing for the verdicts it serves. A defense step's examples then count
against both policies (ReabsNet and the reject policy, at every threshold); a baseline step's against the baseline
verdicts it serves (APGD-DLR is outside AutoAttack's standard ensemble). Attack sets are stored under `Setup.out`
by their keys (stable across versions: an existing home reuses every set).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reabsnet.attacks import AttackResult, finish, frozen
from reabsnet.data import Splits
from reabsnet.errors import ReabsnetError
from reabsnet.evaluation.paper import AttackSpec, build_sets
from reabsnet.evaluation.stats import rate
from reabsnet.profiles import EvalConfig
from reabsnet.security.indicators import standing_indicators
from reabsnet.security.ledger import Ledger
from reabsnet.security.networks import Target
from reabsnet.security.results import AttackRow, BoundResult
from reabsnet.security.suite import REJECTING, Budget, Step, Suite
from reabsnet.security.thresholds import at_thresholds, broken_at, calibrate
from reabsnet.train.loop import predict_logits

log = logging.getLogger(__name__)

DEFENSE_COLUMNS = {"revise": "reabsnet", "reject": "selective"}    # a verdict -> its column in the ledger


def eps_name(eps: float) -> str:
    """A bound in set names: two decimals (MNIST's 0.10, 0.30, ...), more where two would merge bounds (8/255)."""
    return f"{eps:.2f}" if abs(eps - round(eps, 2)) < 1e-12 else f"{eps:.6g}"


@dataclass
class Setup:
    """Where and how one evaluation builds its attack sets: the images (the first `n` test images of `splits`),
    the budget, the attack presets and target seed the sets start from (`sets`), the folders under `out`."""

    splits: Splits
    n: int
    out: Path
    budget: Budget = field(default_factory=Budget)
    sets: EvalConfig = field(default_factory=EvalConfig)
    subdir: str = "adaptive"
    baseline_subdir: str | None = None     # the baselines' sets do not depend on the defense: shareable
    nested: bool = False                   # within a norm, each larger bound attacks what the smaller left
    timings: dict = field(default_factory=dict)
    # escalation: after the suite at its budget, the images still standing are attacked again by every step at
    # these multiples of it (ascending), until a round breaks at most `tolerance` of the images in every column
    escalate: tuple[int, ...] = ()
    tolerance: float = 0.01


@dataclass
class Run:
    """One evaluation in progress: its target, suite and setup, the images and their clean outcomes."""

    target: Target
    suite: Suite
    setup: Setup
    x: torch.Tensor
    y: torch.Tensor
    clean: dict                  # "master" -> bool per image, "pipeline" -> Prediction, baseline -> bool
    calibration: dict | None
    columns: dict = field(default_factory=dict)          # each verdict column's clean outcome (`clean_columns`)
    minimal_sets: dict = field(default_factory=dict)     # one unbounded set per minimal step

    @property
    def reject(self) -> int:
        return self.setup.splits.classes       # the joint logits' "rejected" class: index N of N classes


def start(target: Target, suite: Suite, setup: Setup) -> Run:
    """The images and their clean outcomes: the master's, each baseline's and the pipeline's."""
    x, y = setup.splits.split("test", setup.n)
    clean: dict = {"master": predict_logits(target.master, x).argmax(1) == y}
    for who, b in target.baselines.items():
        clean[who] = clean["master"] if b.net is target.master else predict_logits(b.net, x).argmax(1) == y
    calibration = None
    if target.defense is not None:
        clean["pipeline"] = target.defense.predict_batches(x)
        calibration = calibrate(target.defense.guardian, setup.splits.split("val")[0])
    run = Run(target, suite, setup, x, y, clean, calibration)
    run.columns = clean_columns(run)
    return run


def clean_columns(run: Run) -> dict[str, torch.Tensor]:
    """Each verdict column's clean outcome: right (ReabsNet, a baseline) or right-or-rejected (reject policy)."""
    columns = {}
    if run.target.defense is not None:
        p = run.clean["pipeline"]
        columns = {"reabsnet": p.label == run.y, "selective": p.flagged | (p.label == run.y)}
    for who in run.target.baselines:
        columns |= {who: run.clean[who], f"{who}_autoattack": run.clean[who]}
    return columns


def run_bound(run: Run, norm: str, eps: float, prior: Ledger | None) -> tuple[BoundResult, Ledger]:
    """Every step of the suite at one bound, in order (the defense's, then the threshold steps per calibrated
    threshold, then each baseline's); then, where the setup escalates, the rounds at larger budgets on what still
    stands. Returns the bound's result (its rates those of the last round) and its ledger."""
    defense = run.target.defense
    held = None
    if prior is not None and defense is not None:
        held = prior.held_fpr(run.calibration, run.clean["pipeline"].p_adversarial, run.clean["master"])
    ledger = Ledger.open(run.y, run.columns, prior, held)
    result = BoundResult(norm, eps)
    square = {"reabsnet": 0, "selective": 0} if defense is not None else {}
    run_round(run, ledger, result, norm, eps, prior is not None, square)
    if run.setup.escalate:
        escalate(run, ledger, result, norm, eps, square)
    result.indicators = standing_indicators(run, ledger)
    if defense is not None:
        result.robust |= {k: rate(ledger.standing[k]) for k in ("reabsnet", "selective")}
        p = run.clean["pipeline"].p_adversarial
        result.fixed_fpr = at_thresholds(run.calibration, p, run.clean["master"], run.y, ledger.seen)
    for who in run.target.baselines:
        if who in rated(run):
            result.robust |= {k: rate(ledger.standing[k]) for k in (who, f"{who}_autoattack")}
    result.square_beyond_gradient = square
    log.info("adaptive %s: %s", result.name, ", ".join(f"{k} {v['rate']:.3f}" for k, v in result.robust.items()))
    return result, ledger


def rated(run: Run) -> set[str]:
    """The verdict columns whose rates a bound reports: the defense's, and the baselines' where the suite has a
    baseline step (a baseline no step attacks has no robust accuracy to report, only its clean one)."""
    columns = {"reabsnet", "selective"} if run.target.defense is not None else set()
    if any(not step.defense for step in run.suite):
        columns |= {c for who in run.target.baselines for c in (who, f"{who}_autoattack")}
    return columns


def run_round(run: Run, ledger: Ledger, result: BoundResult, norm: str, eps: float, nested: bool, square: dict,
              factor: int = 1, round_: int = 0) -> None:
    """The suite once at `factor` times its budget: round 0 as the suite says (every-image steps on every image);
    an escalation round (`round_` 1, 2, ...) on the images still standing only, minimal-distance steps left out."""
    if run.target.defense is not None:
        for step in run.suite:
            if step.defense and not step.at_threshold:
                defense_step(run, ledger, result, step, norm, eps, nested, square, factor, round_)
        for label, t in (run.calibration or {}).get("thresholds", {}).items():
            for step in run.suite:
                if step.at_threshold:
                    threshold_step(run, ledger, result, step, norm, eps, label, t, factor, round_)
    for who in run.target.baselines:
        for step in run.suite:
            if not step.defense:
                baseline_step(run, ledger, result, step, who, norm, eps, nested, square, factor, round_)


def escalate(run: Run, ledger: Ledger, result: BoundResult, norm: str, eps: float, square: dict) -> None:
    """Escalation rounds at each factor of `setup.escalate` in turn, each on the verdict columns whose last round
    broke more than `setup.tolerance` of the images, until every column is calm (its rate stopped falling) or the
    last factor ran. Records each round's columns, rates and what it broke, and per column the factor from which
    every later round was calm."""
    columns = [c for c in ledger.standing if c in rated(run)]
    calm = int(run.setup.tolerance * len(run.y))          # images a round may break and still count as calm

    def rates() -> dict:
        return {c: rate(ledger.standing[c])["rate"] for c in columns}

    result.rounds = [{"factor": 1, "robust": rates()}]
    ledger.active = set(columns)
    for r, factor in enumerate(run.setup.escalate, start=1):
        before = {c: int(ledger.standing[c].sum()) for c in columns}
        attacked = sorted(ledger.active)
        run_round(run, ledger, result, norm, eps, True, square, factor, r)
        broke = {c: before[c] - int(ledger.standing[c].sum()) for c in columns}
        result.rounds.append({"factor": factor, "columns": attacked, "robust": rates(), "broke": broke})
        # a column whose round was calm has converged: the next round attacks only the others' images
        ledger.active = {c for c in ledger.active if broke[c] > calm}
        if not ledger.active:
            break
    ledger.active = None
    result.converged = {}
    for c in columns:
        since = None          # the earliest round from which every later round was calm
        for i in range(len(result.rounds) - 1, 0, -1):
            if result.rounds[i]["broke"][c] > calm:
                break
            since = result.rounds[i - 1]["factor"]
        result.converged[c] = since


def step_spec(step: Step, budget: Budget, reject: int, norm: str, eps: float, name: str | None = None,
              factor: int = 1, round_: int = 0) -> AttackSpec:
    """The attack set of `step` at a bound: its key (the set's file name) and settings. `reject`: the joint
    logits' rejected class; `name`: the step's name with its baseline or threshold filled in; `factor`: an
    escalation round's multiple of the budget (its sets named `<name>-x<factor>-...`)."""
    name = (name or step.stem or step.name) + (f"-x{factor}" if factor > 1 else "")
    settings = {"eps": eps, "norm": norm, **step.resolved(budget, factor, round_)}
    if step.network in REJECTING:
        settings["reject"] = reject
    title = f"{name.split('-')[0]} {step.title} {norm} {eps:g}"
    fn = step.attack if isinstance(step.attack, str) else within_bound(step.name, step.attack)
    return AttackSpec(f"{name}-{norm}-{eps_name(eps)}", title, fn, step.targeted, settings)


def spec(run: Run, step: Step, norm: str, eps: float, name: str | None = None, factor: int = 1, round_: int = 0
         ) -> AttackSpec:
    return step_spec(step, run.setup.budget, run.reject, norm, eps, name, factor, round_)


def attack(run: Run, model, meta: dict, s: AttackSpec, standing: torch.Tensor | None, baseline: bool = False
           ) -> tuple[torch.Tensor, dict | None]:
    """The examples of set `s` on `model`, on every image (`standing` None) or on the standing ones only (the
    others keep their clean input: they are already lost); and the set's arrays (None where nothing ran)."""
    setup = run.setup
    folder = (setup.baseline_subdir or setup.subdir) if baseline else setup.subdir
    idx = None if standing is None else standing.nonzero().squeeze(1)
    x_adv = run.x.clone()
    if idx is not None and not len(idx):
        return x_adv, None
    arrays, _ = build_sets(setup.sets, setup.splits, model, meta, setup.out, setup.timings, [s], folder,
                           [setup.n], indices=idx)[s.key]
    if idx is None:
        return arrays["x_adv"], arrays
    x_adv[idx] = arrays["x_adv"]
    return x_adv, arrays


def within_bound(name: str, fn: Callable) -> Callable:
    """A user's attack, refused in one line naming its step when an example leaves the bound or the box (checked
    per batch, before its set is written: nothing is). It may return an AttackResult or the adversarial batch."""
    @functools.wraps(fn)
    def run(model, x, y, *, target=None, eps, norm, box, reject=None, **settings) -> AttackResult:
        out = fn(model, x, y, target=target, eps=eps, norm=norm, box=box,
                 **({"reject": reject} if reject is not None else {}), **settings)
        x_adv = out.x_adv if isinstance(out, AttackResult) else out
        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
            raise ReabsnetError(f"suite step {name!r}: its attack must return an AttackResult or a batch shaped "
                                f"like x {tuple(x.shape)}")
        d = (x_adv.detach() - x).flatten(1)
        distance = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        if (distance > eps * (1 + 1e-4) + 1e-6).any() or x_adv.min() < box[0] - 1e-6 or x_adv.max() > box[1] + 1e-6:
            raise ReabsnetError(f"suite step {name!r}: an example leaves the {norm} bound {eps:g} (largest "
                                f"{float(distance.max()):.4g}) or the box [{box[0]:g}, {box[1]:g}]; nothing was "
                                "written")
        if isinstance(out, AttackResult):
            return out
        with frozen(model):
            return finish(model, x, x_adv, y, target, torch.zeros(len(x), dtype=torch.long, device=x.device), box,
                          reject=reject)
    return run


def union(masks: dict[str, torch.Tensor], verdicts: tuple[str, ...]) -> torch.Tensor:
    """The images standing for any of `verdicts`."""
    out = torch.zeros_like(next(iter(masks.values())))
    for v in verdicts:
        out |= masks[DEFENSE_COLUMNS.get(v, v)]
    return out


def judge(run: Run, ledger: Ledger, x_adv: torch.Tensor):
    """The defense's outcome on `x_adv`, recorded in the ledger's seen examples: (prediction, right, acceptable
    under the reject policy)."""
    pred = run.target.defense.predict_batches(x_adv)
    ledger.seen.append((pred.p_adversarial, predict_logits(run.target.defense.master, x_adv).argmax(1)))
    correct = pred.label == run.y
    return pred, correct, pred.flagged | correct


def defense_step(run: Run, ledger: Ledger, result: BoundResult, step: Step, norm: str, eps: float, nested: bool,
                 square: dict, factor: int = 1, round_: int = 0) -> None:
    """One step on the defense: on every image (the first pass of an un-nested bound) or on those standing for
    its verdicts; its examples count against ReabsNet and the reject policy alike. An escalation round
    (`round_` > 0) attacks what stands now and skips minimal-distance steps."""
    if step.minimal and (norm != step.minimal_norm or round_):
        return
    view = run.target.view(step.network)
    if view is None:
        return
    s = spec(run, step, norm, eps, factor=factor, round_=round_)
    everywhere = step.minimal or not (step.survivors or nested)
    standing = None if everywhere else union(defense_masks(run, ledger, step, bool(round_)), step.verdicts)
    if round_ and not standing.any():
        return          # an escalation round with nothing of this step's left to attack
    if step.minimal:
        x_adv, arrays = minimal_step(run, step, view, eps), None
    else:
        x_adv, arrays = attack(run, *view, s, standing)
    pred, correct, ok = judge(run, ledger, x_adv)
    correct, ok = recheck(run, ledger, result, x_adv, correct, ok)
    if arrays is not None and "success" in arrays:     # the step's own view called it adversarial
        claimed = torch.zeros_like(correct)
        claimed[slice(None) if standing is None else standing.nonzero().squeeze(1)] = arrays["success"].bool()
        ledger.trip("transfer failure", claimed & correct & ok)
    key = step.name if step.minimal else s.key
    if everywhere:
        row = AttackRow(accuracy={"reabsnet": rate(correct & run.columns["reabsnet"]),
                                  "selective": rate(ok & run.columns["selective"])},
                        flagged=rate(pred.flagged))
    else:
        row = AttackRow(attacked=int(standing.sum()),
                        flagged=rate(pred.flagged[standing]) if standing.any() else None)
    broke = {"reabsnet": ledger.strike("reabsnet", ~correct, key), "selective": ledger.strike("selective", ~ok, key)}
    if not everywhere:
        row.broke = broke
    if step.attack == "square":
        for k, v in broke.items():
            square[k] += v
    result.per_attack[key] = row


def recheck(run: Run, ledger: Ledger, result: BoundResult, x_adv: torch.Tensor, correct: torch.Tensor,
            ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples that would break a standing image, judged again in a batch of their own: an image falls only
    where both judgements call it broken. A joint attack stops at the first point the joint logits call
    adversarial, on the guardian's boundary, where another batch's arithmetic can flip the flag; the flips are
    counted per column (`result.rechecked`) and their images marked as unstable predictions."""
    suspect = (ledger.standing["reabsnet"] & ~correct) | (ledger.standing["selective"] & ~ok)
    if not suspect.any():
        return correct, ok
    idx = suspect.nonzero().squeeze(1)
    again = run.target.defense.predict_batches(x_adv[idx])
    right = again.label.to(run.y.device) == run.y[idx]
    agreed = {"reabsnet": correct.clone(), "selective": ok.clone()}
    agreed["reabsnet"][idx] |= right
    agreed["selective"][idx] |= again.flagged.to(right.device) | right
    for column, before in (("reabsnet", correct), ("selective", ok)):
        flipped = agreed[column] & ~before & ledger.standing[column]
        result.rechecked[column] = result.rechecked.get(column, 0) + int(flipped.sum())
        ledger.trip("unstable prediction", flipped)
    return agreed["reabsnet"], agreed["selective"]


def defense_masks(run: Run, ledger: Ledger, step: Step, now: bool = False) -> dict[str, torch.Tensor]:
    """What a defense step chooses its images from: what stood when the bound began (a first-pass step of a
    nested bound) or what stands now (a survivor step, or any step of an escalation round: `now`)."""
    if not (step.survivors or now):
        return ledger.start
    standing = ledger.open_columns()
    if "reject@fpr" not in step.verdicts:
        return standing
    p = run.clean["pipeline"].p_adversarial
    held = ledger.held_fpr(run.calibration, p, run.clean["master"])
    if ledger.active is not None and "selective" not in ledger.active:
        held = torch.zeros_like(held)         # the reject policy converged: no round aims under its thresholds
    return {**standing, "reject@fpr": held}


def minimal_step(run: Run, step: Step, view, eps: float) -> torch.Tensor:
    """A minimal-distance attack (joint CW-L2): one set on the first `budget.n_cw` images for every bound of its
    norm, each example farther than the bound reverting to its original; the other images keep theirs."""
    if step.name not in run.minimal_sets:
        settings = step.resolved(run.setup.budget)      # its fixed settings, with the budget's success margin
        s = AttackSpec(step.name, f"joint {step.title}", step.attack, step.targeted, settings or None)
        n = min(run.setup.budget.n_cw, run.setup.n)
        setup = run.setup
        run.minimal_sets[step.name] = build_sets(setup.sets, setup.splits, *view, setup.out, setup.timings, [s],
                                                 setup.subdir, [n])[s.key]
    arrays, _ = run.minimal_sets[step.name]
    k = len(arrays["y"])
    distance = arrays["l2"] if step.minimal_norm == "l2" else arrays["linf"]
    within = (distance <= eps + 1e-5).view(-1, *[1] * (run.x.dim() - 1))
    x_adv = run.x.clone()
    x_adv[:k] = torch.where(within, arrays["x_adv"], arrays["x"])
    return x_adv


def threshold_step(run: Run, ledger: Ledger, result: BoundResult, step: Step, norm: str, eps: float, label: str,
                   t: float, factor: int = 1, round_: int = 0) -> None:
    """A step aimed under the calibrated threshold t, on the images the reject policy at t still holds (accepted
    and right clean, or rejected clean; and no example so far wrong and under t). Its examples count against
    ReabsNet and the reject policy at 0.5 as well."""
    if ledger.active is not None and "selective" not in ledger.active:
        return          # the reject policy's rates stopped falling: no further round aims under its thresholds
    p_clean = run.clean["pipeline"].p_adversarial
    holds = ((p_clean > t) | run.clean["master"]) & ~broken_at(t, run.y, ledger.seen)
    s = spec(run, step, norm, eps, step.set_stem(fpr=label), factor, round_)
    view = run.target.view(step.network, t)
    if view is None:
        return
    x_adv, _ = attack(run, *view, s, holds)
    pred, correct, ok = judge(run, ledger, x_adv)
    wrong_under_t = (ledger.seen[-1][1] != run.y) & (pred.p_adversarial <= t)
    broke = {f"reject policy at {t:.4g}": int((holds & wrong_under_t).sum())}
    # its examples lie within the bound like any other: where one fools ReabsNet or the reject policy at 0.5, the
    # image falls there too (the headline is the worst case over every example of the bound)
    correct, ok = recheck(run, ledger, result, x_adv, correct, ok)
    for column, label, fine in (("reabsnet", "ReabsNet", correct), ("selective", "reject policy at 0.5", ok)):
        broke[label] = ledger.strike(column, ~fine, s.key)
    result.per_attack[s.key] = AttackRow(attacked=int(holds.sum()), at_threshold=t, broke=broke)


def baseline_step(run: Run, ledger: Ledger, result: BoundResult, step: Step, who: str, norm: str, eps: float,
                  nested: bool, square: dict, factor: int = 1, round_: int = 0) -> None:
    """One step on baseline `who`: on every image (its un-nested first pass) or on those standing for its
    verdicts (an escalation round: those standing now); judged in float32 by the baseline."""
    model, meta = run.target.baseline_view(who, step.network, step.attack_name)
    s = spec(run, step, norm, eps, step.set_stem(baseline=who), factor, round_)
    columns = {"worst": who, "autoattack": f"{who}_autoattack"}
    everywhere = not (step.survivors or nested)
    masks = ledger.start if not (step.survivors or round_) else ledger.open_columns()
    standing = None if everywhere else union({v: masks[c] for v, c in columns.items()}, step.verdicts)
    if round_ and not standing.any():
        return
    x_adv, arrays = attack(run, model, meta, s, standing, baseline=True)
    if everywhere:       # the set's own labels, which its attack judged in float32 on the same images
        wrong = arrays["label"] != run.y
        row = AttackRow(accuracy={who: rate(run.clean[who] & ~wrong)}, guarded=False)
    else:
        wrong = predict_logits(run.target.baselines[who].net, x_adv).argmax(1) != run.y
        row = AttackRow(attacked=int(standing.sum()), broke={who: int((standing & wrong).sum())}, guarded=False)
    fell = {v: ledger.strike(columns[v], wrong, s.key) for v in step.verdicts}
    if step.attack == "square":
        square[who] = square.get(who, 0) + fell.get("worst", 0)
    result.per_attack[s.key] = row
