"""Progress bars: one place decides how they look and when they show (only on a terminal)."""

from __future__ import annotations

from tqdm.auto import tqdm

from reabsnet import distributed


def bar(total: int | float | None = None, desc: str = "", unit: str = "it", **kwargs) -> tqdm:
    # under torchrun only rank 0 draws bars (one screen, not N interleaved ones)
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True,
                disable=None if distributed.is_main() else True, leave=False, **kwargs)
