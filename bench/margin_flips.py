"""How many verdicts of the paper ReabsNet flip when an attack's examples are judged again, with and without a success
margin. APGD-DLR on the joint network (the README quickstart's attack) at each margin, on the first N test images;
each final example judged by the pipeline in the attack's batch, alone (a batch of one) and with one thread instead
of the default. An example on the guardian's boundary can change verdict between them; with a margin the attack
goes on past the boundary.

    PYTHONPATH=src python bench/margin_flips.py --n 100 --eps 0.3 --margins 0,0.05,0.5

Prints one JSON line per margin: the attack's success rate, how many examples lead by less than the margin on the
joint logits, and how many verdicts (ReabsNet: right; reject policy: rejected or right) differ between judgements.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import reabsnet
from reabsnet import data
from reabsnet.attacks import JointLogits, apgd
from reabsnet.attacks.common import lead
from reabsnet.report import machine


def verdicts(net, x_adv: torch.Tensor, y: torch.Tensor, alone: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ReabsNet right, reject policy: rejected or right) per example, in one batch or one example at a time."""
    preds = [net.predict(x_adv[i:i + 1]) for i in range(len(x_adv))] if alone else [net.predict(x_adv)]
    label = torch.cat([p.label for p in preds])
    flagged = torch.cat([p.flagged for p in preds])
    return label == y, flagged | (label == y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--margins", default="0,0.05,0.5")
    args = ap.parse_args()
    net = reabsnet.load_pretrained("mnist-paper")
    x, y = data.load("mnist").split("test", args.n)
    joint = JointLogits(net.master, net.guardian, threshold=net.threshold).eval()
    threads = torch.get_num_threads()
    print(json.dumps({"machine": machine(), "torch": torch.__version__, "threads": threads, **vars(args)}))
    for m in (float(v) for v in args.margins.split(",")):
        began = time.perf_counter()
        r = apgd(joint, x, y, eps=args.eps, loss="dlr", steps=args.steps, reject=10, margin=m)
        seconds = time.perf_counter() - began
        with torch.no_grad():
            short = int((r.success & (lead(joint(r.x_adv), y, None, 10) < max(m, 1e-3))).sum())
        batch = verdicts(net, r.x_adv, y)
        alone = verdicts(net, r.x_adv, y, alone=True)
        torch.set_num_threads(1)
        one_thread = verdicts(net, r.x_adv, y)
        torch.set_num_threads(threads)
        flips = {f"{name} {kind}": int((a != b).sum()) for name, other in (("alone", alone),
                                                                           ("one thread", one_thread))
                 for kind, a, b in (("reabsnet", batch[0], other[0]), ("reject", batch[1], other[1]))}
        print(json.dumps({"margin": m, "success": round(float(r.success.float().mean()), 3),
                          "success_leading_by_under_max(margin,0.001)": short,
                          "reabsnet": round(float(batch[0].float().mean()), 3),
                          "reject_policy": round(float(batch[1].float().mean()), 3),
                          "flips": flips, "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
