"""Search passes in bfloat16 against float32, every success judged in float32: APGD, APGD-T, Square and FAB-T on the
shipped Madry-style baseline (L-inf 0.3) and on the paper ReabsNet's joint model (the distilled master and the
guardian, L-inf 0.1, the "rejected" class not a success), the first N test images, each run twice in turn.

    PYTHONPATH=src python bench/precision.py --n 200 --threads 1

Prints one line per run: seconds and the images broken (judged by `finish` on the float32 network). bfloat16 pays
only on a CPU with the AVX-512 BF16 instructions (or a GPU); elsewhere autocast emulates it and runs slower.

`--compile`: the eager networks against `torch.compile`d ones (float32, dynamic shapes: an attack's batch shrinks
as examples break), each attack called twice, so the first call's seconds include compiling:

    PYTHONPATH=src python bench/precision.py --n 50 --threads 1 --models madry --attacks apgd --compile
"""

from __future__ import annotations

import argparse
import time

import torch

from reabsnet import data
from reabsnet.attacks import JointLogits, LowPrecision, apgd, apgd_t, fab_t, square
from reabsnet.models import load_model
from reabsnet.report import machine
from reabsnet.stages import SHIPPED_MODELS


def attack(name: str, model, x, y, eps: float, reject: int | None, loss: str):
    if name == "apgd":
        return apgd(model, x, y, eps=eps, loss=loss, steps=100, reject=reject)
    if name == "apgd-t":
        return apgd_t(model, x, y, eps=eps, steps=100, targets=3, reject=reject)
    if name == "square":
        return square(model, x, y, eps=eps, queries=1000, reject=reject)
    return fab_t(model, x, y, eps=eps, steps=100, targets=3, reject=reject)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--attacks", default="apgd,apgd-t,square,fab-t")
    parser.add_argument("--models", default="madry,joint")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="eager against torch.compile, not fp32 against bf16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = SHIPPED_MODELS / "mnist" / "paper"
    madry = load_model(folder / "madry.safetensors")[0].eval()
    master = load_model(folder / "master.safetensors", expect="master")[0].eval()
    guardian = load_model(folder / "guardian.safetensors", expect="guardian")[0].eval()
    models = {"madry": (madry, None, 0.3, "ce"), "joint": (JointLogits(master, guardian, 0.5).eval(), 10, 0.1, "dlr")}
    x, y = data.load("mnist").split("test", args.n)
    print(f"{machine().get('cpu_model', '?')}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
          f"{args.n} images")
    for tag in args.models.split(","):
        net, reject, eps, loss = models[tag]
        variants = ({"eager": net, "compiled": torch.compile(net, dynamic=True)} if args.compile
                    else {"fp32": net, "bf16": LowPrecision(net)})
        for name in args.attacks.split(","):
            for variant in [*variants, *variants] if not args.compile else [v for v in variants for _ in (1, 2)]:
                began = time.perf_counter()
                result = attack(name, variants[variant], x, y, eps, reject, loss)
                print(f"{tag} L-inf {eps:g} {name} {variant}: {time.perf_counter() - began:.1f} s, "
                      f"{int(result.success.sum())} broken", flush=True)


if __name__ == "__main__":
    main()
