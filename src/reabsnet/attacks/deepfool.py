"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016), batched, and its two-class step for the modifier.

Each iteration linearises the classifier at the current point and steps to the nearest linearised decision
boundary among the candidate classes; steps accumulate in r_tot and the point is x + (1 + overshoot) * r_tot.
Examples that have crossed stop costing compute: each iteration judges the batch without a graph, compacts it to
the still-robust examples, and spends one forward and K backward passes (the candidate margins' gradients) on those.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from reabsnet.attacks.common import BOX, AttackResult, Box, check_inputs, finish, frozen, validated


def margin_gradients(model: nn.Module, x: torch.Tensor, label: torch.Tensor,
                     candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The margins f_k = Z_k - Z_label of the `candidates` classes (N, K) at `x` and their input gradients w_k,
    shape (K, N, ...): one forward pass, then K backward passes through the retained graph.

    Differentiating the margins directly costs K backward passes where the classes' own gradients cost K + 1.
    Measured on the master (CPU, 500 images, 10 classes): K backward passes of one graph 1.1 s, against 2.0 s for
    one vmapped backward (`is_grads_batched`) and 2.1 s for a forward and backward of the batch replicated K times.
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    f = logits.gather(1, candidates) - logits.gather(1, label[:, None])
    k = candidates.shape[1]
    grads = torch.stack([torch.autograd.grad(f[:, j].sum(), x, retain_graph=j < k - 1)[0] for j in range(k)])
    return f.detach(), grads


@validated
def deepfool(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
             overshoot: float = 0.02, max_iter: int = 50, candidates: int = 10, box: Box = BOX) -> AttackResult:
    """Multi-class DeepFool away from the label `y` (or, with `target`, toward that class only).

    Defaults from the paper and the authors' deepfool.py: overshoot 0.02, at most 50 iterations, the top-10
    classes of the original logits as candidates (all of MNIST's). Outputs are clipped to the box. An example
    the model already misclassifies is returned unchanged after 0 iterations.
    """
    check_inputs(x, y, target, box)
    r_tot = torch.zeros_like(x)
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    with frozen(model):
        with torch.no_grad():
            logits0 = model(x)
        n_classes = logits0.shape[1]
        if target is None:
            k = min(candidates, n_classes)
            # candidate classes: the top-k of the original logits other than the label (deepfool.py uses top-k)
            order = logits0.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
            cand = order[:, :k - 1]
        else:
            cand = target[:, None]
        idx = torch.arange(len(x), device=x.device)  # examples still running
        logits = logits0
        for _ in range(max_iter + 1):
            with torch.no_grad():
                # judge first, without a graph: the K backward passes are spent on the examples still running only
                label = logits.argmax(1)
                running = (label == y[idx]) if target is None else (label != target[idx])
                running &= iterations[idx] < max_iter
                if not running.any():
                    break
                idx = idx[running]
            xa = (x[idx] + (1 + overshoot) * r_tot[idx]).clamp(*box)
            f, grads = margin_gradients(model, xa, y[idx], cand[idx])
            with torch.no_grad():
                w = grads.flatten(2)                                                 # (K-1, n, D)
                w_norm = w.norm(dim=2).t().clamp_min(1e-12)                          # (n, K-1)
                dist = f.abs() / w_norm
                best = dist.argmin(dim=1)
                pick = torch.arange(len(idx), device=x.device)
                w_best = w.permute(1, 0, 2)[pick, best]                               # (n, D)
                # deepfool.py: r_i = (pert + 1e-4) * w / ||w||, pert = |f| / ||w||, accumulated
                step = (dist[pick, best] + 1e-4) / w_norm[pick, best]
                r_tot[idx] += (step[:, None] * w_best).view_as(x[idx])
                iterations[idx] += 1
                logits = model((x[idx] + (1 + overshoot) * r_tot[idx]).clamp(*box))
        x_adv = x + (1 + overshoot) * r_tot
        return finish(model, x, x_adv, y, target, iterations, box)


@validated
def deepfool_binary(model: nn.Module, x: torch.Tensor, *, side: int = 0, threshold: float = 0.5,
                    overshoot: float = 0.02, max_iter: int = 50, box_aware: bool = True, box: Box = BOX,
                    norm: str = "l2") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two-class DeepFool: move each input of a two-output classifier until softmax(logits)[side] >= threshold.

    The boundary is g(x) = Z_other - Z_side + log(threshold / (1 - threshold)) = 0; each step goes to the
    linearised boundary, r_i = -(|g| + 1e-4) * grad g / ||grad g||^2, accumulated with overshoot, in the box.
    Inputs already on `side` are returned unchanged. Returns (revised inputs, iterations used, reached side).
    norm="linf": the L-inf form of the step (Moosavi-Dezfooli et al. 2016, section 2 with q = 1), the smallest
    L-inf move to the linearised boundary: r_i = -(|g| + 1e-4) * sign(grad g) / ||grad g||_1.

    box_aware: linearise over the pixels that can still move, i.e. drop the gradient components that would push
    a pixel already at the box's edge further out. Plain DeepFool steps toward the unconstrained boundary and lets
    the clip undo part of each step; on MNIST, where most pixels sit at -0.5, it then stalls for many iterations
    (measured with the paper-profile guardian: 23% of DeepFool examples not called natural after 50 iterations).
    """
    bias = math.log(threshold / (1 - threshold))
    other = 1 - side
    r_tot = torch.zeros_like(x)
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    reached = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    with frozen(model):
        idx = torch.arange(len(x), device=x.device)
        for _ in range(max_iter + 1):
            xa = (x[idx] + (1 + overshoot) * r_tot[idx]).clamp(*box).requires_grad_(True)
            logits = model(xa)
            g = logits[:, other] - logits[:, side] + bias
            (grad,) = torch.autograd.grad(g.sum(), xa)
            with torch.no_grad():
                done = g <= 0
                reached[idx] = done
                if box_aware:   # moving along -grad: a pixel at the floor cannot go down, at the ceiling not up
                    xa = xa.detach()
                    grad = grad.masked_fill(((xa <= box[0]) & (grad > 0)) | ((xa >= box[1]) & (grad < 0)), 0.0)
                running = ~done & (iterations[idx] < max_iter)
                if not running.any():
                    break
                keep = running.nonzero().squeeze(1)
                idx, g, grad = idx[keep], g[keep], grad[keep]
                view = (-1, *[1] * (x.dim() - 1))
                if norm == "linf":
                    scale = -(g.abs() + 1e-4) / grad.flatten(1).abs().sum(dim=1).clamp_min(1e-12)
                    r_tot[idx] += scale.view(view) * grad.sign()
                else:
                    scale = -(g.abs() + 1e-4) / grad.flatten(1).pow(2).sum(dim=1).clamp_min(1e-24)
                    r_tot[idx] += scale.view(view) * grad
                if box_aware:   # keep the accumulated step inside the box, so no later step is spent undoing it
                    r_tot[idx] = ((x[idx] + (1 + overshoot) * r_tot[idx]).clamp(*box) - x[idx]) / (1 + overshoot)
                iterations[idx] += 1
        x_new = (x + (1 + overshoot) * r_tot).clamp(*box)
        return x_new.detach(), iterations, reached
