"""The per-image ledger of one bound: for each verdict column (ReabsNet, the reject policy at 0.5, each baseline
under the worst case and under AutoAttack's standard ensemble) whether the image still stands and which step broke
it, and every defense step's judged examples (the guardian's P(adversarial) and the master's label), from which the
reject policy at each calibrated threshold is read."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from reabsnet.security.thresholds import held_at_thresholds

STANDING = -1     # broken_by for an image no step broke


@dataclass
class Ledger:
    y: torch.Tensor
    standing: dict[str, torch.Tensor]                  # column -> bool per image
    seen: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)      # the set names of the steps, in the order they were judged
    broken_by: dict[str, torch.Tensor] = field(default_factory=dict)   # column -> index into `steps`, or STANDING
    start: dict[str, torch.Tensor] = field(default_factory=dict)       # what stood when the bound began
    # indicators of attack failure (Pintor et al. 2022) per image: indicator -> bool per image (`security.indicators`)
    tripped: dict[str, torch.Tensor] = field(default_factory=dict)
    # during an escalation round, the columns whose rates have not yet stopped falling (None: every column)
    active: set[str] | None = None

    @classmethod
    def open(cls, y: torch.Tensor, clean: dict[str, torch.Tensor], prior: Ledger | None = None,
             held_fpr: torch.Tensor | None = None) -> Ledger:
        """A bound's ledger: each column starts from the clean outcome, or (nested bounds) from what the smaller
        bound of the same norm left standing, with its examples already seen. `held_fpr`: the images the reject
        policy still holds at some calibrated threshold."""
        standing = {k: (v & prior.standing[k] if prior else v).clone() for k, v in clean.items()}
        ledger = cls(y, standing, list(prior.seen) if prior else [], list(prior.steps) if prior else [],
                     {k: (prior.broken_by[k].clone() if prior else torch.full_like(y, STANDING)) for k in clean})
        ledger.start = {k: v.clone() for k, v in standing.items()}
        if held_fpr is not None:
            ledger.start["reject@fpr"] = held_fpr
        return ledger

    def strike(self, column: str, wrong: torch.Tensor, step: str) -> int:
        """Images standing in `column` that are `wrong` under `step`'s examples fall, recorded as broken by it;
        returns how many fell."""
        fell = self.standing[column] & wrong
        if step not in self.steps:
            self.steps.append(step)
        self.broken_by[column][fell] = self.steps.index(step)
        self.standing[column] &= ~wrong
        return int(fell.sum())

    def open_columns(self) -> dict[str, torch.Tensor]:
        """What stands, in the columns still escalating (every column outside escalation): the images a survivor
        step chooses from."""
        if self.active is None:
            return self.standing
        return {k: v if k in self.active else torch.zeros_like(v) for k, v in self.standing.items()}

    def trip(self, indicator: str, where: torch.Tensor) -> None:
        """Mark the images `where` as having tripped `indicator`."""
        self.tripped[indicator] = self.tripped.get(indicator, torch.zeros_like(where)) | where

    def held_fpr(self, calibration: dict | None, p_clean: torch.Tensor, master_clean: torch.Tensor) -> torch.Tensor:
        """The images the reject policy still holds at some calibrated threshold."""
        return held_at_thresholds(calibration, p_clean, master_clean, self.y, self.seen)

    def breaker(self, column: str) -> list[str | None]:
        """Per image, the step that broke it in `column` (None: it stands)."""
        return [None if i == STANDING else self.steps[i] for i in self.broken_by[column].tolist()]
