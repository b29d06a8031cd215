"""Where computation runs and how it is seeded."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch

from reabsnet.errors import ReabsnetError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a user error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ReabsnetError(f"unknown device {name!r}; use auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ReabsnetError("--device cuda requested but no CUDA device is available")
    if name.startswith("cuda"):
        exact_fp32()
    return torch.device(name)


BF16_MIN_SPEEDUP = 1.3     # "auto" takes bfloat16 search passes only where they are at least this much faster


def search_precision(setting: str, device: torch.device, speedup: Callable[[], float]) -> tuple[str, float | None]:
    """adaptive.precision as it runs on `device`, and the speed-up timed to decide it (None where none was timed):
    "fp32" and "bf16" as they are; "auto" -> "bf16" on a CPU with native bfloat16 instructions (AVX-512 BF16 or
    AMX) where `speedup()` (the float32 pass's time over the bfloat16 one) is at least BF16_MIN_SPEEDUP, else
    "fp32". Measured: 1.7-2.7x on an AMD EPYC, 0.8x on an Intel Xeon with AVX-512 BF16 but no AMX
    (docs/benchmarks.md); without the instructions autocast emulates bfloat16; on a GPU it was not measured."""
    if setting != "auto":
        return setting, None
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if device.type != "cpu" or not native:
        return "fp32", None
    timed = speedup()
    return ("bf16" if timed >= BF16_MIN_SPEEDUP else "fp32"), timed


def describe(device: torch.device) -> str:
    """The device in words for sidecars and reports: "cpu", or "cuda (NVIDIA H100 80GB HBM3)"."""
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def exact_fp32() -> None:
    """Full fp32 on GPUs (training, attacks, judging): no TF32. cuDNN's default rounds convolution inputs to 10-bit
    mantissas, enough to move the points CW leaves at the decision boundary (median logit margin about 0.04) to
    the other side when they are judged again in fp32, e.g. on a CPU."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data order, independent of model code's RNG use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
