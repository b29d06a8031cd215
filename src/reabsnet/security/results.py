"""Typed results of the adaptive suite: a policy, an attack's row and a bound's result. JSON is what they serialise
to (results.json, the committed reports), not what the code passes around; `from_json` reads the committed files.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Policy:
    """What a defended model does with a flagged input: "revise" (ReabsNet), "reject" (at `threshold`; acceptable
    when rejected or right), or "classifier" (no guardian)."""

    kind: str
    threshold: float | None = None

    @property
    def column(self) -> str:
        """The policy's column in results.json (names kept from the first reports)."""
        return {"revise": "reabsnet", "reject": "selective", "classifier": "master"}[self.kind]


REVISE, REJECT, CLASSIFIER = Policy("revise"), Policy("reject", 0.5), Policy("classifier")
POLICIES = {"revise": REVISE, "reject": REJECT, "classifier": CLASSIFIER}


@dataclass
class AttackRow:
    """One attack set's row. On every image: the accuracy per verdict column; on the images still standing:
    how many it attacked and broke per column. `flagged`: the guardian's flag rate on its examples (defense steps
    only); `at_threshold`: the calibrated threshold a threshold step aimed under."""

    accuracy: dict = field(default_factory=dict)     # column -> rate (every-image rows)
    attacked: int | None = None                      # images attacked (survivor rows)
    broke: dict = field(default_factory=dict)        # column -> images it broke (survivor rows)
    flagged: dict | None = None
    guarded: bool = True                             # a defense step: its rows carry `flagged`
    at_threshold: float | None = None

    def to_json(self) -> dict:
        if self.attacked is None:
            return {**self.accuracy, **({"flagged": self.flagged} if self.guarded else {})}
        if self.at_threshold is not None:
            return {"attacked": self.attacked, "at_threshold": self.at_threshold, "broke": self.broke}
        return {"attacked": self.attacked, "broke": self.broke, **({"flagged": self.flagged} if self.guarded else {})}

    @classmethod
    def from_json(cls, d: dict) -> AttackRow:
        if "attacked" not in d:
            return cls(accuracy={k: v for k, v in d.items() if k != "flagged"}, flagged=d.get("flagged"),
                       guarded="flagged" in d)
        return cls(attacked=d["attacked"], broke=d["broke"], flagged=d.get("flagged"),
                   guarded="flagged" in d or "at_threshold" in d, at_threshold=d.get("at_threshold"))

    def cell(self) -> dict | None:
        """An every-image row's accuracy on the network it targets (the defense's, else the baseline's)."""
        return self.accuracy.get("reabsnet") or next(iter(self.accuracy.values()), None)


@dataclass
class BoundResult:
    """One bound's result: robust accuracy per verdict column (worst case per image over the suite), the reject
    policy at each threshold, the per-attack rows and the images Square broke that every gradient attack left."""

    norm: str
    eps: float
    robust: dict = field(default_factory=dict)       # column -> rate ("reabsnet", "selective", "master", ...)
    fixed_fpr: dict | None = None
    per_attack: dict[str, AttackRow] = field(default_factory=dict)
    square_beyond_gradient: dict = field(default_factory=dict)
    # escalation (empty when off): each round's factor, rates per column and what it broke; per column the factor
    # from which every later round broke at most the tolerance (None: the last round still broke more)
    rounds: list = field(default_factory=list)
    converged: dict = field(default_factory=dict)
    # verdicts the re-check in a batch of its own reversed, per column; and per indicator of attack failure, the
    # images still standing per column that tripped it (`security.indicators`)
    rechecked: dict = field(default_factory=dict)
    indicators: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.norm} {self.eps:g}"

    def to_json(self) -> dict:
        defense = {k: self.robust[k] for k in ("reabsnet", "selective") if k in self.robust}
        rest = {k: v for k, v in self.robust.items() if k not in defense}
        return {"norm": self.norm, "eps": self.eps, **defense,
                **({"fixed_fpr": self.fixed_fpr} if self.fixed_fpr is not None else {}), **rest,
                "per_attack": {k: r.to_json() for k, r in self.per_attack.items()},
                "square_beyond_gradient": self.square_beyond_gradient,
                **({"escalation": {"rounds": self.rounds, "converged": self.converged}} if self.rounds else {}),
                **({"rechecked": self.rechecked} if self.rechecked else {}),
                **({"indicators": self.indicators} if self.indicators else {})}

    @classmethod
    def from_json(cls, d: dict) -> BoundResult:
        fixed = {"norm", "eps", "fixed_fpr", "per_attack", "square_beyond_gradient", "escalation", "rechecked",
                 "indicators"}
        escalation = d.get("escalation", {})
        return cls(d["norm"], d["eps"], {k: v for k, v in d.items() if k not in fixed}, d.get("fixed_fpr"),
                   {k: AttackRow.from_json(r) for k, r in d["per_attack"].items()},
                   d.get("square_beyond_gradient", {}), escalation.get("rounds", []), escalation.get("converged", {}),
                   d.get("rechecked", {}), d.get("indicators", {}))
