"""The binarization test (Zimmermann et al. 2022) on the shipped paper networks: the reject policy (and its
inverted control) and ReabsNet around the distilled master and the paper guardian, and the Madry-style baseline,
at each L-inf bound, with the adaptive suite's main attacks.

    PYTHONPATH=src python bench/binarization.py --n 100 --steps 100 --queries 1000 \\
        --out docs/results/mnist-paper/BINARIZATION.md

Writes the report's binarization table to --out (atomically, after each bound) and the raw results beside it
as JSON.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import torch

from reabsnet import data
from reabsnet.artifacts import data_home, write_bytes_atomic, write_json_atomic
from reabsnet.models import load_model
from reabsnet.pretrained import load_pretrained
from reabsnet.report import machine
from reabsnet.security.binarization import run_tests, well_apart
from reabsnet.security.report import binarization_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="the first N test images whose balls are disjoint")
    parser.add_argument("--bounds", default="0.1,0.2,0.3", help="L-inf bounds")
    parser.add_argument("--steps", type=int, default=100, help="APGD and Orthogonal PGD steps")
    parser.add_argument("--queries", type=int, default=1000, help="Square's queries")
    parser.add_argument("--guardian", help="a guardian checkpoint in place of the shipped one (e.g. one of "
                        "bench/guardian_sharpness.py's)")
    parser.add_argument("--master", help="a master checkpoint in place of the shipped one (e.g. the `quick` "
                        "profile's runs/mnist/quick/master.safetensors)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also test the Madry-style baseline (default: yes)")
    parser.add_argument("--out", default="BINARIZATION.md")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="reabsnet: %(message)s", stream=sys.stderr)
    began = time.perf_counter()
    net, madry = load_pretrained("mnist-paper"), load_pretrained("mnist-paper-madry")
    if args.guardian:
        net.guardian = load_model(args.guardian, expect="guardian")[0].eval()
    if args.master:
        net.master = load_model(args.master, expect="master")[0].eval()
    x, _ = data.load("mnist").split("test", 0)
    out, results = Path(args.out), {}
    for eps in [float(e) for e in args.bounds.split(",")]:
        xs = x[well_apart(x, eps, "linf", args.n)]
        budget = {"eps": eps, "steps": args.steps, "queries": args.queries}
        tests = {"ReabsNet": run_tests(net.master, xs, guardian=net.guardian,
                                       policies=("reject", "reject-inverted", "revise"), **budget)}
        if args.baseline:
            tests["Madry-style baseline"] = run_tests(madry, xs, **budget)
        results[f"linf {eps:g}"] = {"images": len(xs), "tests": tests}
        logging.info("L-inf %g done (%.0f s)", eps, time.perf_counter() - began)
        write_json_atomic(out.with_suffix(".json"), {"results": results, "args": {
            k: portable(v) if k in ("master", "guardian") and v else v for k, v in vars(args).items() if k != "out"}})
        whose = "the shipped networks" if not (args.master or args.guardian) else "other networks: see the command"
        text = [f"# Binarization test of the adaptive suite's attacks (profile `paper`, {whose})", "",
                f"Command: `PYTHONPATH=src python bench/binarization.py --n {args.n} --bounds {args.bounds} "
                f"--steps {args.steps} --queries {args.queries}"
                + ("" if args.baseline else " --no-baseline")
                + (f" --guardian {portable(args.guardian)}" if args.guardian else "")
                + (f" --master {portable(args.master)}" if args.master else "") + "`  ",
                f"Machine: {machine().get('cpu_model', platform.machine())}, {torch.get_num_threads()} thread(s), "
                f"torch {torch.__version__}; {(time.perf_counter() - began) / 60:.0f} min.", "",
                f"Images: the first {args.n} test images whose L-inf balls are pairwise disjoint (at these bounds "
                "MNIST's first test images are). Attacks: APGD-CE (classifier, pipeline through the "
                "modifier by BPDA and unrolled, joint with the guardian), Square, Orthogonal PGD, "
                f"{args.steps} steps, 1 restart, Square {args.queries} queries (the committed report: APGD 100 "
                "steps, Square 5,000).", *binarization_lines(results)]
        write_bytes_atomic(out, ("\n".join(text) + "\n").encode())


def portable(path: str) -> str:
    """A path under the data home as $REABSNET_HOME/...: the command in a committed report names no machine."""
    home = str(data_home())
    return "$REABSNET_HOME" + str(path)[len(home):] if str(path).startswith(home) else str(path)


if __name__ == "__main__":
    main()
