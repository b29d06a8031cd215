"""`torch.compile`d networks against eager ones inside an attack: APGD-CE on the shipped Madry-style baseline
(L-inf 0.3) and APGD-DLR on the paper ReabsNet's joint model (L-inf 0.1), the first N test images, float32.

    PYTHONPATH=src python bench/compiled.py --n 100 --threads 2

Per run: the seconds of the first call (which includes compiling, once per batch shape torch sees) and of a second
call on the same images, and the images broken. An attack's working batch shrinks as examples break, so the
compiled network is built with dynamic shapes (one graph for every batch size).
"""

from __future__ import annotations

import argparse
import time

import torch

from reabsnet import data
from reabsnet.attacks import JointLogits, apgd
from reabsnet.evaluation.report import machine
from reabsnet.models import load_model
from reabsnet.stages import SHIPPED_MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--models", default="madry,joint")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = SHIPPED_MODELS / "mnist" / "paper"
    madry = load_model(folder / "madry.safetensors")[0].eval()
    master = load_model(folder / "master.safetensors", expect="master")[0].eval()
    guardian = load_model(folder / "guardian.safetensors", expect="guardian")[0].eval()
    nets = {"madry": (madry, None, 0.3, "ce"), "joint": (JointLogits(master, guardian, 0.5).eval(), 10, 0.1, "dlr")}
    x, y = data.load("mnist").split("test", args.n)
    print(f"{machine().get('cpu_model', '?')}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
          f"{args.n} images")
    for tag in args.models.split(","):
        net, reject, eps, loss = nets[tag]
        for mode in ("eager", "compiled"):
            model = net if mode == "eager" else torch.compile(net, dynamic=True)
            times, broken = [], []
            for _ in range(2):
                began = time.perf_counter()
                result = apgd(model, x, y, eps=eps, loss=loss, steps=100, reject=reject)
                times.append(time.perf_counter() - began)
                broken.append(int(result.success.sum()))
            print(f"{tag} L-inf {eps:g} APGD-{loss.upper()} {mode}: first call {times[0]:.1f} s, second "
                  f"{times[1]:.1f} s, broken {broken}", flush=True)


if __name__ == "__main__":
    main()
