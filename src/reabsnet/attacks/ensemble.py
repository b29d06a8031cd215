"""The AutoAttack protocol (Croce & Hein 2020, auto-attack's "standard" version): robust accuracy as the worst case
per example over an ensemble of parameter-free attacks, each run only on the examples every earlier one left
standing: APGD-CE (1 restart, 100 steps), APGD-T (targeted DLR toward the 9 top other classes, 100 steps each),
FAB-T (the same 9 classes, 100 iterations each), Square (5,000 queries, p_init 0.8), as auto-attack runs them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.attacks.adaptive import apgd, apgd_t
from reabsnet.attacks.common import BOX, AttackResult, Box, check_inputs, finish, frozen, validated
from reabsnet.attacks.fab import fab_t
from reabsnet.attacks.square import square
from reabsnet.checks import SettingError

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")


@validated
def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
               eps: float = 0.3, norm: str = "linf", steps: int = 100, targets: int = 9, queries: int = 5000,
               reject: int | None = None, seed: int = 0, box: Box = BOX, record: dict | None = None) -> AttackResult:
    """The standard ensemble as one attack (untargeted; `reject` as in `apgd`). Per example the first attack that
    breaks it gives its point; an example no attack breaks keeps the clean input (as auto-attack returns it).
    `record`, when a dict, receives each attack's robust accuracy after it ran, and the clean one."""
    check_inputs(x, y, target, box)
    if target is not None:
        raise SettingError("autoattack is untargeted (APGD-T picks its own targets); pass no target")
    with frozen(model), torch.no_grad():
        label = model(x).argmax(1)
    standing = (label == y) | ((label == reject) if reject is not None else torch.zeros_like(y, dtype=torch.bool))
    best = x.clone()
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    if record is not None:
        record["clean"] = float(standing.float().mean()) if len(x) else None
    runs = {"apgd-ce": lambda xs, ys: apgd(model, xs, ys, eps=eps, norm=norm, loss="ce", steps=steps, restarts=1,
                                          reject=reject, seed=seed, box=box),
            "apgd-t": lambda xs, ys: apgd_t(model, xs, ys, eps=eps, norm=norm, steps=steps, targets=targets,
                                            reject=reject, seed=seed, box=box),
            "fab-t": lambda xs, ys: fab_t(model, xs, ys, eps=eps, norm=norm, steps=steps, targets=targets,
                                          reject=reject, box=box),
            "square": lambda xs, ys: square(model, xs, ys, eps=eps, norm=norm, queries=queries, reject=reject,
                                            seed=seed, box=box)}
    for name in STANDARD:
        idx = standing.nonzero().squeeze(1)
        if len(idx):
            res = runs[name](x[idx], y[idx])
            iterations[idx] += res.iterations
            best[idx[res.success]] = res.x_adv[res.success]
            standing[idx[res.success]] = False
        if record is not None:
            record[name] = float(standing.float().mean()) if len(x) else None
    with frozen(model):
        result = finish(model, x, best, y, None, iterations, box, reject=reject)
    return result


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf", eps: float = 0.3,
                    version: str = "standard", reject: int | None = None, seed: int = 0, batch_size: int = 500,
                    box: Box = BOX, **settings) -> dict:
    """Robust accuracy under the AutoAttack protocol, in batches on the model's device: the clean accuracy, the
    robust accuracy left after each attack of the ensemble, the final one, and the per-example result (on the
    CPU). `reject`: a class that counts as the defense's success (correct-or-rejected)."""
    if version != "standard":
        raise SettingError(f"robust_accuracy: version={version!r}: only 'standard' is implemented")
    device = next(model.parameters()).device
    parts, records = [], []
    for i in range(0, len(x), batch_size):
        record: dict = {}
        parts.append(autoattack(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device), norm=norm,
                                eps=eps, reject=reject, seed=seed, box=box, record=record, **settings).cpu())
        records.append((len(parts[-1].success), record))
    n = sum(k for k, _ in records)
    # counts, not sums of fractions: the rates then compare exactly
    after = {name: sum(round(k * r[name]) for k, r in records) / n for name in ("clean", *STANDARD)} if n else {}
    result = AttackResult(**{k: torch.cat([getattr(p, k) for p in parts]) for k in vars(parts[0])})
    return {"n": n, "norm": norm, "eps": eps, "version": version, "attacks": list(STANDARD),
            "clean": after.get("clean"), "after": {k: after[k] for k in STANDARD} if n else {},
            "robust_accuracy": int((~result.success).sum()) / n if n else None, "result": result}
