"""One network alone (the Madry-style baseline or the master) at one adaptive bound: AutoAttack's standard ensemble
(APGD-CE, then APGD-T, FAB-T and Square on what it left standing) plus APGD-DLR, on the first N test images, with
the sets the reproduction's adaptive evaluation would build (same keys, so either reuses the other's).

    PYTHONPATH=src python bench/baseline_bound.py --who madry --norm l2 --eps 2.0 --n 300 \\
        --set baseline.method=short-pgd --set adaptive.restarts=1

Prints one JSON line: the robust accuracy (worst case with APGD-DLR, and AutoAttack alone) with its count and 95%
interval, each attack's images attacked and broken, and the seconds each set took.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from reabsnet.prebuild import networks
from reabsnet.profiles import get_profile
from reabsnet.runtime import resolve_device
from reabsnet.security.api import evaluate_profile, profile_target
from reabsnet.stages import run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--who", choices=("madry", "master"), default="madry")
    parser.add_argument("--norm", choices=("linf", "l2"), default="l2")
    parser.add_argument("--eps", type=float, default=2.0)
    parser.add_argument("--n", type=int, default=300, help="first N test images")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--home", help="data/artifact home (default: $REABSNET_HOME or ~/.cache/reabsnet)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="reabsnet: %(message)s", stream=sys.stderr)
    began = time.perf_counter()
    profile = get_profile(args.profile, [*args.overrides, f"adaptive.n={args.n}"])
    device = resolve_device(args.device)
    splits, master, master_meta, guardian, guardian_meta, madry, madry_meta = networks(profile, device, args.home)
    timings: dict[str, float] = {}
    baseline = {"master": (master, master_meta), "madry": (madry, madry_meta)}[args.who]
    target = profile_target(profile, splits, None, master_meta, guardian_meta, {args.who: baseline}, master=master)
    result = evaluate_profile(profile, splits, target, run_dir(splits.name, profile.name, args.home), timings,
                              bounds=[(args.norm, args.eps)], sanity=False)
    (bound,) = result["bounds"].values()
    print(json.dumps({"who": args.who, "bound": f"{args.norm} {args.eps:g}", "n": args.n,
                      "clean": result["clean"][args.who], "robust": bound[args.who],
                      "autoattack": bound[f"{args.who}_autoattack"], "per_attack": bound["per_attack"],
                      "set_seconds": {k: round(v, 1) for k, v in timings.items()},
                      "wall_seconds": round(time.perf_counter() - began, 1)}))


if __name__ == "__main__":
    main()
