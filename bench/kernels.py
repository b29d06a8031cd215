"""How close the networks' passes run to this machine's limit, and what each kernel-level lever buys.

    .venv/bin/python bench/kernels.py [--batch 100,500,1000] [--repeat 20]

Prints, for the master network: the GFLOP/s of its forward pass and of its forward + input-gradient pass (the
inner step of every gradient attack) under each lever (fp32, channels_last, bf16 autocast, torch.compile),
beside this CPU's measured peak (a large fp32 / bf16 matmul and a large convolution). FLOPs are counted from the
layer shapes (2 per multiply-add); the input-gradient pass counts twice the forward FLOPs (with the parameters
frozen, the backward pass computes input gradients only, one product per layer). Compare rows within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch
import torch.nn as nn

from reabsnet.models import create_model, registry


def layer_flops(model: nn.Module, shape=(1, 1, 28, 28)) -> float:
    """Forward FLOPs per image (2 per multiply-add) of the convolutions and dense layers, from their shapes."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2.0 * output.numel() * k
        elif isinstance(module, nn.Linear):
            total += 2.0 * module.in_features * module.out_features * output.shape[0]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total / shape[0]


def timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls after two warm-up calls (oneDNN builds kernels per shape)."""
    fn()
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak(repeat: int) -> dict[str, float]:
    """GFLOP/s of a 2048^2 matmul (fp32, bf16) and of a large 3x3 convolution (fp32, bf16 autocast)."""
    out = {}
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for name, dtype in (("matmul fp32", torch.float32), ("matmul bf16", torch.bfloat16)):
        a_, b_ = a.to(dtype), b.to(dtype)
        out[name] = 2 * 2048 ** 3 / timed(lambda a_=a_, b_=b_: a_ @ b_, repeat) / 1e9
    conv = nn.Conv2d(64, 64, 3).eval()
    x = torch.randn(256, 64, 24, 24)
    flops = 2.0 * 256 * 64 * 22 * 22 * 64 * 9
    with torch.no_grad():
        out["conv 64->64 3x3 fp32"] = flops / timed(lambda: conv(x), repeat) / 1e9
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["conv 64->64 3x3 bf16"] = flops / timed(lambda: conv(x), repeat) / 1e9
    return out


def levers(state: dict) -> dict[str, tuple[nn.Module, Callable, bool, int]]:
    """lever -> (model, autocast context factory, channels_last, chunk size); chunk 0 = the whole batch at once."""
    def build(channels_last: bool) -> nn.Module:
        model = create_model("master").eval()
        model.load_state_dict(state)
        for p in model.parameters():
            p.requires_grad_(False)
        return model.to(memory_format=torch.channels_last) if channels_last else model

    plain, cl = build(False), build(True)
    out = {"fp32": (plain, contextlib.nullcontext, False, 0),
           "channels_last": (cl, contextlib.nullcontext, True, 0),
           f"channels_last + chunks of {registry.CPU_CHUNK} (default)": (cl, contextlib.nullcontext, True,
                                                                        registry.CPU_CHUNK),
           "bf16 autocast": (cl, lambda: torch.autocast("cpu", dtype=torch.bfloat16), True, 0)}
    try:
        out["torch.compile"] = (torch.compile(cl), contextlib.nullcontext, True, 0)
    except Exception as exc:       # noqa: BLE001 - report any compile failure as a skipped row
        print(f"torch.compile unavailable: {exc}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="100,500,1000")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, value in peak(args.repeat).items():
        print(f"| peak | {name} | | {value:.1f} GFLOP/s |")
    model = create_model("master").eval()
    flops = layer_flops(model)
    print(f"master: {flops / 1e6:.1f} MFLOP per image forward")
    rows = levers(model.state_dict())
    if args.no_compile:
        rows.pop("torch.compile", None)
    print("| pass | lever | batch | images/s | GFLOP/s |")
    print("|---|---|---|---|---|")
    for batch in map(int, args.batch.split(",")):
        x = torch.rand(batch, 1, 28, 28) - 0.5
        for lever, (net, cast, channels_last, chunk) in rows.items():
            xi = x.contiguous(memory_format=torch.channels_last) if channels_last else x

            def forward(net=net, cast=cast, xi=xi):
                with torch.no_grad(), cast():
                    net(xi)

            def gradient(net=net, cast=cast, xi=xi):
                xg = xi.clone().requires_grad_(True)
                with cast():
                    loss = net(xg).float().logsumexp(1).sum()
                torch.autograd.grad(loss, xg)

            for pass_name, fn, mult in (("forward", forward, 1.0), ("forward+input grad", gradient, 2.0)):
                try:
                    with registry.cpu_chunk(chunk or None):
                        s = timed(fn, args.repeat)
                except Exception as exc:   # noqa: BLE001
                    print(f"| {pass_name} | {lever} | {batch} | failed: {type(exc).__name__} | |")
                    continue
                print(f"| {pass_name} | {lever} | {batch} | {batch / s:.0f} | {mult * flops * batch / s / 1e9:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
