"""The range of every setting a user can pass, in one place: attack keywords (Python API and `--set`) and profile
settings (`--set group.key=value`) are checked here before any work starts.

A rule is found by the setting's dotted name (`baseline.val_images`), else by its last part (`eps`). A setting with
no rule still has to be a finite, non-negative number when it is one (counts, sizes, rates, seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from reabsnet.errors import ReabsnetError


class SettingError(ReabsnetError, ValueError):
    """A setting outside its range. A ValueError too, so Python callers can catch it as the built-in kind."""


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive(v: Any) -> bool:
    return _number(v) and v > 0


def non_negative(v: Any) -> bool:
    return _number(v) and v >= 0


def at_least_one(v: Any) -> bool:
    return _int(v) and v >= 1


def non_negative_int(v: Any) -> bool:
    return _int(v) and v >= 0


def open_unit(v: Any) -> bool:
    return _number(v) and 0 < v < 1


def closed_unit(v: Any) -> bool:
    return _number(v) and 0 <= v <= 1


def above_one(v: Any) -> bool:
    return _number(v) and v > 1


def _bounds(text: str, largest: float = 1.0, empty: bool = False) -> bool:
    if empty and text == "":
        return True
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        return False
    return bool(values) and all(math.isfinite(v) and 0 < v <= largest for v in values)


def one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: v in choices


Rule = tuple[Callable[[Any], bool], str]


def _bounds_rule(norm: str, largest: float, empty: bool = False) -> Rule:
    return (lambda v: isinstance(v, str) and _bounds(v, largest, empty),
            f"comma-separated {norm} bounds in (0, {largest:g}]" + (" (empty: none)" if empty else ""))


LINF_BOUNDS = _bounds_rule("L-inf", 1.0)


def _factors(v: Any) -> bool:
    """Escalation's budget multiples: "" or whole numbers above 1, comma-separated, strictly ascending."""
    if not isinstance(v, str):
        return False
    if not v:
        return True
    parts = v.split(",")
    if not all(p.strip().isdigit() for p in parts):
        return False
    ints = [int(p) for p in parts]
    return ints[0] >= 2 and all(a < b for a, b in zip(ints, ints[1:], strict=False))

RULES: dict[str, Rule] = {
    # attacks (their keyword names)
    "eps": (positive, "a positive number"),
    "step_size": (positive, "a positive number"),
    "learning_rate": (positive, "a positive number"),
    "initial_const": (positive, "a positive number"),
    "largest_const": (positive, "a positive number"),
    "const_factor": (above_one, "a number above 1 (the constant must grow)"),
    "decrease_factor": (open_unit, "a number strictly between 0 and 1 (tau must shrink)"),
    "rho": (open_unit, "a number strictly between 0 and 1"),
    "momentum": (closed_unit, "a number between 0 and 1"),
    "overshoot": (non_negative, "a number >= 0"),
    "confidence": (non_negative, "a number >= 0"),
    "margin": (non_negative, "a number >= 0"),
    "success_margin": (non_negative, "a number >= 0 (logits)"),
    "threshold": (open_unit, "a number strictly between 0 and 1"),
    "revise_to": (open_unit, "a number strictly between 0 and 1"),
    "steps": (at_least_one, "a whole number >= 1"),
    "restarts": (at_least_one, "a whole number >= 1"),
    "max_iter": (at_least_one, "a whole number >= 1"),
    "max_iterations": (at_least_one, "a whole number >= 1"),
    "binary_search_steps": (at_least_one, "a whole number >= 1"),
    "candidates": (at_least_one, "a whole number >= 1"),
    "queries": (at_least_one, "a whole number >= 1"),
    "pipeline_queries": (at_least_one, "a whole number >= 1"),
    "targets": (at_least_one, "a whole number >= 1"),
    "p_init": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
               "a number in (0, 1]"),
    "version": (one_of("standard"), "standard"),
    "seed": (non_negative_int, "a whole number >= 0"),
    "extra_steps": (non_negative_int, "a whole number >= 0"),
    "side": (one_of(0, 1), "0 or 1"),
    "norm": (one_of("linf", "l2"), "linf or l2"),
    "loss": (one_of("ce", "margin", "dlr"), "ce, margin or dlr"),
    "reject": (lambda v: v is None or non_negative_int(v), "a class index >= 0, or none"),
    # profiles (their dotted names, or the last part where that is unambiguous)
    "epochs": (at_least_one, "a whole number >= 1"),
    "batch_size": (at_least_one, "a whole number >= 1"),
    "shard_size": (at_least_one, "a whole number >= 1"),
    "lr": (positive, "a positive number"),
    "temperature": (positive, "a positive number"),
    "init_epochs": (at_least_one, "a whole number >= 1"),
    "schedule": (one_of("cosine", "constant", "cyclic"), "cosine, constant or cyclic"),
    "optimizer": (one_of("adam"), "adam"),
    "method": (one_of("auto", "madry", "short-pgd", "fgsm-rs"), "auto, madry, short-pgd or fgsm-rs"),
    "preset": (one_of("smoke", "quick", "paper"), "smoke, quick or paper"),
    "reference_preset": (one_of("smoke", "quick", "paper"), "smoke, quick or paper"),
    "madry_steps": (at_least_one, "a whole number >= 1"),
    "madry_step_size": (positive, "a positive number"),
    "short_steps": (at_least_one, "a whole number >= 1"),
    "fgsm_step": (positive, "a positive number"),
    "val_steps": (at_least_one, "a whole number >= 1"),
    "eval_images": (at_least_one, "a whole number >= 1"),
    "eval_restarts": (at_least_one, "a whole number >= 1"),
    "baseline.val_images": (at_least_one, "a whole number >= 1"),
    "check_size": (non_negative_int, "a whole number >= 0"),
    # the guardians validate on their own sets (guardian.val_images, adaptive.harden_val_images), not on MNIST's
    "guardian.train.check_size": (one_of(0), "0 (the guardian validates on guardian.val_images)"),
    "adaptive.harden_train.check_size": (one_of(0), "0 (the hardened guardian validates on "
                                                     "adaptive.harden_val_images)"),
    "eval.n": (at_least_one, "a whole number >= 1"),
    "n_cw_l2": (at_least_one, "a whole number >= 1"),
    "n_cw_linf": (at_least_one, "a whole number >= 1"),
    "n_pgd": (at_least_one, "a whole number >= 1"),
    "adaptive.n": (at_least_one, "a whole number >= 1"),
    "adaptive.precision": (one_of("auto", "fp32", "bf16"), "auto, fp32 or bf16"),
    "ablation.seeds": (at_least_one, "a whole number >= 1"),
    "n_cw_train": (at_least_one, "a whole number >= 1"),
    "harden_eps": (positive, "a positive number"),
    "harden_bounds": LINF_BOUNDS,
    "escalate": (_factors, "budget multiples above 1, comma-separated and ascending (e.g. 3,10), or empty"),
    "escalate_tolerance": (closed_unit, "a number between 0 and 1"),
    "linf_bounds": LINF_BOUNDS,
    # 28 = the L2 diameter of MNIST's [-0.5, 0.5]^784 box
    "l2_bounds": _bounds_rule("L2", 28.0, empty=True),
    "harden_steps": (at_least_one, "a whole number >= 1"),
    "harden_val_images": (at_least_one, "a whole number >= 1"),
    "max_clean_rejection": (closed_unit, "a number between 0 and 1"),
    "dataset": (one_of("mnist", "fashion-mnist"), "mnist or fashion-mnist"),
}


def check_setting(name: str, value: Any, where: str = "") -> None:
    """Raise SettingError unless `value` is allowed for the setting `name` (dotted or plain)."""
    rule = RULES.get(name) or RULES.get(name.rsplit(".", 1)[-1])
    if rule is None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or non_negative(value):
            return
        rule = (non_negative, "a finite number >= 0")
    ok, expected = rule
    if not ok(value):
        raise SettingError(f"{where}{name}={value!r}: must be {expected}")


def check_settings(settings: Mapping[str, Any], where: str = "") -> None:
    for name, value in settings.items():
        check_setting(name, value, where)


def check_data(model, x, y, box: tuple[float, float], what: str = "data") -> int:
    """Raise ReabsnetError (one line) unless x is float (N, C, H, W) inside `box`, y holds N int labels, and
    `model` maps x to (N, classes) logits with every label below `classes`; return `classes`."""
    import torch

    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.dtype.is_floating_point:
        raise ReabsnetError(f"{what}: images must be a float tensor (N, C, H, W), got "
                            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x) or y.dtype.is_floating_point:
        raise ReabsnetError(f"{what}: labels must be an int tensor of {len(x)} entries, one per image")
    if not len(x):
        raise ReabsnetError(f"{what}: no images")
    if box[0] >= box[1]:
        raise ReabsnetError(f"box {tuple(box)}: the lower bound must be below the upper bound")
    low, high = float(x.min()), float(x.max())
    if low < box[0] - 1e-6 or high > box[1] + 1e-6:
        raise ReabsnetError(f"{what}: pixels span [{low:.3f}, {high:.3f}], outside the box {tuple(box)}; give the "
                            f"box your model takes")
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            out = model.eval()(x[:2].to(device))
    except RuntimeError as e:
        raise ReabsnetError(f"{what}: the model does not take images of shape {tuple(x.shape[1:])} "
                            f"({str(e).splitlines()[0]})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or len(out) != min(2, len(x)):
        raise ReabsnetError(f"the model's output must be (N, classes) logits, got "
                            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    classes = out.shape[1]
    if int(y.min()) < 0 or int(y.max()) >= classes:
        raise ReabsnetError(f"{what}: labels span {int(y.min())}..{int(y.max())}, outside the model's "
                            f"{classes} classes")
    return classes
