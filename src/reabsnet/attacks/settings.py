"""`key=value` overrides for an attack's keyword settings, typed by the defaults in its signature."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reabsnet.attacks.common import settings_of
from reabsnet.checks import check_settings
from reabsnet.errors import ReabsnetError


def attack_settings(attack: Callable) -> dict[str, Any]:
    """The attack's settings and their defaults, as its signature declares them."""
    return settings_of(attack, {})


def parse_settings(attack: Callable, items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings -> typed settings, each checked against its range (reabsnet.checks) before any work."""
    defaults = attack_settings(attack)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in defaults:
            raise ReabsnetError(f"setting {item!r}: expected KEY=VALUE with KEY one of: {', '.join(defaults)}")
        kind = type(defaults[key])
        try:
            if defaults[key] is None:      # an optional setting (e.g. apgd's reject class): a number or none
                out[key] = None if value.lower() == "none" else _number(value)
            elif kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            else:
                out[key] = kind(value)
        except ValueError:
            expected = "number (or none)" if defaults[key] is None else kind.__name__
            raise ReabsnetError(f"setting {item!r}: {value!r} is not a valid {expected}") from None
    check_settings(out, "setting ")
    return out


def _number(value: str) -> int | float:
    try:
        return int(value)
    except ValueError:
        return float(value)
