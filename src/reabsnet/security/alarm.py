"""The masking alarm: evidence, from what an evaluation already measured, that its robust accuracies overstate the
defense because the gradient attacks fail on it rather than because it is robust (Carlini et al. 2019, section 5;
AutoAttack warns likewise when its gradient-free attack beats its gradient ones). Raised where

- a gradient-free step (Square) broke images that every gradient step of the suite left standing;
- an escalation round at the largest budget still broke more than the tolerance (the rate had not stopped falling);
- the binarization test failed: the suite's attacks, all together, missed examples known to exist;
- images still standing tripped an indicator of attack failure (`security.indicators`).

Each piece of evidence names its bound, its verdict column and its counts.
"""

from __future__ import annotations

from reabsnet.rates import bound_label
from reabsnet.security.results import BoundResult

# the verdict columns as the report names them (a baseline column is its own name: "madry", "madry_autoattack")
COLUMN_NAMES = {"reabsnet": "ReabsNet", "selective": "reject policy", "master": "master alone",
                "madry": "Madry-style baseline"}


def column_name(column: str) -> str:
    """A verdict column as the report names it ("madry_autoattack": "Madry-style baseline (AutoAttack)")."""
    who, _, ensemble = column.partition("_")
    name = COLUMN_NAMES.get(column) or COLUMN_NAMES.get(who, who)
    return f"{name} (AutoAttack)" if ensemble == "autoattack" else name


def masking_alarm(results: dict) -> dict:
    """{"raised": bool, "evidence": [one line per finding]} for an adaptive evaluation's results."""
    evidence = []
    for key, b in results["bounds"].items():
        bound, name = BoundResult.from_json(b), bound_label(key)
        for column, k in bound.square_beyond_gradient.items():
            if k:
                evidence.append(f"{name}: Square broke {k} image{'s' * (k != 1)} every gradient step left standing "
                                f"({column_name(column)})")
        for column in ("reabsnet", "selective"):
            tripped = {k: v[column] for k, v in bound.indicators.items() if v.get(column)}
            if tripped:
                evidence.append(f"{name}: images standing for {column_name(column)} tripped indicators of attack "
                                "failure: " + ", ".join(f"{k} {v}" for k, v in tripped.items()))
        if bound.rounds:
            last = bound.rounds[-1]
            for column, since in bound.converged.items():
                if since is None:
                    evidence.append(f"{name}: the {last['factor']}x round still broke {last['broke'][column]} "
                                    f"({column_name(column)}): not converged at the cap")
    for key, test in results.get("binarization", {}).items():
        name = bound_label(key)
        for model, policies in test["tests"].items():
            for policy, record in policies.items():
                worst = record["attacks"]["any attack"]
                if not worst["passes"] and worst["n"]:
                    evidence.append(f"{name}: the binarization test of {model} ({policy}) failed: the attacks found "
                                    f"{worst['success']} of {worst['n']} examples known to exist")
    return {"raised": bool(evidence), "evidence": evidence}
