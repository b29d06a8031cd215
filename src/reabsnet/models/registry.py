"""Models are built by name (`create_model("master")`), and the name travels with every checkpoint (timm-style)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from reabsnet.errors import ReabsnetError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        assert name not in _REGISTRY, f"model {name!r} registered twice"
        _REGISTRY[name] = factory
        return factory
    return wrap


def kaiming_init(model: nn.Module) -> nn.Module:
    """He-normal weights and zero biases for every conv and dense layer. PyTorch's default (uniform, a=sqrt(5))
    leaves these 7-layer ReLU stacks stuck near chance for the first epoch; He init trains from the first step."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return model


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; its `registry_name` and `registry_kwargs` are kept for checkpoints."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ReabsnetError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}") from None
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise ReabsnetError(f"model {name!r}: bad arguments {kwargs} ({e})") from None
    model.registry_name = name
    model.registry_kwargs = dict(kwargs)
    return model
