"""Is one GPU saturated by several attack processes, or idle between their kernel launches? The same adaptive
attack shard timed in one process alone, then in N processes at once (the setting of bench/gpu_reproduce.py).

    PYTHONPATH=src python bench/gpu_contention.py --procs 8 --steps 30

Each process loads the shipped paper networks and runs the paper pipeline's two slowest kinds of set (measured in
bench/gpu_reproduce.py's run): APGD-DLR through the modifier's unrolled DeepFool steps, and Square on the joint
logits, on the first `--n` test images at L-inf 0.1. If N processes take about as long as one, the GPU was idle
between launches and more processes (or finer work items) buy wall time; if N times as long, the GPU was full.
Prints one JSON line per phase.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.multiprocessing as mp

from reabsnet import data
from reabsnet.attacks import JointLogits, get_attack
from reabsnet.pretrained import build_reabsnet
from reabsnet.profiles import get_profile
from reabsnet.runtime import resolve_device
from reabsnet.security.networks import variant
from reabsnet.train import train_master
from reabsnet.train.guardian import train_guardian


def work(args) -> dict:
    torch.set_num_threads(args.threads)
    profile = get_profile("paper")
    device = resolve_device("auto")
    splits = data.load("mnist")
    master, master_meta = train_master(profile, splits, device)
    guardian, _ = train_guardian(profile, splits, master, master_meta, device)
    defended = build_reabsnet(profile, master, guardian)
    x, y = (t[:args.n].to(device) for t in splits.split("test"))
    times = {}
    for name, model, attack, settings in (
            ("unrolled apgd-dlr", variant(defended, backward="unrolled"), "apgd",
             {"eps": 0.1, "norm": "linf", "loss": "dlr", "steps": args.steps}),
            ("joint square", JointLogits(master, guardian, defended.threshold).eval(), "square",
             {"eps": 0.1, "norm": "linf", "queries": args.queries, "reject": splits.classes})):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        get_attack(attack)(model, x, y, **settings)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times[name] = round(time.perf_counter() - began, 2)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--steps", type=int, default=30, help="APGD steps (the paper profile: 100)")
    parser.add_argument("--queries", type=int, default=1000, help="Square queries (the paper profile: 5,000)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:        # a fresh process, so both phases pay the same start-up
        print(json.dumps({"procs": 1, "times": pool.apply(work, (args,))}), flush=True)
    with ctx.Pool(args.procs) as pool:
        began = time.perf_counter()
        times = pool.map(work, [args] * args.procs)
        print(json.dumps({"procs": args.procs, "times": times, "wall": round(time.perf_counter() - began, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
