"""Adaptive attacks on a detect-then-revise defense (Carlini & Wagner 2017, "Adversarial examples are not easily
detected"; Athalye et al. 2018; Tramer et al. 2020): the attacker knows the master, the guardian and the modifier.

Two ways to beat such a pipeline, both built here for any (master, guardian) pair:
- Evade and fool: an input the guardian calls natural (so the modifier never runs) that the master misclassifies.
  `JointLogits` turns the pair into one 11-class network whose extra class "rejected" wins exactly when the
  guardian flags the input; the attacker then wants any label other than the true one and "rejected", which every
  attack here (APGD's losses, CW's targeted margin) can optimise directly.
- Through the modifier: attack the whole pipeline (`ReabsNet.forward`) with the modifier taken as identity on the
  backward pass (BPDA, Athalye et al. 2018), so the revision itself lands in a wrong class.

`apgd` is Auto-PGD (Croce & Hein 2020, auto-attack's apgd-ce / apgd-dlr): PGD with momentum and a step size halved
at checkpoints when progress stalls, no step-size tuning needed. Its `reject` argument names a class that does not
count as a success (JointLogits' "rejected").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from reabsnet.attacks.common import BOX, AttackResult, Box, check_inputs, confirmed_fooled, finish, frozen, validated
from reabsnet.attacks.pgd import _direction, _project, _random_start
from reabsnet.checks import SettingError, check_setting

NATURAL, ADVERSARIAL = 0, 1   # the guardian's classes (as in reabsnet.defense)


class Scaled(nn.Module):
    """A network's logits times a constant: the same labels, a softmax that is not saturated (for cross-entropy
    attacks on a distilled network: scale 1/T)."""

    def __init__(self, model: nn.Module, scale: float):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


class JointLogits(nn.Module):
    """Master logits Z (N classes) plus a "rejected" logit max_j Z_j + (d(x) - log(t / (1 - t))), where d is the
    guardian's log-odds of "adversarial" and t the detection threshold: the argmax is "rejected" (index N) exactly
    when the guardian flags x, and otherwise the master's label. Carlini & Wagner (2017)'s construction G(x),
    shifted so that it does not assume positive logits.

    master_scale multiplies the master's logits (labels unchanged): 1/T undoes a distilled master's temperature,
    whose saturated softmax otherwise zeroes the cross-entropy gradient (Carlini & Wagner 2016)."""

    def __init__(self, master: nn.Module, guardian: nn.Module, threshold: float = 0.5, master_scale: float = 1.0):
        super().__init__()
        check_setting("threshold", threshold, "JointLogits: ")
        self.master, self.guardian = master, guardian
        self.bias = math.log(threshold / (1 - threshold))
        self.master_scale = master_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.outputs(x))

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The master's logits times master_scale, and the guardian's two logits."""
        return self.master(x) * self.master_scale, self.guardian(x)

    def combine(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The joint logits from the master's logits (already times master_scale) and the guardian's two."""
        return torch.cat([z, (z.amax(dim=1) + self._score(g))[:, None]], dim=1)

    def detector_score(self, x: torch.Tensor) -> torch.Tensor:
        """The guardian's log-odds of "adversarial" less the threshold's: positive exactly when it flags x."""
        return self._score(self.guardian(x))

    def _score(self, g: torch.Tensor) -> torch.Tensor:
        return g[:, ADVERSARIAL] - g[:, NATURAL] - self.bias


def _correct_mask(logits: torch.Tensor, y: torch.Tensor, reject: int | None) -> torch.Tensor:
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask.scatter_(1, y[:, None], True)
    if reject is not None:
        mask[:, reject] = True
    return mask


def outcome_loss(logits: torch.Tensor, y: torch.Tensor, kind: str, reject: int | None = None,
                 goal: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example loss the attacker maximises; the "correct" outcomes are y and, if given, `reject`.

    ce: -log P(correct outcome) (cross-entropy of the set). dlr: the difference-of-logits ratio of Croce & Hein
    (2020), -(z_correct - max_other z) / (z_pi1 - z_pi3), invariant to the logits' scale (hence to a distilled
    master's saturated softmax); z_correct is the largest logit of the correct outcomes. dlr-t: the targeted DLR
    of APGD-T toward the class `goal`, -(z_correct - z_goal) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    correct = _correct_mask(logits, y, reject)
    if kind == "dlr-t":
        top = logits.sort(dim=1, descending=True).values
        z_correct = logits.masked_fill(~correct, float("-inf")).amax(dim=1)
        z_goal = logits.gather(1, goal[:, None]).squeeze(1)
        return -(z_correct - z_goal) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)
    if kind == "ce":
        return torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~correct, float("-inf")), dim=1)
    if kind == "dlr":
        # the scale: z_pi1 - z_pi3 with one correct class (Croce & Hein); with a reject class as well, z_pi4, so
        # the ratio does not collapse to -1 (zero gradient) when y and "rejected" hold the top two places
        top = logits.sort(dim=1, descending=True).values
        z_correct = logits.masked_fill(~correct, float("-inf")).amax(dim=1)
        z_other = logits.masked_fill(correct, float("-inf")).amax(dim=1)
        return -(z_correct - z_other) / (top[:, 0] - top[:, 1 + int(correct[0].sum())] + 1e-12)
    raise SettingError(f"loss={kind!r}: must be ce or dlr")


def _checkpoints(steps: int) -> list[int]:
    """APGD's step-size checkpoints in whole steps, as auto-attack computes them: the first after 22% of the
    steps, each later interval 3% shorter than the one before, but at least 6%."""
    first, shortest, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    points, at, span = [0], 0, first
    while at + span <= steps:
        at += span
        points.append(at)
        span = max(span - shrink, shortest)
    return points


@validated
def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
         eps: float = 0.3, norm: str = "linf", loss: str = "dlr", steps: int = 100, restarts: int = 1,
         reject: int | None = None, rho: float = 0.75, momentum: float = 0.75, seed: int = 0, box: Box = BOX,
         margin: float = 0.0, trace: list | None = None) -> AttackResult:
    """Auto-PGD, untargeted, inside the eps-ball (L-inf or L2) and the box. Defaults: auto-attack's (100 steps,
    initial step 2 eps, momentum 0.75, rho 0.75). Success: the label is neither `y` nor `reject`.

    restarts: each from a fresh random start, on the examples no earlier restart has broken. Per example the first
    successful point is kept (with a success `margin` > 0, the first whose wrong label leads by that much in
    logits: the attack goes on past the boundary), else the highest-loss one; an example stops costing compute
    once it is broken (the working set shrinks as they break). `trace`, when a list, receives at every step of the
    first restart the mean over the restart's examples of the gain in loss, best so far minus start (an example
    that broke keeps its gain): the sanity check that the attack's loss goes up.
    """
    check_inputs(x, y, target, box)
    if target is not None:
        raise ValueError("apgd here is untargeted; use apgd_t (targeted DLR toward the top classes) or "
                         "carlini_wagner_l2 for targeted adaptive attacks")
    if loss not in ("ce", "dlr"):   # norm and the numbers: checked by @validated
        raise SettingError(f"apgd: loss={loss!r}: must be ce or dlr")
    with frozen(model):
        best, iterations, _ = _apgd(model, x, y, None, eps=eps, norm=norm, loss=loss, steps=steps,
                                    restarts=restarts, reject=reject, rho=rho, momentum=momentum, seed=seed, box=box,
                                    margin=margin, trace=trace)
        result = finish(model, x, best, y, None, iterations, box, reject=reject)
    return result


@validated
def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
           eps: float = 0.3, norm: str = "linf", steps: int = 100, targets: int = 9, reject: int | None = None,
           rho: float = 0.75, momentum: float = 0.75, seed: int = 0, box: Box = BOX, margin: float = 0.0
           ) -> AttackResult:
    """APGD-T (Croce & Hein 2020, auto-attack's apgd-t): APGD on the targeted DLR loss toward each of the
    `targets` classes the model ranks highest on the clean input after the correct ones (y, `reject`), one run
    per target class on the examples no earlier run has broken. Success is untargeted, as in auto-attack: any
    label other than y (and `reject`); a run stops on an example once it wins by `margin` in logits.
    `iterations` counts the steps spent over all runs."""
    check_inputs(x, y, target, box)
    if target is not None:
        raise SettingError("apgd_t picks its own target classes (the top ones); pass no target")
    _, ranked, targets = top_targets(model, x, y, reject, targets)
    best = x.clone()
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    with frozen(model):
        for rank in range(targets):
            idx = (~broken).nonzero().squeeze(1)
            if not len(idx):
                break
            found, steps_used, hit = _apgd(model, x[idx], y[idx], ranked[idx, rank], eps=eps, norm=norm,
                                           loss="dlr-t", steps=steps, restarts=1, reject=reject, rho=rho,
                                           momentum=momentum, seed=seed + rank, box=box, margin=margin)
            iterations[idx] += steps_used
            keep = hit | (rank == 0)      # the broken ones, and the first run's highest-loss points
            if margin > 0 and not bool(hit.all()):   # a point past the boundary by less than the margin still
                with torch.no_grad():                # breaks the image: never trade it for one that does not
                    wrong = confirmed_fooled(model, found, model(found), y[idx], reject)
                    had = confirmed_fooled(model, best[idx], model(best[idx]), y[idx], reject)
                keep |= wrong & ~had
            best[idx[keep]] = found[keep]
            broken[idx[hit]] = True
        result = finish(model, x, best, y, None, iterations, box, reject=reject)
    return result


def top_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reject: int | None, targets: int
                ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The targeted attacks' classes (auto-attack's): per example the classes ranked by the clean logits, the correct
    ones (y, `reject`) last; returns (the clean logits, that ranking, how many targets there are to try)."""
    with frozen(model), torch.no_grad():
        logits = model(x)
    correct = _correct_mask(logits, y, reject)
    ranked = logits.masked_fill(correct, float("-inf")).argsort(dim=1, descending=True)
    return logits, ranked, min(targets, int((~correct[0]).sum()))


def _apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, goal: torch.Tensor | None, *, eps: float, norm: str,
          loss: str, steps: int, restarts: int, reject: int | None, rho: float, momentum: float, seed: int, box: Box,
          margin: float = 0.0, trace: list | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """APGD's loop (the caller freezes the model): per example the first point that broke it, else the
    highest-loss one; the steps it spent; whether it broke. `goal`: dlr-t's target classes."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    checks = set(_checkpoints(steps)[1:])
    best = x.clone()
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    found_any = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    gain = torch.zeros(len(x), device=x.device)      # per example: best loss so far minus its starting loss
    kept = torch.full((len(x),), float("-inf"), device=x.device)   # the loss of each survivor's kept point

    def project(z: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        return (xs + _project(z - xs, eps, norm)).clamp(*box)

    def loss_grad(xa: torch.Tensor, ys: torch.Tensor, gs: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # one forward and backward: per-example loss, input gradient, and whether the example is already broken
        xa = xa.detach().requires_grad_(True)
        logits = model(xa)
        value = outcome_loss(logits, ys, loss, reject, gs)
        (grad,) = torch.autograd.grad(value.sum(), xa)
        fooled = confirmed_fooled(model, xa, logits, ys, reject, margin)
        return value.detach(), grad.detach(), fooled

    for restart in range(max(1, restarts)):
        idx = (~found_any).nonzero().squeeze(1)      # examples this restart works on, shrinking as they break
        if len(idx) == 0:
            break
        xs, ys = x[idx], y[idx]
        gs = goal[idx] if goal is not None else torch.zeros_like(ys)
        cur = project(xs + _random_start(xs, eps, norm, gen), xs)
        value, grad, done = loss_grad(cur, ys, gs if goal is not None else None)
        s = _working_set(idx, xs, ys, gs, cur, value, grad, eps)
        last_check = 0
        for k in range(steps + 1):
            if done.any():   # record the broken examples and drop them from the working set
                gone = s["idx"][done]
                best[gone] = s["cur"][done]
                found_any[gone] = True
                iterations[gone] += k
                s = {name: v[~done] for name, v in s.items()}
            if k == steps or len(s["idx"]) == 0:
                break
            with torch.no_grad():
                z = _momentum_step(s, k, norm, momentum, project)
            value, grad, done = loss_grad(z, s["ys"], s["gs"] if goal is not None else None)
            with torch.no_grad():
                _accept(s, z, value, grad)
                if trace is not None and restart == 0:
                    gain[s["idx"]] = s["best_value"] - s["start"]
                    trace.append(float(gain[idx].mean()))
                if k + 1 in checks:
                    _halve_stalled(s, rho * (k + 1 - last_check))
                    last_check = k + 1
        with torch.no_grad():   # the survivors of this restart keep their highest-loss point
            if len(s["idx"]):
                # with a margin, an earlier restart's point may already be past the boundary (by less than the
                # margin): a survivor keeps the highest-loss point over all restarts, not the last restart's
                higher = s["best_value"] > kept[s["idx"]] if margin > 0 else slice(None)
                best[s["idx"][higher]] = s["best"][higher]
                kept[s["idx"][higher]] = s["best_value"][higher]
                iterations[s["idx"]] += steps
    return best, iterations, found_any


def _working_set(idx: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, gs: torch.Tensor, cur: torch.Tensor,
                 value: torch.Tensor, grad: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """A restart's state, one row per example still running (every entry is indexed together as examples break):
    the current, previous and best points with their losses and gradients, the step size (2 eps at the start,
    Croce & Hein's rule), and the counts its checkpoints read."""
    eta = torch.full((len(xs),), 2.0 * eps, device=xs.device)
    return {"xs": xs, "ys": ys, "gs": gs, "cur": cur, "prev": cur.clone(), "grad": grad, "value": value,
            "best": cur.clone(), "best_value": value.clone(), "grad_best": grad.clone(), "eta": eta,
            "raised": torch.zeros(len(xs), device=xs.device), "best_at_check": value.clone(),
            "eta_at_check": eta.clone(), "idx": idx, "start": value.clone()}


def _momentum_step(s: dict[str, torch.Tensor], k: int, norm: str, momentum: float,
                   project: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The next point: a step of eta along the gradient's steepest direction, then (after the first step) APGD's
    momentum, each projected onto the ball and the box. Moves `cur` to `prev`."""
    view = (-1, *[1] * (s["cur"].dim() - 1))
    z = project(s["cur"] + s["eta"].view(view) * _direction(s["grad"], norm), s["xs"])
    if k:
        z = project(s["cur"] + momentum * (z - s["cur"]) + (1 - momentum) * (s["cur"] - s["prev"]), s["xs"])
    s["prev"] = s["cur"]
    return z


def _accept(s: dict[str, torch.Tensor], z: torch.Tensor, value: torch.Tensor, grad: torch.Tensor) -> None:
    """Move to `z`, counting whether its loss rose, and keep it as the best point where its loss is the highest."""
    s["raised"] += (value > s["value"]).float()
    s["cur"], s["value"], s["grad"] = z, value, grad
    better = value > s["best_value"]
    for name, src in (("best", z), ("best_value", value), ("grad_best", grad)):
        s[name][better] = src[better]


def _halve_stalled(s: dict[str, torch.Tensor], needed: float) -> None:
    """At a checkpoint: halve the step of each example whose loss rose on fewer than `needed` of the steps since
    the last one, or whose step and best loss both stood still, and restart it from its best point."""
    view = (-1, *[1] * (s["cur"].dim() - 1))
    stalled = (s["raised"] < needed) | ((s["eta"] == s["eta_at_check"]) & (s["best_value"] <= s["best_at_check"]))
    s["eta_at_check"] = s["eta"].clone()
    s["eta"] = torch.where(stalled, s["eta"] / 2, s["eta"])
    # halved: go on from the best point so far, with its gradient
    s["cur"] = torch.where(stalled.view(view), s["best"], s["cur"])
    s["grad"] = torch.where(stalled.view(view), s["grad_best"], s["grad"])
    s["value"] = torch.where(stalled, s["best_value"], s["value"])
    s["raised"].zero_()
    s["best_at_check"] = s["best_value"].clone()
