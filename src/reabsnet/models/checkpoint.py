"""Model checkpoints: safetensors weights + JSON sidecar naming the architecture. Never unpickled."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from reabsnet.artifacts import load_tensors, save_tensors
from reabsnet.errors import ReabsnetError
from reabsnet.models.registry import create_model


def save_model(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any] | None = None) -> dict:
    """Write `model`'s weights and a sidecar with its registry name, arguments and `meta`; returns the sidecar."""
    name = getattr(model, "registry_name", None)
    assert name is not None, "save_model needs a model built by create_model()"
    info = {**(meta or {}), "model": name, "model_kwargs": model.registry_kwargs}
    return save_tensors(path, model.state_dict(), info)


def load_model(path: str | os.PathLike, expect: str | None = None) -> tuple[nn.Module, dict]:
    """Verify the checkpoint's hash, rebuild its architecture by name and load the weights (eval mode).

    `expect` names the architecture the caller needs; a different one is refused with a clear message.
    """
    tensors, meta = load_tensors(path)
    name = meta.get("model")
    if not isinstance(name, str):
        raise ReabsnetError(f"{path}: sidecar does not name a model architecture")
    if expect is not None and name != expect:
        raise ReabsnetError(f"{path}: holds a {name!r} model, expected {expect!r}")
    kwargs = meta.get("model_kwargs", {})
    if not isinstance(kwargs, dict):
        raise ReabsnetError(f"{path}: sidecar's model_kwargs is not a mapping")
    model = create_model(name, **kwargs)
    own = model.state_dict()
    if set(own) != set(tensors) or any(own[k].shape != tensors[k].shape for k in own):
        raise ReabsnetError(f"{Path(path).name}: weights do not fit the {name!r} architecture")
    model.load_state_dict(tensors)
    return model.eval(), meta
