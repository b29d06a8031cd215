"""`reabsnet reproduce --workers N` with a deadline on its first phase, for a job with a hard time limit (a batch
queue's wall-clock limit): the workers' unfinished tasks are stopped at `--deadline` seconds (their finished sets
stay), so the reproduction proper still has time to compute what is missing and write the report.

    python bench/gpu_reproduce.py --profile paper --set adaptive.restarts=1 --set adaptive.pipeline_queries=300 \\
        --set adaptive.harden_n=0 --workers 8 --deadline 380 --copy-to gpu-report

Networks come from the shipped models (the paper profile's baseline method is the shipped baseline's, `short-pgd`,
on every device). Prints one JSON line per phase. `bench/gpu_reproduce.sh` wraps it with a time limit and a log.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import torch

from reabsnet.artifacts import copy_files
from reabsnet.prebuild import prebuild
from reabsnet.profiles import get_profile
from reabsnet.reproduce import REPORT_FILES, reproduce
from reabsnet.runtime import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--home", help="data/artifact home (default: $REABSNET_HOME or ~/.cache/reabsnet)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=0, help="stop phase 1's tasks after this many seconds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--copy-to", help="also copy REPORT.md, results.json and the figures here")
    args = parser.parse_args()
    began = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="reabsnet: %(message)s", stream=sys.stderr)
    profile = get_profile(args.profile, args.overrides)
    device = resolve_device(args.device)
    torch.set_num_threads(2)
    summary = prebuild(profile, device, args.workers, home=args.home, deadline=args.deadline)
    print(json.dumps({"phase": 1, **summary}), flush=True)
    out = reproduce(profile, device, home=args.home, command="python bench/gpu_reproduce.py " + " ".join(sys.argv[1:]),
                    prebuilt=summary)
    copy_files(out, REPORT_FILES, args.copy_to)
    print(json.dumps({"phase": 2, "report": str(out / "REPORT.md"),
                      "wall_seconds": round(time.perf_counter() - began, 1)}), flush=True)


if __name__ == "__main__":
    main()
