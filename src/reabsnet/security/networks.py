"""The networks the adaptive suite differentiates (the views of `suite.NETWORKS`), each with the digest its attack
sets are keyed by. The digests are those the sets were first stored under: a view's key must not change when the
code around it does, or every stored set is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from reabsnet.artifacts import stage_key
from reabsnet.attacks import JointLogits, LowPrecision, Scaled
from reabsnet.defense import ReabsNet
from reabsnet.security.suite import TUNED_THRESHOLD

PRECISIONS = {"bf16": torch.bfloat16}   # a baseline's search precision -> the autocast dtype
LOW_PRECISION_ATTACKS = ("apgd", "apgd-t", "square")   # measured as strong in bfloat16; FAB-T's boundary steps not


def digest(*metas: dict, extra=()) -> dict:
    """The identity of a network built from others (their digests) and `extra` settings."""
    return {"sha256": stage_key("composite", [m["sha256"] for m in metas], list(extra))}


def unscale_of(meta: dict) -> float:
    """1 / a master's distillation temperature (1 for an undistilled master): the factor that takes its deployed
    logits back to the scale it was trained at, where cross-entropy has gradients."""
    return 1.0 / float(meta.get("temperature") or 1.0)


def variant(net: ReabsNet, master: nn.Module | None = None, backward: str | None = None,
            guardian: nn.Module | None = None) -> ReabsNet:
    """`net` with its modifier settings, another master, guardian and/or backward pass."""
    return ReabsNet(master if master is not None else net.master,
                    guardian if guardian is not None else net.guardian, threshold=net.threshold,
                    revise_to=net.revise_to, overshoot=net.overshoot, max_iter=net.max_iter, box=net.box,
                    backward=backward or net.backward, norm=net.norm, extra_steps=net.extra_steps).eval()


@dataclass
class Baseline:
    """A classifier the suite's baseline steps attack. `unscale`: the factor its "-ce" view multiplies the logits
    by, or None for no such view (the network itself); `precision`: the search precision of its cheap attacks."""

    net: nn.Module
    meta: dict
    unscale: float | None = None
    precision: str = "fp32"
    speedup: float | None = None     # bfloat16's timed speed-up where `adaptive.precision=auto` timed it


@dataclass
class Target:
    """What one adaptive evaluation attacks: the defense (None: the baselines only), the master its clean
    accuracy is read from, and the baselines by name."""

    defense: ReabsNet | None
    master: nn.Module
    master_meta: dict
    guardian_meta: dict | None = None
    baselines: dict[str, Baseline] = field(default_factory=dict)
    guides: torch.Tensor | None = None       # natural images logit matching matches (None: no such step)

    @property
    def unscale(self) -> float:
        return unscale_of(self.master_meta)

    @property
    def paper_modifier(self) -> bool:
        """Only the paper's modifier (L2 DeepFool, no extra steps) can be unrolled."""
        d = self.defense
        return (d.norm, d.extra_steps) == ("l2", 0)

    def pipeline_meta(self) -> dict:
        d = self.defense
        # the modifier's norm and extra steps enter the digest only where they are not the paper's (older keys hold)
        departures = () if self.paper_modifier else (d.norm, d.extra_steps)
        return digest(self.master_meta, self.guardian_meta,
                      extra=("pipeline", d.threshold, d.revise_to, d.overshoot, d.max_iter, *departures))

    def joint(self, scaled: bool) -> tuple[nn.Module, dict]:
        """The joint logits at the defense's threshold, the master's logits / T where `scaled`."""
        d = self.defense
        meta = digest(self.master_meta, self.guardian_meta, extra=("joint", d.threshold))
        if not scaled:
            return JointLogits(d.master, d.guardian, d.threshold).eval(), meta
        return JointLogits(d.master, d.guardian, d.threshold, self.unscale).eval(), digest(meta, extra=("scale",
                                                                                                 self.unscale))

    def joint_at(self, threshold: float, scaled: bool) -> tuple[nn.Module, dict]:
        """The joint logits with the guardian's threshold moved to `threshold` (a tuned or calibrated one)."""
        d, u = self.defense, self.unscale
        extra = ("joint", threshold, "scale", u) if scaled else ("joint", threshold)
        return (JointLogits(d.master, d.guardian, threshold, u if scaled else 1.0).eval(),
                digest(self.master_meta, self.guardian_meta, extra=extra))

    def view(self, name: str, threshold: float | None = None) -> tuple[nn.Module, dict] | None:
        """The defense's network `name` (suite.NETWORKS) and its digest; None where this defense has no such view
        (an unrolled view of a modifier other than the paper's, logit matching without natural images)."""
        d, u = self.defense, self.unscale
        if name in ("joint", "joint-ce"):
            return self.joint(name == "joint-ce")
        if name == "joint-tuned":
            return self.joint_at(TUNED_THRESHOLD, scaled=False)
        if name == "joint@fpr":
            return self.joint_at(threshold, scaled=True)
        if name in ("joint-guided", "joint-guided@fpr"):
            if self.guides is None or not len(self.guides):
                return None
            joint, meta = self.joint(scaled=True) if name == "joint-guided" else self.joint_at(threshold, scaled=True)
            joint.guides = self.guides
            return joint, digest(meta, extra=("guides", len(self.guides)))
        if name.startswith("unrolled") and not self.paper_modifier:
            return None      # another modifier is attacked through BPDA and the joint logits
        pipeline = self.pipeline_meta()
        unrolled = variant(d, backward="unrolled") if name.startswith("unrolled") else None
        return {"bpda": lambda: (d, pipeline), "pipeline": lambda: (d, pipeline),
                "bpda-ce": lambda: (Scaled(d, u).eval(), digest(pipeline, extra=("scale", u))),
                "unrolled": lambda: (unrolled, digest(pipeline, extra=("unrolled",))),
                "bpda-pair": lambda: (JointLogits(d, d.guardian, d.threshold, u).eval(),
                                      digest(pipeline, extra=("two-objectives", u))),
                "unrolled-pair": lambda: (JointLogits(unrolled, d.guardian, d.threshold, u).eval(),
                                          digest(pipeline, extra=("two-objectives", "unrolled", u))),
                }[name]()

    def baseline_view(self, who: str, network: str, attack: str) -> tuple[nn.Module, dict]:
        """Baseline `who`'s network for a step on `network` ("baseline" or "baseline-ce") running `attack`."""
        b = self.baselines[who]
        net, meta = b.net, b.meta
        if network == "baseline-ce" and b.unscale is not None:
            net, meta = Scaled(net, b.unscale).eval(), digest(meta, extra=("scale", b.unscale))
        if b.precision != "fp32" and attack in LOW_PRECISION_ATTACKS:
            # cheaper search passes where they were measured to find as much; every success judged in float32
            net, meta = LowPrecision(net, PRECISIONS[b.precision]), digest(meta, extra=("precision", b.precision))
        return net, meta
