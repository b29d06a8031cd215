"""Table 3 (paper section 4.3.3): ReabsNet against the Madry-style baseline under an L-inf bound, and the curves of
accuracy against that bound.

The paper's rule: an adversarial example farther than eps (L-inf) from its original is a failed attack and is
replaced by the original. ReabsNet (and its master alone) see the examples crafted against the master, as in
Table 2; the Madry-style model is attacked directly, white-box, with the same attacks and settings. PGD, the
attack Madry et al. train against, is added at a grid of bounds, crafted against each network the same way.
"""

from __future__ import annotations

import torch

from reabsnet.evaluation.paper import ATTACK_SPECS, AttackSpec
from reabsnet.evaluation.stats import rate
from reabsnet.train.loop import predict_logits

BOUNDS = (0.3, 0.6)
CURVE_BOUNDS = [round(0.01 * i, 2) for i in range(61)]          # 0 to 0.6: free, a mask over stored distances
PGD_BOUNDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)   # one PGD run per bound
PGD_STEPS = 40
TOLERANCE = 1e-5          # float32 rounding: FGSM at eps 0.3 lands at 0.3 + 3e-8

# The paper's Table 3 (its "Our Model" is ReabsNet; "Madry's Model" is Madry et al.'s released network).
PAPER = {
    0.3: {"reabsnet": {"fgsm": 1.0, "deepfool": 0.92, "cw-l2-u": 0.984, "cw-l2-t": 0.996, "cw-linf-u": 0.99,
                       "cw-linf-t": 0.95},
          "madry": {"fgsm": 1.0, "deepfool": 0.968, "cw-l2-u": 0.962, "cw-l2-t": 0.997, "cw-linf-u": 0.93,
                    "cw-linf-t": 0.98}},
    0.6: {"reabsnet": {"fgsm": 1.0, "deepfool": 0.744, "cw-l2-u": 0.983, "cw-l2-t": 0.973, "cw-linf-u": 0.99,
                       "cw-linf-t": 0.95},
          "madry": {"fgsm": 1.0, "deepfool": 0.946, "cw-l2-u": 0.582, "cw-l2-t": 0.226, "cw-linf-u": 0.15,
                    "cw-linf-t": 0.43}},
}


def pgd_specs() -> list[AttackSpec]:
    """L-inf PGD at each bound: 40 steps of 2.5 eps / 40 (Madry's step rule), one random start, margin loss (the
    distilled master's saturated softmax masks cross-entropy gradients)."""
    return [AttackSpec(f"pgd-{eps:.2f}", f"PGD eps {eps:g}", "pgd", False,
                       {"eps": eps, "steps": PGD_STEPS, "step_size": 2.5 * eps / PGD_STEPS, "loss": "margin",
                        "restarts": 1}) for eps in PGD_BOUNDS]


def bounded_correct(arrays: dict, adv_label: torch.Tensor, clean_label: torch.Tensor, eps: float) -> torch.Tensor:
    """Per example: correct under the paper's rule (the adversarial input when within eps, else the original)."""
    within = arrays["linf"] <= eps + TOLERANCE
    n = len(arrays["y"])
    return torch.where(within, adv_label, clean_label[:n]) == arrays["y"]


def table3(master_sets: dict, reabsnet_labels: dict, reabsnet_clean: torch.Tensor, master_clean: torch.Tensor,
           madry_sets: dict, madry_clean: torch.Tensor) -> dict:
    """Per bound and attack: rates (with intervals) for ReabsNet and the master on the master's sets, and for the
    Madry-style model on its own sets (sets: key -> (arrays, sidecar)). `*_clean` are each network's labels on the
    test images in order."""
    out = {}
    for eps in BOUNDS:
        row = {}
        for spec in ATTACK_SPECS:
            arrays, madry_arrays = master_sets[spec.key][0], madry_sets[spec.key][0]
            row[spec.key] = {
                "reabsnet": rate(bounded_correct(arrays, reabsnet_labels[spec.key], reabsnet_clean, eps)),
                "master": rate(bounded_correct(arrays, arrays["label"], master_clean, eps)),
                "madry": rate(bounded_correct(madry_arrays, madry_arrays["label"], madry_clean, eps)),
                "madry_within_bound": rate(madry_arrays["success"].bool() & (madry_arrays["linf"] <= eps + TOLERANCE)),
            }
        out[f"{eps:g}"] = row
    return out


def curves(master_sets: dict, reabsnet_labels: dict, reabsnet_clean: torch.Tensor, master_clean: torch.Tensor,
           madry_sets: dict, madry_clean: torch.Tensor, pgd: dict) -> dict:
    """Accuracy against the L-inf bound. For the minimal-perturbation attacks of Table 2, one mask per bound over
    the stored sets (CURVE_BOUNDS); for PGD, one attack per bound (`pgd`: key -> bound, master set, ReabsNet labels
    on it, Madry set)."""
    out = {"bounds": CURVE_BOUNDS, "attacks": {}}
    for spec in ATTACK_SPECS:
        arrays, madry_arrays = master_sets[spec.key][0], madry_sets[spec.key][0]
        out["attacks"][spec.key] = {
            "title": spec.title,
            "master": [_acc(bounded_correct(arrays, arrays["label"], master_clean, e)) for e in CURVE_BOUNDS],
            "reabsnet": [_acc(bounded_correct(arrays, reabsnet_labels[spec.key], reabsnet_clean, e))
                         for e in CURVE_BOUNDS],
            "madry": [_acc(bounded_correct(madry_arrays, madry_arrays["label"], madry_clean, e))
                      for e in CURVE_BOUNDS],
        }
    rows = sorted(pgd.values(), key=lambda r: r["eps"])
    out["pgd"] = {
        "title": "PGD (L-inf, 40 steps)",
        "bounds": [0.0] + [r["eps"] for r in rows],
        "n": len(rows[0]["master"][0]["y"]) if rows else 0,
        "master": [_clean(master_clean, rows)] + [_acc(r["master"][0]["label"] == r["master"][0]["y"]) for r in rows],
        "reabsnet": [_clean(reabsnet_clean, rows)] + [_acc(r["reabsnet_label"] == r["master"][0]["y"]) for r in rows],
        "madry": [_clean(madry_clean, rows)] + [_acc(r["madry"][0]["label"] == r["madry"][0]["y"]) for r in rows],
    }
    return out


def _clean(labels: torch.Tensor, rows: list) -> float | None:
    if not rows:
        return None
    y = rows[0]["master"][0]["y"]
    return _acc(labels[:len(y)] == y)


def _acc(mask: torch.Tensor) -> float:
    return float(mask.float().mean()) if len(mask) else float("nan")


def compare(defended, madry, splits, sets: dict, predictions: dict, master_clean: torch.Tensor, madry_sets: dict,
            pgd_master: dict, pgd_madry: dict) -> dict:
    """Table 3 and the curves, from the stored attack sets and what `evaluate` computed: ReabsNet's predictions
    and the master's labels of the first len(master_clean) test images (the Madry-style model's: on as many)."""
    x_test, y_test = splits.split("test", len(master_clean))
    madry_clean = predict_logits(madry, x_test).argmax(1)
    reabsnet_clean = predictions["natural"].label
    labels = {spec.key: predictions[spec.key].label for spec in ATTACK_SPECS}
    pgd = {}
    for spec in pgd_specs():
        pgd[spec.key] = {"eps": spec.settings["eps"], "master": pgd_master[spec.key], "madry": pgd_madry[spec.key],
                         "reabsnet_label": defended.predict_batches(pgd_master[spec.key][0]["x_adv"]).label}
    return {"table3": table3(sets, labels, reabsnet_clean, master_clean, madry_sets, madry_clean),
            "curves": curves(sets, labels, reabsnet_clean, master_clean, madry_sets, madry_clean, pgd),
            "madry_clean": rate(madry_clean == y_test)}
