"""`reabsnet reproduce --workers N`: the reproduction's attack sets built first by N processes sharing the device,
then the reproduction itself, which finds every set on disk and judges, reports and plots.

Why processes: an attack's steps are runs of small kernel launches on a few hundred images, so one process leaves a
GPU partly idle. Measured on an H200 (bench/gpu_contention.py): eight processes running the same adaptive attacks
each took 4.5-5x as long as one alone, so eight give about 1.6-1.8x the throughput of one. On a CPU the cores are
split between the workers instead, as torchrun's ranks split them.

The sets fall into independent tasks, each the reproduction's own call with its own arguments (so every set gets
the key `reproduce` looks for): Tables 1-3's sets on the master and on the Madry-style baseline, PGD at each bound,
the joint CW-L2 set, the sanity checks' two sets, and at each adaptive bound the attacks on the defense, on the
master alone and on the baseline. Workers take the tasks longest first. A task's sets are written atomically as
they finish, so a stopped run keeps them; two processes that happen to build the same set both succeed (the second
takes the first's).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from reabsnet.evaluation.paper import attack_sets
from reabsnet.evaluation.table3 import pgd_specs
from reabsnet.pretrained import build_reabsnet
from reabsnet.profiles import Profile
from reabsnet.reproduce import networks
from reabsnet.runtime import resolve_device
from reabsnet.security.api import evaluate_profile, profile_setup, profile_target, threats
from reabsnet.security.engine import minimal_step, start
from reabsnet.security.sanity import sanity_sets
from reabsnet.security.suite import Suite
from reabsnet.stages import SHIPPED_MODELS, run_dir

log = logging.getLogger(__name__)

# Each task's seconds in the paper profile's first GPU run (one H100, 8 processes; docs/benchmarks.md), for the
# order: the longest first, then the short joint CW-L2 set that two L2 tasks need midway, then the rest.
MEASURED = {"adaptive linf 0.1 defense": 318, "adaptive linf 0.2 defense": 256, "adaptive l2 1.5 defense": 244,
            "adaptive l2 2 defense": 234, "adaptive linf 0.3 madry": 199, "tables master": 161, "tables madry": 129,
            "adaptive cw": 0, "adaptive l2 2 master": 72, "adaptive linf 0.3 defense": 71,
            "adaptive l2 1.5 madry": 69, "adaptive l2 1.5 master": 64, "adaptive linf 0.1 master": 61,
            "adaptive linf 0.2 master": 61, "adaptive linf 0.2 madry": 60, "adaptive l2 2 madry": 40,
            "adaptive linf 0.1 madry": 33, "adaptive sanity": 30, "adaptive linf 0.3 master": 13, "pgd": 20}


def tasks(profile: Profile) -> list[str]:
    """Every task of the profile's reproduction, in the order workers take them."""
    names = ["tables master", "tables madry", "pgd"]
    if profile.adaptive.enabled:
        names += ["adaptive cw", "adaptive sanity"] + [f"adaptive {norm} {eps:g} {part}"
                                                       for norm, eps in threats(profile.adaptive)
                                                       for part in ("defense", "master", "madry")]
    order = list(MEASURED)
    return sorted(names, key=lambda t: order.index(t) if t in order else len(order))


def build_task(name: str, profile: Profile, device: torch.device, home=None,
               shipped: Path | None = SHIPPED_MODELS, nets: tuple | None = None) -> float:
    """Build (or reuse) one task's sets exactly as `reproduce` asks for them; returns its seconds. `nets`: what
    `networks()` returned, when the caller already holds them (a worker loads them once, not once per task)."""
    if name not in tasks(profile):
        raise ValueError(f"unknown task {name!r}; the profile's tasks: {', '.join(tasks(profile))}")
    began = time.perf_counter()
    splits, master, master_meta, guardian, guardian_meta, madry, madry_meta = (
        nets or networks(profile, device, home, shipped))
    out = run_dir(splits.name, profile.name, home)
    if name == "tables master":
        attack_sets(profile, splits, master, master_meta, out, {})
    elif name == "tables madry":
        attack_sets(profile, splits, madry, madry_meta, out, {}, subdir="attacks-madry", baseline=True)
    elif name == "pgd":
        for model, meta, subdir in ((master, master_meta, "attacks-pgd"), (madry, madry_meta, "attacks-madry-pgd")):
            attack_sets(profile, splits, model, meta, out, {}, specs=pgd_specs(), subdir=subdir,
                        n=profile.eval.n_pgd)
    elif name in ("adaptive cw", "adaptive sanity"):
        target = profile_target(profile, splits, build_reabsnet(profile, master, guardian), master_meta,
                                guardian_meta, {})
        setup = profile_setup(profile, splits, out, {})
        if name == "adaptive cw":
            suite = Suite.standard()
            cw = suite.only("joint-cw-l2-t").steps[0]
            minimal_step(start(target, suite, setup), cw, target.view(cw.network), 0.0)
        else:
            top = max((e for norm, e in threats(profile.adaptive) if norm == "linf"), default=None)
            sanity_sets(setup, *target.view("joint-ce"), single_eps=top)
    else:
        _, norm, eps, part = name.split()
        defended = build_reabsnet(profile, master, guardian) if part == "defense" else None
        baselines = {"master": (master, master_meta), "madry": (madry, madry_meta)}
        target = profile_target(profile, splits, defended, master_meta, guardian_meta,
                                {part: baselines[part]} if part != "defense" else {}, master=master)
        evaluate_profile(profile, splits, target, out, {}, bounds=[(norm, float(eps))], sanity=False)
    return time.perf_counter() - began


def _init(profile: Profile, device: str, home, shipped: Path | None, threads: int, quiet: bool) -> None:
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="reabsnet: %(message)s")
    _STATE.update(profile=profile, device=resolve_device(device), home=home, shipped=shipped)


_STATE: dict = {}


def _run(name: str) -> tuple[str, float, int]:
    log.info("task %s: started", name)
    args = _STATE["profile"], _STATE["device"], _STATE["home"], _STATE["shipped"]
    if "nets" not in _STATE:          # MNIST and the five networks, read and verified once per worker
        _STATE["nets"] = networks(*args)
    seconds = build_task(name, *args, nets=_STATE["nets"])
    log.info("task %s: %.0f s", name, seconds)
    return name, round(seconds, 1), os.getpid()


def prebuild(profile: Profile, device: torch.device, workers: int, home=None,
             shipped: Path | None = SHIPPED_MODELS, deadline: float = 0, quiet: bool = False) -> dict:
    """Build every task's sets with `workers` processes; stop the unfinished ones after `deadline` seconds (0:
    none). The networks are trained (or taken) here first, so the workers only read them. Returns what ran:
    {"seconds", "workers", "tasks": {name: seconds}, "stopped": [names]}."""
    began = time.perf_counter()
    networks(profile, device, home, shipped)
    names = tasks(profile)
    threads = max(1, (os.cpu_count() or 1) // workers)
    done: dict[str, float] = {}
    ctx = mp.get_context("spawn")       # CUDA cannot be forked
    pool = ctx.Pool(workers, initializer=_init, initargs=(profile, str(device), home, shipped, threads, quiet))
    try:
        pending = {name: pool.apply_async(_run, (name,)) for name in names}
        while pending and not (deadline and time.perf_counter() - began > deadline):
            for name, result in list(pending.items()):
                if result.ready():
                    done[name] = result.get()[1]       # re-raises a task's error here
                    del pending[name]
            time.sleep(0.5)
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    if pending:
        pool.terminate()           # the deadline: stop what is still running (its finished sets stay)
    else:
        pool.close()               # a clean exit lets the workers release their semaphores
    pool.join()
    summary = {"seconds": round(time.perf_counter() - began, 1), "workers": workers, "tasks": done,
               "stopped": list(pending)}
    log.info("prebuild: %s", json.dumps(summary))
    return summary
