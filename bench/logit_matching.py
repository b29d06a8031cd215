"""Logit matching (Tramer et al. 2020) on the shipped paper networks: the joint model's outputs (the distilled
master's logits over T, the guardian's two logits) matched to those of a natural validation image of another class,
at each L-inf bound; the reject policy and ReabsNet judged on its examples alone and, where --suite names a folder
of the adaptive suite's attack sets on the same images (bench/guardian_sharpness.py writes them), together with
every one of those sets (worst case per image, each example re-judged here and checked to lie within the bound).

    PYTHONPATH=src python bench/logit_matching.py --n 300 --suite <home>/adaptive/shipped \\
        --out docs/results/mnist-paper/LOGIT-MATCHING.md

Writes the markdown table to --out (atomically) and the raw results beside it as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from pathlib import Path

import torch

from reabsnet import data
from reabsnet.artifacts import write_bytes_atomic, write_json_atomic
from reabsnet.attacks import JointLogits, logit_matching
from reabsnet.attacks.run import load_set
from reabsnet.evaluation.stats import rate
from reabsnet.models import load_model
from reabsnet.pretrained import build_reabsnet
from reabsnet.profiles import get_profile
from reabsnet.rates import cell
from reabsnet.report import machine
from reabsnet.security.engine import eps_name
from reabsnet.stages import SHIPPED_MODELS


@torch.no_grad()
def judged(defended, joint, x_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the reject policy's outcome is acceptable (correct or rejected), ReabsNet's label is correct."""
    logits = joint(x_adv)
    label = logits.argmax(1)
    return (label == y) | (label == logits.shape[1] - 1), defended(x_adv).argmax(1) == y   # the last: rejected


def suite_held(folder: Path, eps: float, x: torch.Tensor, y: torch.Tensor, defended, joint
               ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Both models' per-image outcomes under every stored attack set at `eps` but the suite's own logit matching
    (survivor sets cover the images their sidecar's `indices` name), each example re-judged here."""
    policy, ours = torch.ones(len(y), dtype=torch.bool), torch.ones(len(y), dtype=torch.bool)
    names = []
    for path in sorted(folder.glob(f"*-linf-{eps_name(eps)}.npz")):
        if "logit-matching" in path.name:        # the suite's own logit matching: "the suite" here is the rest
            continue
        arrays, meta = load_set(path)
        where = torch.tensor(meta["indices"]) if "indices" in meta else torch.arange(len(arrays["x"]))
        if meta.get("n") != len(x) or not torch.equal(arrays["x"], x[where]):
            raise SystemExit(f"{path}: its images are not the first {len(x)} test images")
        if float((arrays["x_adv"] - arrays["x"]).abs().amax()) > eps + 1e-5:
            raise SystemExit(f"{path}: an example lies outside L-inf {eps:g}")
        a, b = judged(defended, joint, arrays["x_adv"], y[where])
        policy[where] &= a
        ours[where] &= b
        names.append(path.stem)
    return policy, ours, names


def render(rows: list[dict], args, seconds: float) -> str:
    brief = functools.partial(cell, ci=None, empty="-")         # rate (count/n), "-" where nothing was counted
    lines = ["# Logit matching (Tramer et al. 2020) on the shipped paper networks", "",
             f"Command: `PYTHONPATH=src python bench/logit_matching.py --n {args.n} --guides {args.guides} "
             f"--steps {args.steps} --candidates {args.candidates}"
             + (" --suite <the adaptive suite's sets>" if args.suite else "") + "`  ",
             f"Machine: {machine().get('cpu_model', platform.machine())}, {torch.get_num_threads()} thread(s), "
             f"torch {torch.__version__}; {seconds / 60:.1f} min in all.", "",
             f"The attack: per test image, the validation image (of the first {args.guides}) nearest in L2 that the "
             f"reject policy classifies, unflagged, as another class; signed steps descend the squared distance "
             f"between the joint outputs (master logits / T, guardian logits) of the two, {args.steps} steps from "
             f"eps/4 decaying linearly, the {args.candidates} nearest guides in turn. Its first success "
             "(misclassified by the master and not flagged at the paper's threshold 0.5) also fools ReabsNet, "
             "whose modifier leaves unflagged inputs alone; both are judged here on the real networks.", "",
             f"First {args.n} test images. Reject policy: correct or rejected; ReabsNet: correct. The suite: "
             "every attack set of the adaptive suite but its own logit matching, on the same images "
             "(bench/guardian_sharpness.py, `make reproduce`'s budgets), re-judged here; with: the worst case per "
             "image over both.", "",
             "| L-inf | logit matching: success | reject policy, logit matching | reject policy, suite | "
             "reject policy, suite with it | ReabsNet, logit matching | ReabsNet, suite | ReabsNet, suite with it "
             "| images it broke that the suite left standing (policy / ReabsNet) | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['eps']:g} | {r['success']['rate']:.3f} | {brief(r['policy'])} | "
                     f"{brief(r.get('policy_suite'))} | {brief(r.get('policy_worst'))} | {brief(r['reabsnet'])} | "
                     f"{brief(r.get('reabsnet_suite'))} | {brief(r.get('reabsnet_worst'))} | "
                     f"{r.get('new_policy', '-')} / {r.get('new_reabsnet', '-')} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="first N test images")
    parser.add_argument("--guides", type=int, default=1000, help="first N validation images to match")
    parser.add_argument("--bounds", default="0.1,0.2,0.3", help="L-inf bounds")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--suite", help="a folder of the adaptive suite's attack sets on the same images")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="LOGIT-MATCHING.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    master, meta = load_model(SHIPPED_MODELS / "mnist" / "paper" / "master.safetensors", expect="master")
    guardian, _ = load_model(SHIPPED_MODELS / "mnist" / "paper" / "guardian.safetensors", expect="guardian")
    defended = build_reabsnet(get_profile("paper"), master.eval(), guardian.eval())
    joint = JointLogits(master, guardian, 0.5, 1 / float(meta["temperature"])).eval()
    splits = data.load("mnist")
    x, y = splits.split("test", args.n)
    pool, _ = splits.split("val", args.guides)
    clean_policy, clean_ours = judged(defended, joint, x, y)
    rows = []
    for eps in (float(v) for v in args.bounds.split(",")):
        started = time.perf_counter()
        res = logit_matching(joint, x, y, guides=pool, eps=eps, steps=args.steps, candidates=args.candidates,
                             reject=splits.classes)
        policy, ours = judged(defended, joint, res.x_adv, y)
        policy, ours = policy & clean_policy, ours & clean_ours
        row = {"eps": eps, "success": rate(res.success), "policy": rate(policy), "reabsnet": rate(ours),
               "seconds": time.perf_counter() - started}
        if args.suite:
            s_policy, s_ours, names = suite_held(Path(args.suite), eps, x, y, defended, joint)
            s_policy, s_ours = s_policy & clean_policy, s_ours & clean_ours
            row |= {"policy_suite": rate(s_policy), "reabsnet_suite": rate(s_ours),
                    "policy_worst": rate(s_policy & policy), "reabsnet_worst": rate(s_ours & ours),
                    "new_policy": int((s_policy & ~policy).sum()), "new_reabsnet": int((s_ours & ~ours).sum()),
                    "suite_sets": names}
        rows.append(row)
        write_json_atomic(Path(args.out).with_suffix(".json"), {"rows": rows, "args": vars(args) | {
            "out": None, "suite": Path(args.suite).name if args.suite else None}})
        write_bytes_atomic(Path(args.out), render(rows, args, time.perf_counter() - began).encode())
        print(json.dumps({k: v for k, v in row.items() if k != "suite_sets"}), flush=True)


if __name__ == "__main__":
    main()
