"""The adaptive security evaluation: the suite as data (`suite`), the engine that runs it with one per-image ledger
per bound (`engine`, `ledger`), the networks it differentiates (`networks`), the detection thresholds
(`thresholds`), the sanity checks and the binarization test, the masking alarm (`alarm`) and the indicators of
attack failure (`indicators`), typed results and the report's section; `api` is the
public entry point (`evaluate_adaptive`) and `reproduce`'s adaptive stage (`evaluate_profile`)."""

from reabsnet.security.alarm import masking_alarm
from reabsnet.security.api import BUDGETS, AdaptiveResult, evaluate, evaluate_adaptive
from reabsnet.security.indicators import INDICATORS
from reabsnet.security.ledger import Ledger
from reabsnet.security.results import AttackRow, BoundResult, Policy
from reabsnet.security.suite import NETWORKS, TUNED, VERDICTS, Budget, Step, Suite

__all__ = ["BUDGETS", "INDICATORS", "NETWORKS", "TUNED", "VERDICTS", "AdaptiveResult", "AttackRow", "BoundResult",
           "Budget", "Ledger", "Policy", "Step", "Suite", "evaluate", "evaluate_adaptive", "masking_alarm"]
