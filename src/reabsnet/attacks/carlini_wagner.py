"""Carlini & Wagner 2017 ("Towards evaluating the robustness of neural networks"): the L2 and L-infinity attacks,
batched. Defaults are those of the authors' l2_attack.py and li_attack.py (repository carlini/nn_robust_attacks).

Both optimise in tanh space, x' = tanh(w) * half_width + centre, so x' stays in the box without clipping, with
Adam on loss = c * f(x') + distance, where f is the logit margin clipped at -kappa:
  targeted   f = max(max_{i != t} Z_i - Z_t, -kappa)
  untargeted f = max(Z_y - max_{i != y} Z_i, -kappa)
The reference runs a batch under one abort-early rule (L2) or one image at a time (L-inf); here every example
carries its own constant, tau, Adam step and stopping state, and the batch is compacted to the examples still
running, so finished examples stop costing compute.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.attacks.common import BOX, AttackResult, Box, check_inputs, finish, frozen, margin, validated


class _Adam:
    """Adam over a batch whose rows can be dropped (the state is indexed with them). Matches TF1's AdamOptimizer,
    which the reference code uses: lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t), w -= lr_t * m / (sqrt(v) + eps)."""

    def __init__(self, w: torch.Tensor, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.m, self.v, self.t = torch.zeros_like(w), torch.zeros_like(w), 0
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps

    def step(self, w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        self.t += 1
        self.m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        lr_t = self.lr * (1 - self.b2 ** self.t) ** 0.5 / (1 - self.b1 ** self.t)
        return w - lr_t * self.m / (self.v.sqrt() + self.eps)

    def keep(self, rows: torch.Tensor) -> None:
        self.m, self.v = self.m[rows], self.v[rows]


def _to_tanh_space(x: torch.Tensor, box: Box) -> tuple[torch.Tensor, float, float]:
    half, centre = (box[1] - box[0]) / 2, (box[1] + box[0]) / 2
    # l2_attack.py: arctanh((x - centre) / half * 0.999999) keeps the box corners finite
    return torch.atanh(((x - centre) / half).clamp(-1, 1) * 0.999999), half, centre


def _succeeded(m: torch.Tensor, confidence: float) -> torch.Tensor:
    # l2_attack.py `compare`: the label, after moving the target logit by kappa, is adversarial
    return m + confidence < 0


@validated
def carlini_wagner_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
                      confidence: float = 0.0,          # l2_attack.py CONFIDENCE (kappa) = 0
                      learning_rate: float = 1e-2,      # LEARNING_RATE = 1e-2
                      binary_search_steps: int = 9,     # BINARY_SEARCH_STEPS = 9
                      max_iterations: int = 10000,      # MAX_ITERATIONS = 10000
                      abort_early: bool = True,         # ABORT_EARLY = True
                      initial_const: float = 1e-3,      # INITIAL_CONST = 1e-3
                      box: Box = BOX) -> AttackResult:
    """CW-L2: minimise ||x' - x||_2^2 + c * f(x'), binary-searching c per example with the reference rule (halve
    the bracket after a success or a failure, multiply c by 10 while no success has bracketed it); keep the
    smallest adversarial x' seen. Abort-early per example: every max_iterations/10 steps an example whose loss
    has not fallen below 0.9999 of its last check stops (the reference stops the whole batch on its sum)."""
    check_inputs(x, y, target, box)
    n, view = len(x), (-1, *[1] * (x.dim() - 1))
    w0, half, centre = _to_tanh_space(x, box)
    x_base = torch.tanh(w0) * half + centre           # the reference measures distance from tanh(arctanh(x))
    lower = torch.zeros(n, device=x.device)
    upper = torch.full((n,), 1e10, device=x.device)
    const = torch.full((n,), initial_const, device=x.device)
    best_l2 = torch.full((n,), float("inf"), device=x.device)
    best_adv = x.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    check_every = max(1, max_iterations // 10)
    with frozen(model):
        for search in range(binary_search_steps):
            if binary_search_steps >= 10 and search == binary_search_steps - 1:
                const = torch.where(upper < 1e9, upper, const)   # reference: the last step repeats the upper bound
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            idx = torch.arange(n, device=x.device)
            w = torch.zeros_like(x)
            adam = _Adam(w, learning_rate)
            prev = torch.full((n,), float("inf"), device=x.device)
            for it in range(max_iterations):
                w.requires_grad_(True)
                x_new = torch.tanh(w + w0[idx]) * half + centre
                logits = model(x_new)
                m = margin(logits, y[idx], target[idx] if target is not None else None)
                l2 = (x_new - x_base[idx]).pow(2).flatten(1).sum(1)
                loss = const[idx] * (m + confidence).clamp_min(0) + l2
                (grad,) = torch.autograd.grad(loss.sum(), w)
                with torch.no_grad():
                    hit = _succeeded(m, confidence)
                    better = hit & (l2 < best_l2[idx])
                    best_l2[idx] = torch.where(better, l2, best_l2[idx])
                    best_adv[idx] = torch.where(better.view(view), x_new, best_adv[idx])
                    found[idx] |= hit
                    iterations[idx] += 1
                    w = adam.step(w.detach(), grad)
                    if abort_early and it % check_every == 0:   # the only host sync, once per tenth of the run
                        stalled = loss > prev[idx] * 0.9999
                        prev[idx] = loss
                        if stalled.any():
                            keep = (~stalled).nonzero().squeeze(1)
                            if len(keep) == 0:
                                break
                            idx, w = idx[keep], w[keep]
                            adam.keep(keep)
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(upper < 1e9, (lower + upper) / 2, torch.where(found, const, const * 10))
        return finish(model, x, best_adv, y, target, iterations, box)


@validated
def carlini_wagner_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
                        confidence: float = 0.0,        # li_attack.py: no confidence margin
                        learning_rate: float = 5e-3,    # LEARNING_RATE = 5e-3
                        max_iterations: int = 1000,     # MAX_ITERATIONS = 1000 per constant
                        initial_const: float = 1e-5,    # INITIAL_CONST = 1e-5
                        largest_const: float = 2e1,     # LARGEST_CONST = 2e+1
                        const_factor: float = 2.0,      # CONST_FACTOR = 2.0
                        decrease_factor: float = 0.9,   # DECREASE_FACTOR = 0.9
                        box: Box = BOX) -> AttackResult:
    """CW-L-infinity (paper eq. 4): minimise c * f(x') + sum_i (|x'_i - x_i| - tau)^+ for a shrinking tau.

    Per example, as li_attack.py does per image: start with tau = 1; each round warm-starts from the last success
    and runs Adam; the round succeeds once the loss falls below 1e-4 * c (f satisfied and every pixel within tau),
    and after max_iterations steps without success c doubles, up to `largest_const`. After a success tau becomes
    min(tau, the achieved L-inf distance) * 0.9 and the next round starts; the first failed round, or tau below
    1/256, ends the example with its last success. Every example runs in the same batch with its own tau and c.
    """
    check_inputs(x, y, target, box)
    n, view = len(x), (-1, *[1] * (x.dim() - 1))
    w_x, half, centre = _to_tanh_space(x, box)
    x_base = torch.tanh(w_x) * half + centre
    tau = torch.ones(n, device=x.device)
    const = torch.full((n,), initial_const, device=x.device)
    prev = x.clone()                                   # the last successful image (the reference's `prev`)
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    running = torch.ones(n, dtype=torch.bool, device=x.device)
    with frozen(model):
        while running.any():
            idx = running.nonzero().squeeze(1)
            # one round (li_attack.py `doit`) for every running example at once
            w = _to_tanh_space(prev[idx], box)[0]
            adam = _Adam(w, learning_rate)
            steps_at_const = torch.zeros(len(idx), dtype=torch.long, device=x.device)
            won = torch.zeros(n, dtype=torch.bool, device=x.device)
            found = prev.clone()
            while len(idx):
                w.requires_grad_(True)
                x_new = torch.tanh(w) * half + centre
                logits = model(x_new)
                m = margin(logits, y[idx], target[idx] if target is not None else None)
                over = ((x_new - x_base[idx]).abs() - tau[idx].view(view)).clamp_min(0).flatten(1).sum(1)
                loss = const[idx] * (m + confidence).clamp_min(0) + over
                (grad,) = torch.autograd.grad(loss.sum(), w)
                with torch.no_grad():
                    # li_attack.py checks the loss before the update and, on success, keeps the pre-update image
                    ok = loss < 1e-4 * const[idx]
                    found[idx] = torch.where(ok.view(view), x_new, found[idx])
                    won[idx] |= ok
                    iterations[idx] += 1
                    steps_at_const += 1
                    w = adam.step(w.detach(), grad)
                    spent = ~ok & (steps_at_const >= max_iterations)
                    const[idx] = torch.where(spent, const[idx] * const_factor, const[idx])
                    steps_at_const[spent] = 0
                    gave_up = spent & (const[idx] >= largest_const)
                    stop = ok | gave_up
                    if stop.any():
                        keep = (~stop).nonzero().squeeze(1)
                        idx, w, steps_at_const = idx[keep], w[keep], steps_at_const[keep]
                        adam.keep(keep)
            # after the round: winners shrink tau and warm-start from their new image; losers are finished
            achieved = (found - x).flatten(1).abs().amax(1)
            tau = torch.where(won, torch.minimum(tau, achieved) * decrease_factor, tau)
            prev = torch.where(won.view(view), found, prev)
            running &= won & (tau > 1 / 256)
        return finish(model, x, prev, y, target, iterations, box)
