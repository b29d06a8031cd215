"""The adaptive suite as data: one ordered table of steps that the engine runs, the report describes, the command
line lists and a user edits.

A step names the attack (a name of `reabsnet.attacks.ATTACKS`, or any callable with the package's one call shape
`attack(model, x, y, *, target=None, eps, norm, box, **settings) -> AttackResult`), the network view it
differentiates (`NETWORKS`), its budget (attack settings read from a `Budget`, overridable per step), whether it
runs on every image or only on the images still standing for the verdicts it serves (AutoAttack's order), and those
verdicts (`VERDICTS`).

    suite = Suite.standard().only("joint-apgd-ce", "pipeline-square")
    suite = Suite.standard().with_budget("pipeline-square", queries=5000)
    suite = Suite.standard().add(Step("my-attack", my_attack, "joint", ("revise", "reject"), survivors=True))

The standard suite is the Security section's: joint APGD-CE/DLR, BPDA APGD-CE/DLR and unrolled APGD-DLR on every
image, joint CW-L2 under L2 bounds, then on the survivors joint APGD-T, Selective and Orthogonal PGD (Bryniarski et
al. 2022), logit matching (Tramer et al. 2020) and Square on the joint score and on the pipeline; joint APGD-CE and
Orthogonal PGD again at each calibrated detection threshold; and AutoAttack's standard ensemble plus APGD-DLR on
each baseline.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from reabsnet.errors import ReabsnetError

# the attack settings a success margin sets: APGD's, APGD-T's, Square's and logit matching's `margin`, Selective
# and Orthogonal PGD's on the classifier (`margin`) and the detector (`leave_margin`), CW's `confidence`
MARGINS = ("margin", "leave_margin", "confidence")
TUNED_STEPS = 5          # the tuned attack's steps, times the budget's APGD steps
TUNED_THRESHOLD = 0.12   # ... and the guardian threshold it aims under (log-odds margin 2 below the usual 0.5)


@dataclass(frozen=True)
class Budget:
    """The suite's attack budgets. Defaults: auto-attack's standard version (APGD 100 steps, 3 restarts; APGD-T and
    FAB-T toward the 9 top other classes; Square 5,000 queries)."""

    steps: int = 100                 # APGD steps (auto-attack's default)
    restarts: int = 3                # APGD restarts, each on the images no earlier one broke
    targets: int = 9                 # APGD-T's and FAB-T's target classes
    queries: int = 5000              # Square's queries per image
    pipeline_queries: int = 5000     # ... against the pipeline's output, where each query runs the modifier
    n_cw: int = 200                  # joint CW-L2 (the slowest attack) on the first N images only
    # a success margin in logits: every step that can (`MARGINS`) goes on past the boundary until the label it
    # wants leads by this much. 0: each attack's own rule, and every set keeps its key
    success_margin: float = 0.0

    @property
    def tuned_steps(self) -> int:
        return TUNED_STEPS * self.steps


# the verdicts a step can serve: ReabsNet (revise flagged inputs), the reject policy at the paper's 0.5 and at each
# calibrated threshold, and a baseline classifier under the worst case or AutoAttack's standard ensemble alone
VERDICTS = {
    "revise": "ReabsNet: the pipeline's label is right",
    "reject": "the reject policy at 0.5: rejected or right",
    "reject@fpr": "the reject policy at each calibrated threshold",
    "worst": "a baseline: right under every baseline step",
    "autoattack": "a baseline: right under AutoAttack's standard ensemble",
}

# the network views a step can differentiate (security.networks builds them); "-ce" views divide the master's
# logits by its distillation temperature, where cross-entropy has gradients
NETWORKS = {
    "joint": "master and guardian as one network (class N: rejected)",
    "joint-ce": "the joint network, the master's logits / T",
    "joint-tuned": f"the joint network with the guardian's threshold at {TUNED_THRESHOLD}",
    "joint-guided": "the joint network / T, matched to natural validation images",
    "joint@fpr": "the joint network / T with the guardian's threshold at a calibrated one",
    "joint-guided@fpr": "the joint network / T at a calibrated threshold, matched to natural validation images",
    "bpda": "the pipeline, the modifier as identity on the backward pass",
    "bpda-ce": "the BPDA pipeline, the master's logits / T",
    "bpda-pair": "the BPDA pipeline / T as classifier and the guardian as detector",
    "unrolled": "the pipeline through the modifier's DeepFool steps unrolled",
    "unrolled-pair": "the unrolled pipeline / T as classifier and the guardian as detector",
    "pipeline": "the pipeline's output, the modifier included",
    "baseline": "each baseline (the master alone, the Madry-style network)",
    "baseline-ce": "each baseline, the master's logits / T",
}
# views whose output has the rejected class: their attacks take `reject`
REJECTING = ("joint", "joint-ce", "joint-tuned", "joint-guided", "joint@fpr", "joint-guided@fpr", "bpda-pair",
             "unrolled-pair")
BASELINE_VIEWS = ("baseline", "baseline-ce")


@dataclass(frozen=True)
class Step:
    """One attack of the suite. `name` is also the stem of its attack set's file name (`<name>-linf-0.10.npz`)
    unless `stem` says otherwise: a baseline step's `{baseline}` and a threshold step's `{fpr}` are filled in per
    baseline and per calibrated threshold."""

    name: str
    attack: str | Callable
    network: str
    verdicts: tuple[str, ...]
    survivors: bool = False          # only on the images still standing for `verdicts` (AutoAttack's order)
    budget: dict = field(default_factory=dict)      # attack setting -> the Budget field it reads
    settings: dict = field(default_factory=dict)    # fixed settings; override the budget
    title: str = ""
    minimal: bool = False            # a minimal-distance attack: one set per norm, cut at each bound
    targeted: bool = False           # at a random other class (the sets' target seed)
    stem: str = ""                   # the set names' stem, where it is not `name`

    def set_stem(self, **fill) -> str:
        return (self.stem or self.name).format(**fill)

    def resolved(self, budget: Budget, factor: int = 1, round_: int = 0) -> dict:
        """The step's attack settings under `budget` (without the bound, which the engine adds); escalated
        `factor` times in escalation round `round_` (1, 2, ...): the restarts, else the queries, else the steps
        scaled, logit matching's candidate guides too, and random starts drawn from the round's seed."""
        out = {**{k: getattr(budget, f) for k, f in self.budget.items()}, **self.margin(budget), **self.settings}
        if factor == 1:
            return out
        scaled = next((k for k in ("restarts", "queries", "steps") if k in out), None)
        if scaled is not None:
            out[scaled] *= factor
        params = self.parameters()
        if "candidates" in params:
            out["candidates"] = out.get("candidates", params["candidates"].default) * factor
        if "seed" in params:
            out["seed"] = round_
        return out

    def margin(self, budget: Budget) -> dict:
        """The settings that carry the budget's success margin into this step's attack (none at 0, where the
        attack has no such setting, or where its own default is at least as large)."""
        m = budget.success_margin
        if not m:
            return {}
        params = self.parameters()
        return {name: m for name in MARGINS if name in params and m > params[name].default}

    def parameters(self) -> dict:
        """The attack function's parameters (what the step's settings may name)."""
        from reabsnet.attacks import ATTACKS

        fn = ATTACKS[self.attack] if isinstance(self.attack, str) else self.attack
        return dict(inspect.signature(inspect.unwrap(fn)).parameters)

    @property
    def attack_name(self) -> str:
        return self.attack if isinstance(self.attack, str) else getattr(self.attack, "__name__", "custom")

    @property
    def defense(self) -> bool:
        return self.network not in BASELINE_VIEWS

    @property
    def at_threshold(self) -> bool:
        """Aimed under each calibrated threshold in turn (the reject policy there alone)."""
        return self.verdicts == ("reject@fpr",)

    @property
    def minimal_norm(self) -> str:
        """The norm a minimal-distance attack minimises (its sets serve the bounds of that norm only)."""
        return "l2" if "l2" in self.attack_name else "linf"


APGD = {"steps": "steps", "restarts": "restarts"}
TARGETED = {"steps": "steps", "targets": "targets"}
STEPS = {"steps": "steps"}
BOTH, REVISE = ("revise", "reject"), ("revise",)


# an attack tuned to a guardian trained against joint PGD: joint APGD-DLR with TUNED_STEPS times the steps, aiming
# under TUNED_THRESHOLD (a point found there stays unflagged when the guardian's score moves a little); the
# hardening experiment adds it after joint APGD-T
TUNED = Step("tuned-apgd", "apgd", "joint-tuned", BOTH, survivors=True, budget={"steps": "tuned_steps"},
             settings={"loss": "dlr", "restarts": 1}, title=f"APGD-DLR x{TUNED_STEPS} steps")


def aimed_at_thresholds(name: str, attack: str, title: str, budget: dict, network: str = "joint@fpr",
                        **settings) -> Step:
    """A step aimed under each calibrated threshold in turn, on the images the reject policy still holds there."""
    return Step(name, attack, network, ("reject@fpr",), survivors=True, budget=budget, settings=settings, title=title,
                stem=name.replace("joint-fpr-", "joint-fpr{fpr}-"))


# the rest of the defense's joint steps re-aimed under each calibrated threshold: not in the standard suite (the
# standard one re-aims APGD-CE and Orthogonal PGD); `adaptive.suite=+joint-fpr-apgd-dlr,...` adds them
MORE_AT_THRESHOLDS = (
    aimed_at_thresholds("joint-fpr-apgd-dlr", "apgd", "APGD-DLR", APGD, loss="dlr"),
    aimed_at_thresholds("joint-fpr-apgd-t", "apgd-t", "APGD-T", TARGETED),
    aimed_at_thresholds("joint-fpr-selective-pgd", "selective-pgd", "Selective PGD", STEPS),
    aimed_at_thresholds("joint-fpr-logit-matching", "logit-matching", "logit matching", STEPS,
                        network="joint-guided@fpr"),
    aimed_at_thresholds("joint-fpr-square", "square", "Square", {"queries": "queries"}),
)


def _standard() -> tuple[Step, ...]:
    return (
        Step("joint-apgd-ce", "apgd", "joint-ce", (*BOTH, "reject@fpr"), budget=APGD, settings={"loss": "ce"},
             title="APGD-CE"),
        Step("joint-apgd-dlr", "apgd", "joint", (*BOTH, "reject@fpr"), budget=APGD, settings={"loss": "dlr"},
             title="APGD-DLR"),
        Step("bpda-apgd-ce", "apgd", "bpda-ce", REVISE, budget=APGD, settings={"loss": "ce"}, title="APGD-CE"),
        Step("bpda-apgd-dlr", "apgd", "bpda", REVISE, budget=APGD, settings={"loss": "dlr"}, title="APGD-DLR"),
        Step("unrolled-apgd-dlr", "apgd", "unrolled", REVISE, budget=APGD, settings={"loss": "dlr"},
             title="APGD-DLR"),
        Step("joint-cw-l2-t", "cw-l2", "joint", BOTH, title="CW-L2 targeted", minimal=True,
             targeted=True),
        Step("joint-apgd-t", "apgd-t", "joint", BOTH, survivors=True, budget=TARGETED, title="APGD-T"),
        Step("joint-selective-pgd", "selective-pgd", "joint-ce", BOTH, survivors=True, budget=STEPS,
             title="Selective PGD"),
        Step("joint-orthogonal-pgd", "orthogonal-pgd", "joint-ce", BOTH, survivors=True, budget=STEPS,
             title="Orthogonal PGD"),
        Step("bpda-orthogonal-pgd", "orthogonal-pgd", "bpda-pair", REVISE, survivors=True, budget=STEPS,
             title="Orthogonal PGD"),
        Step("unrolled-orthogonal-pgd", "orthogonal-pgd", "unrolled-pair", REVISE, survivors=True, budget=STEPS,
             title="Orthogonal PGD"),
        Step("joint-logit-matching", "logit-matching", "joint-guided", BOTH, survivors=True, budget=STEPS,
             title="logit matching"),
        Step("joint-square", "square", "joint", BOTH, survivors=True, budget={"queries": "queries"}, title="Square"),
        Step("pipeline-square", "square", "pipeline", REVISE, survivors=True, budget={"queries": "pipeline_queries"},
             title="Square"),
        # aimed under each calibrated threshold, on the images the reject policy still holds there
        Step("joint-fpr-apgd", "apgd", "joint@fpr", ("reject@fpr",), survivors=True, budget=APGD,
             settings={"loss": "ce"}, title="APGD-CE", stem="joint-fpr{fpr}-apgd"),
        Step("joint-fpr-orthogonal-pgd", "orthogonal-pgd", "joint@fpr", ("reject@fpr",), survivors=True,
             budget=STEPS, title="Orthogonal PGD", stem="joint-fpr{fpr}-orthogonal-pgd"),
        # each baseline: AutoAttack's standard ensemble (APGD-CE, then APGD-T, FAB-T and Square on its survivors)
        # and APGD-DLR on every image
        Step("baseline-apgd-ce", "apgd", "baseline-ce", ("worst", "autoattack"), budget=APGD,
             settings={"loss": "ce"}, title="APGD-CE", stem="{baseline}-apgd-ce"),
        Step("baseline-apgd-dlr", "apgd", "baseline", ("worst",), budget=APGD, settings={"loss": "dlr"},
             title="APGD-DLR", stem="{baseline}-apgd-dlr"),
        Step("baseline-apgd-t", "apgd-t", "baseline", ("worst", "autoattack"), survivors=True, budget=TARGETED,
             title="APGD-T", stem="{baseline}-apgd-t"),
        Step("baseline-fab-t", "fab-t", "baseline", ("worst", "autoattack"), survivors=True, budget=TARGETED,
             title="FAB-T", stem="{baseline}-fab-t"),
        Step("baseline-square", "square", "baseline", ("worst", "autoattack"), survivors=True,
             budget={"queries": "queries"}, title="Square", stem="{baseline}-square"),
    )


@dataclass(frozen=True)
class Suite:
    """An ordered tuple of steps. Immutable: `only`, `without`, `add` and `with_budget` return a new suite."""

    steps: tuple[Step, ...]

    @classmethod
    def standard(cls) -> Suite:
        """The Security section's suite, step for step (the tuned step runs only where the evaluation asks)."""
        return cls(_standard())

    @classmethod
    def catalog(cls) -> Suite:
        """Every step a name can pick: the standard suite, the tuned step, the steps re-aimed at thresholds."""
        suite = cls.standard().add(TUNED, after="joint-apgd-t")
        for step in reversed(MORE_AT_THRESHOLDS):
            suite = suite.add(step, after="joint-fpr-orthogonal-pgd")
        return suite

    @classmethod
    def named(cls, names) -> Suite:
        """The steps named, of the catalog (`catalog`), in suite order; names that all start with "+" add those
        steps to the standard suite ("+joint-fpr-square"). An unknown name is refused in one line listing the
        known ones."""
        names = list(names)
        if names and all(n.startswith("+") for n in names):
            names = cls.standard().names + [n[1:] for n in names]
        return cls.catalog().only(names)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def __iter__(self):
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def _known(self, names) -> list[str]:
        names = [n for item in names for n in ([item] if isinstance(item, str) else item)]
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise ReabsnetError(f"unknown suite step {unknown[0]!r}; the steps: {', '.join(self.names)}")
        return names

    def only(self, *names) -> Suite:
        """The steps named (strings or lists of them), in the suite's order."""
        keep = set(self._known(names))
        return Suite(tuple(s for s in self.steps if s.name in keep))

    def without(self, *names) -> Suite:
        drop = set(self._known(names))
        return Suite(tuple(s for s in self.steps if s.name not in drop))

    def add(self, step: Step, after: str | None = None) -> Suite:
        """`step` appended (or placed after the step named `after`)."""
        if step.name in self.names:
            raise ReabsnetError(f"suite step {step.name!r} is already in the suite")
        if step.network not in NETWORKS:
            raise ReabsnetError(f"suite step {step.name!r}: unknown network {step.network!r}; choose one of: "
                                f"{', '.join(NETWORKS)}")
        if not step.verdicts or any(v not in VERDICTS for v in step.verdicts):
            raise ReabsnetError(f"suite step {step.name!r}: verdicts {step.verdicts}; choose from: "
                                f"{', '.join(VERDICTS)}")
        at = len(self.steps) if after is None else self._known([after]) and self.names.index(after) + 1
        return Suite(self.steps[:at] + (step,) + self.steps[at:])

    def with_budget(self, name: str, **settings) -> Suite:
        """The step `name` with these attack settings fixed (e.g. queries=5000), over the budget's."""
        self._known([name])
        return Suite(tuple(dataclasses.replace(s, settings={**s.settings, **settings}) if s.name == name else s
                           for s in self.steps))

    def lines(self, budget: Budget | None = None) -> list[str]:
        """The steps in order, each with its network, budget and verdicts (`reabsnet suite`)."""
        budget = budget or Budget()
        rows = []
        for i, s in enumerate(self.steps, 1):
            settings = ", ".join(f"{k}={v}" for k, v in s.resolved(budget).items()) or "the preset's"
            where = "survivors" if s.survivors else ("every image, one set cut at each bound" if s.minimal
                                                     else "every image")
            rows.append(f"{i:2d}. {s.name:30s} {s.attack_name:15s} on {s.network:13s} {where:10s} "
                        f"[{settings}] -> {', '.join(s.verdicts)}")
        return rows


def parse_names(text: str) -> list[str]:
    """A comma-separated list of step names ("" -> none)."""
    return [n.strip() for n in text.split(",") if n.strip()]
