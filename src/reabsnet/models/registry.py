"""Models are built by name (`create_model("master")`), and the name travels with every checkpoint (timm-style)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

from reabsnet.errors import ReabsnetError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        assert name not in _REGISTRY, f"model {name!r} registered twice"
        _REGISTRY[name] = factory
        return factory
    return wrap


# On a CPU the passes of these small CNNs run fastest on batches of about a hundred images, whose activations stay
# in the caches: on a 2-core Intel Xeon (bench/kernels.py), the master's forward + input-gradient pass does 2,810
# images/s on 500 images in chunks of 128 against 2,065 as one batch; whole attacks on 200 images run 1.25-1.3x
# faster (bench/attacks.py, docs/benchmarks.md). GPUs want the whole batch, so only CPU inputs are chunked.
CPU_CHUNK = 128


@contextlib.contextmanager
def cpu_chunk(size: int | None) -> Iterator[None]:
    """Inside the block, CPU passes run in chunks of `size` images (None: the whole batch at once); the previous
    size comes back after it, also on an exception. For benchmarks that show the chunking's share."""
    global CPU_CHUNK
    saved, CPU_CHUNK = CPU_CHUNK, size or 10 ** 9
    try:
        yield
    finally:
        CPU_CHUNK = saved


def in_chunks(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """forward(x), computed on CPU in chunks of CPU_CHUNK images and concatenated (autograd flows through)."""
    if x.device.type != "cpu" or len(x) <= CPU_CHUNK:
        return forward(x)
    return torch.cat([forward(part) for part in x.split(CPU_CHUNK)])


class Chunked(nn.Sequential):
    """nn.Sequential whose forward runs in cache-sized chunks on CPU (same layers, same state_dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_chunks(super().forward, x)


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
