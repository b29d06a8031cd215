"""Progress bars: one place decides how they look and when they show (only on a terminal)."""

from __future__ import annotations

from tqdm.auto import tqdm


def bar(total: int | float | None = None, desc: str = "", unit: str = "it", **kwargs) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=None, leave=False, **kwargs)
