"""How close the networks' passes run to this machine's limit, and what each kernel-level lever buys.

    .venv/bin/python bench/kernels.py [--batch 100,500,1000] [--repeat 20] [--device auto|cpu|cuda]

Prints, for the master network: the GFLOP/s of its forward pass and of its forward + input-gradient pass (the
inner step of every gradient attack) under each lever (CPU: fp32, channels_last, chunks, bf16 autocast,
torch.compile; GPU: fp32 without TF32 (reabsnet's setting), TF32, channels_last, bf16 autocast, torch.compile,
a CUDA graph of the whole pass), beside the device's measured peak (a large fp32 / bf16 matmul and a large
convolution). FLOPs are counted from the
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


def timed(fn, repeat: int, device: torch.device | None = None) -> float:
    """Median seconds of `repeat` calls after two warm-up calls (oneDNN and cuDNN pick kernels per shape); on a
    GPU each call is timed to its end (synchronised), not to its launch."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    fn()
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 for cuDNN convolutions and matmuls on (PyTorch's cuDNN default) or off (reabsnet's: exact fp32)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def peak(repeat: int, device: torch.device) -> dict[str, float]:
    """GFLOP/s of a large matmul (fp32, bf16; on a GPU also TF32) and of a large 3x3 convolution."""
    out = {}
    size = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    kinds = [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False)]
    if device.type == "cuda":
        kinds.insert(1, ("tf32", torch.float32, True))
    for name, dtype, fast in kinds:
        a_, b_ = a.to(dtype), b.to(dtype)
        with tf32(fast):
            out[f"matmul {size}^2 {name}"] = 2 * size ** 3 / timed(lambda a_=a_, b_=b_: a_ @ b_, repeat, device) / 1e9
    conv = nn.Conv2d(64, 64, 3).eval().to(device)
    x = torch.randn(256, 64, 24, 24, device=device)
    flops = 2.0 * 256 * 64 * 22 * 22 * 64 * 9
    with torch.no_grad():
        with tf32(False):
            out["conv 64->64 3x3 fp32"] = flops / timed(lambda: conv(x), repeat, device) / 1e9
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out["conv 64->64 3x3 bf16"] = flops / timed(lambda: conv(x), repeat, device) / 1e9
    return out


def levers(state: dict, device: torch.device) -> dict[str, tuple[nn.Module, Callable, bool, int]]:
    """lever -> (model, context factory around each pass, channels_last, chunk size); chunk 0 = the whole batch
    at once (the CPU chunking is off on GPUs anyway)."""
    def build(channels_last: bool) -> nn.Module:
        model = create_model("master").eval().to(device)
        model.load_state_dict(state)
        for p in model.parameters():
            p.requires_grad_(False)
        return model.to(memory_format=torch.channels_last) if channels_last else model

    plain, cl = build(False), build(True)
    bf16 = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    if device.type == "cpu":
        out = {"fp32": (plain, contextlib.nullcontext, False, 0),
               "channels_last": (cl, contextlib.nullcontext, True, 0),
               f"channels_last + chunks of {registry.CPU_CHUNK} (default)": (cl, contextlib.nullcontext, True,
                                                                            registry.CPU_CHUNK),
               "bf16 autocast": (cl, bf16, True, 0)}
        compiled = cl
    else:
        exact = lambda: tf32(False)  # noqa: E731
        out = {"fp32, no TF32 (default)": (plain, exact, False, 0),
               "TF32": (plain, lambda: tf32(True), False, 0),
               "channels_last, no TF32": (cl, exact, True, 0),
               "bf16 autocast": (plain, bf16, False, 0)}
        compiled = plain
    try:
        out["torch.compile"] = (torch.compile(compiled), (contextlib.nullcontext if device.type == "cpu" else
                                                          lambda: tf32(False)), device.type == "cpu", 0)
    except Exception as exc:       # noqa: BLE001 - report any compile failure as a skipped row
        print(f"torch.compile unavailable: {exc}")
    return out


def cuda_graph(net: nn.Module, x: torch.Tensor, gradient: bool) -> Callable[[], None]:
    """One pass (forward, or forward + input gradient) captured as a CUDA graph: a replay launches every kernel
    at once, so the per-kernel launch cost of Python and PyTorch is paid once, at capture."""
    static = x.clone().requires_grad_(gradient)

    def step():
        if gradient:
            torch.autograd.grad(net(static).logsumexp(1).sum(), static)
        else:
            with torch.no_grad():
                net(static)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), tf32(False):      # warm-up on a side stream, as capture requires
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), tf32(False):
        step()
    return graph.replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="100,500,1000")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, CUDA when present)")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {device.type} ({where})")
    for name, value in peak(args.repeat, device).items():
        print(f"| peak | {name} | | {value:.1f} GFLOP/s |")
    model = create_model("master").eval()
    flops = layer_flops(model)
    print(f"master: {flops / 1e6:.1f} MFLOP per image forward")
    rows = levers(model.state_dict(), device)
    if args.no_compile:
        rows.pop("torch.compile", None)
    print("| pass | lever | batch | images/s | GFLOP/s |")
    print("|---|---|---|---|---|")
    for batch in map(int, args.batch.split(",")):
        x = torch.rand(batch, 1, 28, 28, device=device) - 0.5
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
                _row(pass_name, lever, batch, fn, mult * flops, args.repeat, device, chunk)
        if device.type == "cuda":
            plain = rows["fp32, no TF32 (default)"][0]
            for pass_name, grad, mult in (("forward", False, 1.0), ("forward+input grad", True, 2.0)):
                try:
                    fn = cuda_graph(plain, x, grad)
                except Exception as exc:   # noqa: BLE001
                    print(f"| {pass_name} | CUDA graph, no TF32 | {batch} | failed: {type(exc).__name__} | |")
                    continue
                _row(pass_name, "CUDA graph, no TF32", batch, fn, mult * flops, args.repeat, device, 0)


def _row(pass_name: str, lever: str, batch: int, fn: Callable, flops: float, repeat: int, device: torch.device,
         chunk: int) -> None:
    try:
        with registry.cpu_chunk(chunk or None):
            s = timed(fn, repeat, device)
    except Exception as exc:   # noqa: BLE001
        print(f"| {pass_name} | {lever} | {batch} | failed: {type(exc).__name__} | |")
        return
    print(f"| {pass_name} | {lever} | {batch} | {batch / s:.0f} | {flops * batch / s / 1e9:.1f} |", flush=True)


if __name__ == "__main__":
    main()
