"""Build the ablation's factor-a CW sets (reference settings, and the profile's preset on the same images) with
several processes sharing one GPU, in shards that `reabsnet ablate` then reuses on any machine.

    PYTHONPATH=src python bench/reference_sets.py --profile paper --n 1000 --workers 4 --deadline 420
    # copy <home>/runs/mnist/paper/ablation/ to the evaluating machine, then
    reabsnet ablate --profile paper --set ablation.n_cw_l2_reference=1000 --set ablation.n_cw_linf_reference=1000

Why processes: in CW's tails a few examples remain and each step is a run of small kernel launches, so one
process leaves a GPU mostly idle. Each worker computes whole shards of `SHARD` images exactly as `attack_sets`
does (same settings, targets and batch), written atomically under the set's `.parts/<key>/` with the seconds it
took and the device; first shards first, so a deadline leaves whole sets of the first images. A set whose shards
all exist is merged into its artifact here; one cut short by the deadline becomes the set of the images its
finished first shards hold (--n smaller), and the rest stays on disk for a later run. Prints one JSON line per
shard and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from reabsnet import data
from reabsnet.artifacts import is_valid, load_tensors, save_tensors
from reabsnet.attacks import get_attack
from reabsnet.evaluation.paper import SHARD, attack_sets, save_shard, set_inputs, set_key, set_settings
from reabsnet.profiles import get_profile, with_preset
from reabsnet.runtime import resolve_device
from reabsnet.stages import run_dir
from reabsnet.studies.ablation import SPECS
from reabsnet.train import train_master

KEYS = ("cw-l2-u", "cw-linf-u", "cw-l2-t", "cw-linf-t")


def plan(profile, splits, master_meta, out, n: int, presets: list[str]) -> list[dict]:
    """Every shard of every set, with whether it is on disk already: first shards of every set before second
    ones, so a deadline leaves whole sets of the first images (each preset in the order given)."""
    jobs = []
    for preset in presets:
        p = with_preset(profile, preset)
        # the ablation's subdirs: reference sets under attacks-<reference>, the profile's own preset on the
        # reference images under attacks-reference-images-<preset>
        subdir = f"attacks-{preset}" if preset != profile.eval.preset else f"attacks-reference-images-{preset}"
        for key in KEYS:
            set_k = set_key(p.eval, SPECS[key], n, master_meta, splits)
            for start in range(0, n, SHARD):
                part = out / subdir / ".parts" / set_k / f"{start:06d}.safetensors"
                jobs.append({"preset": preset, "subdir": subdir, "set": key, "key": set_k, "start": start,
                             "part": str(part), "done": is_valid(part, set_k)})
    return sorted(jobs, key=lambda j: j["start"])     # stable: the presets' order within each start


_STATE: dict = {}


def _init(profile_name: str, overrides: list[str], home: str | None, device: str) -> None:
    torch.set_num_threads(1)
    profile = get_profile(profile_name, overrides)
    splits = data.load(profile.dataset, home=home)
    master, _ = train_master(profile, splits, resolve_device(device), home)
    _STATE.update(profile=profile, splits=splits, master=master)


def _work(job: dict) -> dict:
    profile, splits, master = _STATE["profile"], _STATE["splits"], _STATE["master"]
    p, spec = with_preset(profile, job["preset"]), SPECS[job["set"]]
    x, y, target = set_inputs(p.eval, spec, splits, job["n"])
    sl = slice(job["start"], job["start"] + SHARD)
    seconds = save_shard(Path(job["part"]), job["key"], job["start"], get_attack(spec.attack), master, x[sl], y[sl],
                         target[sl] if target is not None else None, set_settings(p.eval, spec),
                         desc=f"{job['preset']} {job['set']}")
    return {**job, "seconds": round(seconds, 1), "pid": os.getpid()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--home", help="data/artifact home (default: $REABSNET_HOME or ~/.cache/reabsnet)")
    parser.add_argument("--n", type=int, default=1000, help="first test images of every set (default 1,000)")
    parser.add_argument("--presets", default="paper,quick",
                        help="CW presets to build, in order (default: paper,quick = reference, then the profile's)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=0, help="stop starting shards after this many seconds; "
                        "running ones are stopped and left to a later run (0: none)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    began = time.perf_counter()
    profile = get_profile(args.profile, args.overrides)
    splits = data.load(profile.dataset, home=args.home)
    device = resolve_device(args.device)
    master, master_meta = train_master(profile, splits, device, args.home)
    out = run_dir(splits.name, profile.name, args.home) / "ablation"
    jobs = [{**j, "n": args.n} for j in plan(profile, splits, master_meta, out, args.n, args.presets.split(","))]
    todo = [j for j in jobs if not j["done"]]
    print(json.dumps({"shards": len(jobs), "to_compute": len(todo), "workers": args.workers,
                      "device": str(device)}), flush=True)
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers, initializer=_init, initargs=(args.profile, args.overrides, args.home,
                                                              args.device)) as pool:
        pending = [pool.apply_async(_work, (j,)) for j in todo]
        while pending:
            if args.deadline and time.perf_counter() - began > args.deadline:
                print(json.dumps({"deadline": args.deadline, "unfinished": len(pending)}), flush=True)
                pool.terminate()
                break
            ready = [r for r in pending if r.ready()]
            for r in ready:
                print(json.dumps(r.get()), flush=True)      # re-raises a worker's error here
                pending.remove(r)
            time.sleep(0.5)
    merged = {}
    for preset in args.presets.split(","):
        p = with_preset(profile, preset)
        for key in KEYS:
            shards = [j for j in jobs if j["preset"] == preset and j["set"] == key]
            done = 0
            while done < len(shards) and is_valid(Path(shards[done]["part"]), shards[done]["key"]):
                done += 1
            if not done:
                continue
            n = min(done * SHARD, args.n)
            if done < len(shards):
                # the finished first shards are exactly the set of their images (targets are drawn in order,
                # so the first images' targets do not depend on the set's size): file them under that set's key
                small = set_key(p.eval, SPECS[key], n, master_meta, splits)
                for j in shards[:done]:
                    tensors, meta = load_tensors(Path(j["part"]))
                    save_tensors(out / j["subdir"] / ".parts" / small / Path(j["part"]).name, tensors,
                                 {**{k: meta[k] for k in ("start", "seconds", "device")}, "key": small})
            (arrays, meta), = attack_sets(p, splits, master, master_meta, out, {}, specs=[SPECS[key]],
                                          subdir=shards[0]["subdir"], n=n).values()
            merged[f"{preset}/{key}"] = {"n": n, "success": float(arrays["success"].float().mean()),
                                         "compute_seconds": round(meta["compute_seconds"], 1),
                                         "device": meta["device"]}
    print(json.dumps({"merged": merged, "wall_seconds": round(time.perf_counter() - began, 1)}), flush=True)


if __name__ == "__main__":
    main()
