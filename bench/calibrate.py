"""One fixed workload that places a machine among the others: the shipped master's forward and input-gradient pass
(what an attack step runs) on a fixed batch of 500 MNIST-shaped images, at the thread count torch chooses. Scale a
time measured on one machine by the ratio of two machines' figures to estimate it on the other.

    PYTHONPATH=src python bench/calibrate.py            # prints the machine, torch, and passes per second

The figure is the median of 7 timed passes after 2 warm-up passes; docs/hardware.md lists it per machine.
"""

from __future__ import annotations

import json
import platform
import statistics
import time

import torch

from reabsnet.models import load_model, place
from reabsnet.report import machine
from reabsnet.stages import SHIPPED_MODELS


def passes_per_second(device: str = "cpu", n: int = 500, repeats: int = 7) -> float:
    model, _ = load_model(SHIPPED_MODELS / "mnist" / "paper" / "master.safetensors", expect="master")
    model = place(model, device).eval()
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)).sub(0.5).to(device)

    def once() -> float:
        xs = x.clone().requires_grad_(True)
        began = time.perf_counter()
        model(xs).logsumexp(1).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - began

    for _ in range(2):
        once()
    return 1.0 / statistics.median(once() for _ in range(repeats))


if __name__ == "__main__":
    device = "cuda" if torch.cuda.is_available() else "cpu"
    m = machine()
    print(json.dumps({"machine": m.get("cpu_model") or platform.processor(), "cuda": m["cuda"],
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "device": device,
                      "passes_per_second": round(passes_per_second(device), 2)}))
