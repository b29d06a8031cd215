"""Networks by name: `master` (Figure 2), `guardian` (Figure 3), `madry` (the Table 3 baseline); checkpoints that
carry their architecture."""

from __future__ import annotations

import torch
import torch.nn as nn

from reabsnet.models import guardian as _guardian  # noqa: F401  (registers "guardian")
from reabsnet.models import madry as _madry  # noqa: F401  (registers "madry")
from reabsnet.models import master as _master  # noqa: F401  (registers "master")
from reabsnet.models import resnet as _resnet  # noqa: F401  (registers "resnet-small")
from reabsnet.models.checkpoint import load_model, save_model
from reabsnet.models.registry import create_model, model_names, register
from reabsnet.runtime import exact_fp32

__all__ = ["create_model", "load_model", "model_names", "place", "register", "save_model"]


def place(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Move `model` to `device`; on CPU also switch to channels_last, where oneDNN's convolutions are faster; on a
    GPU keep full fp32 (no TF32, `runtime.exact_fp32`)."""
    device = torch.device(device)
    model = model.to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    else:
        exact_fp32()
    return model
