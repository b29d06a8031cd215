"""Adaptive evaluation: ReabsNet against an attacker who knows the master, the guardian and the modifier.

Threat models
- oblivious (the paper's): attacks crafted against the master alone; Tables 1-3.
- white-box adaptive (here): any input within an L-inf bound (0.1, 0.2, 0.3) or an L2 bound (1.5, 2.0) of a test
  image; the attacker wins when the pipeline's final label is wrong.

Per bound, every attack below runs and an image counts as robust only if the pipeline labels it correctly under
all of them (the worst case per example):
- joint APGD-CE and APGD-DLR on `JointLogits` (evade the guardian and fool the master at once);
- BPDA APGD-CE and APGD-DLR on the whole pipeline (the modifier as identity on the backward pass), and APGD-DLR
  through the modifier's DeepFool steps unrolled (exact gradients, `ReabsNet(backward="unrolled")`);
- under L2 also joint CW-L2, targeted at a random class (Carlini & Wagner 2017's attack on detectors), masked by
  the bound; it is the slowest, so it runs on the first `n_cw` images only;
- then, as in the AutoAttack protocol, each only on the images every earlier attack left standing: joint APGD-T
  (targeted DLR toward the top other classes), Square on the joint score (gradient-free; negative exactly when the
  label is wrong and the guardian does not flag) and Square on the pipeline's output (the modifier included).
The master alone and the Madry-style baseline face AutoAttack's standard ensemble (APGD-CE, then APGD-T, FAB-T and
Square on the survivors) and APGD-DLR on all images; both numbers are reported.
Also reported: the selective-classification view (reject flagged inputs instead of revising them: an outcome is
acceptable when the input is rejected or classified correctly), and Carlini et al. (2019)'s sanity checks, among
them how many images Square broke that every gradient attack left standing (gradient masking, where not zero).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from reabsnet.artifacts import stage_key
from reabsnet.attacks import JointLogits, LowPrecision, Scaled, apgd, bf16_speedup, full_precision
from reabsnet.data import Splits
from reabsnet.defense import ReabsNet
from reabsnet.evaluation.binarization import run_tests, well_apart
from reabsnet.evaluation.paper import AttackSpec, attack_sets
from reabsnet.evaluation.stats import rate, roc_auc
from reabsnet.profiles import Profile, bound_list
from reabsnet.runtime import search_precision
from reabsnet.train.loop import predict_logits

log = logging.getLogger(__name__)

REJECT = 10          # JointLogits' "rejected" class on MNIST: index N for a master of N classes


def eps_name(eps: float) -> str:
    """A bound in set names: two decimals (MNIST's 0.10, 0.30, ...), more where two would merge bounds (8/255)."""
    return f"{eps:.2f}" if abs(eps - round(eps, 2)) < 1e-12 else f"{eps:.6g}"


def apgd_spec(prefix: str, norm: str, eps: float, loss: str, cfg, reject: int | None) -> AttackSpec:
    settings = {"eps": eps, "norm": norm, "loss": loss, "steps": cfg.steps, "restarts": cfg.restarts}
    if reject is not None:
        settings["reject"] = reject
    return AttackSpec(f"{prefix}-apgd-{loss}-{norm}-{eps_name(eps)}", f"{prefix} APGD-{loss.upper()} {norm} {eps:g}",
                      "apgd", False, settings)


def survivor_spec(prefix: str, attack: str, norm: str, eps: float, cfg, reject: int | None) -> AttackSpec:
    """APGD-T, FAB-T, Square or the tuned attack's long APGD-DLR, run on the images earlier attacks left
    standing."""
    queries = cfg.pipeline_queries if prefix == "pipeline" else cfg.queries
    budget = {"apgd-t": {"steps": cfg.steps, "targets": cfg.targets}, "square": {"queries": queries},
              "fab-t": {"steps": cfg.steps, "targets": cfg.targets},
              "apgd": {"loss": "dlr", "steps": TUNED_STEPS * cfg.steps, "restarts": 1},
              "selective-pgd": {"steps": cfg.steps}, "orthogonal-pgd": {"steps": cfg.steps},
              "logit-matching": {"steps": cfg.steps}}[attack]
    settings = {"eps": eps, "norm": norm, **budget}
    if reject is not None:
        settings["reject"] = reject
    title = {"apgd-t": "APGD-T", "square": "Square", "fab-t": "FAB-T", "apgd": f"APGD-DLR x{TUNED_STEPS} steps",
             "selective-pgd": "Selective PGD", "orthogonal-pgd": "Orthogonal PGD",
             "logit-matching": "logit matching"}[attack]
    return AttackSpec(f"{prefix}-{attack}-{norm}-{eps_name(eps)}", f"{prefix} {title} {norm} {eps:g}", attack, False,
                      settings)


# the survivor attacks in their order; the tuned one (against a hardened guardian) only where asked for. Selective
# and Orthogonal PGD (Bryniarski et al. 2022) take the master (joint) or the pipeline through the modifier (bpda,
# unrolled) as the classifier and the guardian as the detector; logit matching (Tramer et al. 2020) makes both
# networks' outputs those of a natural image of another class; then Square
SURVIVOR_ATTACKS = (("joint", "apgd-t"), ("tuned", "apgd"), ("joint", "selective-pgd"), ("joint", "orthogonal-pgd"),
                    ("bpda", "orthogonal-pgd"), ("unrolled", "orthogonal-pgd"), ("joint", "logit-matching"),
                    ("joint", "square"), ("pipeline", "square"))
GUIDES = 1000            # logit matching's natural images: the first validation images
DETECTOR_ATTACKS = ("selective-pgd", "orthogonal-pgd")
PIPELINE_VIEWS = ("pipeline", "bpda", "unrolled")     # attacks whose classifier is the pipeline: revise policy only
BASELINE_SURVIVORS = ("apgd-t", "fab-t", "square")   # the standard ensemble after APGD-CE, in auto-attack's order
PRECISIONS = {"bf16": torch.bfloat16}   # adaptive.precision -> the search passes' autocast dtype
TUNED_STEPS = 5          # the tuned attack's steps, times the profile's APGD steps
TUNED_THRESHOLD = 0.12   # ... and the guardian threshold it aims under (log-odds margin 2 below the usual 0.5)


def threats(cfg) -> list[tuple[str, float]]:
    """The (norm, eps) pairs the adaptive evaluation attacks: `cfg` is the profile's AdaptiveConfig."""
    return [("linf", e) for e in bound_list(cfg.linf_bounds)] + [("l2", e) for e in bound_list(cfg.l2_bounds)]


def guided(defended: ReabsNet, unscale: float, splits: Splits, meta: dict) -> tuple[nn.Module, dict] | None:
    """The joint logits (master logits / T) that logit matching attacks, carrying its natural images to match: the
    first GUIDES validation images (None, and no such attack, where there is no validation split)."""
    guides, _ = splits.split("val", GUIDES)
    if not len(guides):
        return None
    joint = JointLogits(defended.master, defended.guardian, defended.threshold, unscale).eval()
    joint.guides = guides
    return joint, digest(meta, extra=("guides", len(guides)))


def digest(*metas: dict, extra=()) -> dict:
    return {"sha256": stage_key("composite", [m["sha256"] for m in metas], list(extra))}


def adaptive_evaluation(profile: Profile, splits: Splits, defended: ReabsNet | None, master_meta: dict,
                        guardian_meta: dict | None, madry: nn.Module | None, madry_meta: dict | None, out: Path,
                        timings: dict, *, bounds: list[tuple[str, float]] | None = None, n: int | None = None,
                        subdir: str = "adaptive", baselines: tuple[str, ...] = ("master", "madry"),
                        sanity: bool = True, tuned: bool = False, baseline_subdir: str | None = None,
                        defense: bool = True, master: nn.Module | None = None) -> dict:
    """Run (or reuse) every adaptive attack set and return the robust accuracies, per-attack rates, the selective
    view and the sanity checks, on the first `n` (default `profile.adaptive.n`) test images, at `bounds` (default
    the profile's `threats`); sets are stored under out/<subdir>/.

    `tuned` adds an attack tuned to a guardian trained against joint PGD: joint APGD-DLR with TUNED_STEPS times the
    steps, aiming under the guardian threshold TUNED_THRESHOLD (a point found there stays unflagged when the
    guardian's score moves a little), on the images every earlier attack left standing.

    `defense` False skips the attacks on the defense (its rows are then missing): with `baselines` naming one of
    them, it builds that baseline's sets alone (a task of `reproduce --workers`). With no defense, `defended` may
    be None and `master` the classifier the "master" rows attack (a plain classifier's evaluation); `madry` may be
    None when `baselines` leaves "madry" out. The rejected class of the joint logits is index `splits.classes`."""
    cfg = profile.adaptive
    n = n or cfg.n
    bounds = bounds or threats(cfg)
    x, y = splits.split("test", n)
    m = profile.modifier
    reject = splits.classes
    master = defended.master if defended is not None else master
    unscale = unscale_of(master_meta)              # CE attacks see logits / T (joint_networks)
    joints = joint_networks(defended, master_meta, guardian_meta) if defense else {"dlr": (None, None),
                                                                                  "ce": (None, None)}
    joint, joint_meta = joints["dlr"]
    # the modifier's norm and extra steps enter the digest only where they are not the paper's (older keys hold)
    departures = (m.norm, m.extra_steps) if (m.norm, m.extra_steps) != ("l2", 0) else ()
    attacked = {  # (who, loss) -> the network the attack differentiates, and its digest
        ("master", "ce"): (Scaled(master, unscale).eval(), digest(master_meta, extra=("scale", unscale))),
        ("master", "dlr"): (master, master_meta),
        ("madry", "ce"): (madry, madry_meta),
        ("madry", "dlr"): (madry, madry_meta),
    }
    if defense:
        pipeline_meta = digest(master_meta, guardian_meta, extra=(
            "pipeline", m.threshold, m.revise_to, m.overshoot, m.max_iter, *departures))
        attacked |= {
            ("joint", "ce"): joints["ce"],
            ("joint", "dlr"): (joint, joint_meta),
            ("bpda", "ce"): (Scaled(defended, unscale).eval(), digest(pipeline_meta, extra=("scale", unscale))),
            ("bpda", "dlr"): (defended, pipeline_meta),
            # unrolling covers the paper's modifier only; another modifier is attacked through BPDA and the joint
            # logits
            ("unrolled", "dlr"): (_variant(defended, backward="unrolled"),
                                  digest(pipeline_meta, extra=("unrolled",))) if not departures else None,
            # survivor attacks: APGD-T's DLR and Square's margin are scale-free, so the unscaled networks
            ("joint", "apgd-t"): (joint, joint_meta),
            ("joint", "square"): (joint, joint_meta),
            ("pipeline", "square"): (defended, pipeline_meta),
            ("tuned", "apgd"): (JointLogits(master, defended.guardian, TUNED_THRESHOLD).eval(),
                                digest(master_meta, guardian_meta, extra=("joint", TUNED_THRESHOLD)))
            if tuned else None,
            # the two objectives apart: classifier (cross-entropy at the master's training scale) and guardian
            ("joint", "selective-pgd"): joints["ce"],
            ("joint", "orthogonal-pgd"): joints["ce"],
            ("bpda", "orthogonal-pgd"): (
                JointLogits(defended, defended.guardian, defended.threshold, unscale).eval(),
                digest(pipeline_meta, extra=("two-objectives", unscale))),
            ("unrolled", "orthogonal-pgd"): (
                JointLogits(_variant(defended, backward="unrolled"), defended.guardian, defended.threshold,
                            unscale).eval(), digest(pipeline_meta, extra=("two-objectives", "unrolled", unscale)))
            if not departures else None,
            ("joint", "logit-matching"): guided(defended, unscale, splits, joints["ce"][1]),
        }
    for who in ("master", "madry"):
        for attack in BASELINE_SURVIVORS:      # FAB-T's hyperplanes do not change with the logits' scale either
            attacked[(who, attack)] = attacked[(who, "dlr")]
    precision, speedup = "fp32", None
    if madry is not None:
        device = next(madry.parameters()).device
        precision, speedup = search_precision(cfg.precision, device, lambda: bf16_speedup(madry, x[:128].to(device)))
    if precision != "fp32":
        # cheaper search passes where they were measured to find as much; FAB-T's boundary steps were not
        for key in (("madry", "ce"), ("madry", "dlr"), ("madry", "apgd-t"), ("madry", "square")):
            net, meta = attacked[key]
            attacked[key] = (LowPrecision(net, PRECISIONS[precision]), digest(meta, extra=("precision", precision)))

    def run_apgd(who: str, loss: str, norm: str, eps: float) -> tuple[str, tuple[dict, dict]]:
        model, meta = attacked[(who, loss)]
        spec = apgd_spec(who, norm, eps, loss, cfg, reject if who == "joint" else None)
        return spec.key, run(model, meta, [spec], where=who)[spec.key]

    def run(model, meta, specs, indices=None, where: str = ""):
        # the baselines' sets do not depend on the defense: configurations can share them (baseline_subdir)
        folder = (baseline_subdir or subdir) if where in ("master", "madry") else subdir
        return attack_sets(profile, splits, model, meta, out, timings, specs=specs, subdir=folder, n=n,
                           indices=indices)

    def on_standing(who: str, attack: str, norm: str, eps: float, standing: torch.Tensor,
                    spec: AttackSpec | None = None) -> tuple[str, torch.Tensor, int]:
        """The attack (`spec`, default the survivor attack's) on the standing images only; the others keep their
        clean input (they are already lost)."""
        model, meta = attacked[(who, attack)]
        joint_like = who in ("joint", "tuned") or attack in DETECTOR_ATTACKS
        spec = spec or survivor_spec(who, attack, norm, eps, cfg, reject if joint_like else None)
        idx = standing.nonzero().squeeze(1)
        x_adv = x.clone()
        if len(idx):
            x_adv[idx] = run(model, meta, [spec], indices=idx, where=who)[spec.key][0]["x_adv"]
        return spec.key, x_adv, len(idx)

    master_alone_clean = predict_logits(master, x).argmax(1) == y

    def at_threshold_attacks(label: str, t: float, norm: str, eps: float, seen: list):
        """Joint APGD-CE and Orthogonal PGD with the guardian's threshold at t, each on the images the reject policy
        at t still holds (accepted and right clean, or rejected clean; and no example so far wrong and under t)."""
        joint_t = JointLogits(master, defended.guardian, t, unscale).eval()
        meta_t = digest(master_meta, guardian_meta, extra=("joint", t, "scale", unscale))
        for attack, budget in (("apgd", {"loss": "ce", "steps": cfg.steps, "restarts": cfg.restarts}),
                               ("orthogonal-pgd", {"steps": cfg.steps})):
            holds = ((clean.p_adversarial > t) | master_alone_clean) & ~broken_at(t, y, seen)
            spec = AttackSpec(f"joint-fpr{label}-{attack}-{norm}-{eps_name(eps)}",
                              f"joint {attack} at the {label} FPR threshold {norm} {eps:g}", attack, False,
                              {"eps": eps, "norm": norm, **budget, "reject": reject})
            idx = holds.nonzero().squeeze(1)
            x_adv = x.clone()
            if len(idx):
                x_adv[idx] = run(joint_t, meta_t, [spec], indices=idx, where="joint")[spec.key][0]["x_adv"]
            yield spec.key, x_adv, holds
    madry_clean = predict_logits(madry, x).argmax(1) == y if madry is not None else None
    results = {"n": n, "steps": cfg.steps, "restarts": cfg.restarts, "targets": cfg.targets,
               **({"baseline_precision": precision} if precision != "fp32" else {}),
               **({"bf16_speedup": round(speedup, 2)} if speedup is not None else {}),
               "queries": cfg.queries, "pipeline_queries": cfg.pipeline_queries, "bounds": {},
               "clean": {"master": rate(master_alone_clean), **({"madry": rate(madry_clean)} if madry is not None
                                                                else {})}}
    if defense:
        clean = defended.predict_batches(x)
        calibration = calibrate(defended.guardian, splits)
        if calibration:
            results["calibration"] = calibration
        pipeline_ok = clean.label == y
        # reject policy: acceptable when flagged, else the pipeline's label, the master's on the input as it is
        selective_clean = clean.flagged | pipeline_ok
        results["clean"] |= {"reabsnet": rate(pipeline_ok), "selective_correct_or_rejected": rate(selective_clean),
                             "selective_rejected": rate(clean.flagged)}

    cw_raw = cw = None
    # nested bounds: within a norm, ascending; an example within the smaller ball lies within the larger one, so at
    # each larger bound every attack runs only on the images the smaller one left standing (cfg.nested)
    smaller: dict[str, dict] = {}
    if cfg.nested:
        bounds = sorted(bounds, key=lambda b: ([v for v, _ in bounds].index(b[0]), b[1]))
    results["nested"] = cfg.nested
    for norm, eps in bounds:
        name = f"{norm} {eps:g}"
        prior = smaller.get(norm)
        per_attack, seen = {}, list(prior["seen"]) if prior else []   # seen: per attack set, the guardian's
        # P(adversarial) and the master's label on its examples
        robust, selective = (pipeline_ok.clone(), selective_clean.clone()) if defense else (None, None)
        if prior and defense:
            robust &= prior["robust"]
            selective &= prior["selective"]
        candidates = {}
        for who, loss in (("joint", "ce"), ("joint", "dlr"), ("bpda", "ce"), ("bpda", "dlr"), ("unrolled", "dlr")):
            if not defense or attacked[(who, loss)] is None:
                continue
            if prior is None:
                key, item = run_apgd(who, loss, norm, eps)
                candidates[key] = item[0]["x_adv"]
            else:
                # joint attacks serve the reject policy at every threshold, so they also attack what a calibrated
                # threshold still held at the smaller bound
                standing = robust if who in PIPELINE_VIEWS else (robust | selective | prior["held_fpr"])
                key, x_adv, _ = on_standing(who, loss, norm, eps, standing,
                                            apgd_spec(who, norm, eps, loss, cfg, reject if who == "joint" else None))
                candidates[key] = (x_adv, standing.clone())     # `robust` itself changes below
        if defense and norm == "l2":
            if cw_raw is None:       # one set for every L2 bound, each cutting it at its radius
                cw_raw = joint_cw(profile, splits, joint, joint_meta, out, timings, subdir, n)
                cw = _pad(cw_raw, x)
            candidates["joint-cw-l2-t"] = _bounded(cw, eps, "l2")[0]["x_adv"]
        for key, item in candidates.items():
            x_adv, standing = item if isinstance(item, tuple) else (item, None)
            pred = defended.predict_batches(x_adv)
            seen.append((pred.p_adversarial, predict_logits(master, x_adv).argmax(1)))
            correct = pred.label == y
            ok = pred.flagged | correct      # unflagged inputs reach the master unrevised
            if standing is None:
                per_attack[key] = {"reabsnet": rate(correct & pipeline_ok), "selective": rate(ok & selective_clean),
                                   "flagged": rate(pred.flagged)}
            else:
                per_attack[key] = {"attacked": int(standing.sum()),
                                   "broke": {"reabsnet": int((robust & ~correct).sum()),
                                             "selective": int((selective & ~ok).sum())},
                                   "flagged": rate(pred.flagged[standing]) if standing.any() else None}
            robust &= correct
            selective &= ok
        # AutoAttack's order: the targeted and gradient-free attacks only where everything before left the image
        # standing; joint attacks also serve the reject policy, so they attack what either view still holds
        square_broke = {"reabsnet": 0, "selective": 0}
        for who, attack in SURVIVOR_ATTACKS:
            if not defense or attacked[(who, attack)] is None:
                continue
            standing = robust if who in PIPELINE_VIEWS else (robust | selective)
            key, x_adv, k = on_standing(who, attack, norm, eps, standing)
            pred = defended.predict_batches(x_adv)
            seen.append((pred.p_adversarial, predict_logits(master, x_adv).argmax(1)))
            correct = pred.label == y
            ok = pred.flagged | correct
            broke = {"reabsnet": int((robust & ~correct).sum()), "selective": int((selective & ~ok).sum())}
            per_attack[key] = {"attacked": k, "broke": broke,
                               "flagged": rate(pred.flagged[standing]) if k else None}
            if attack == "square":
                square_broke = {v: square_broke[v] + broke[v] for v in broke}
            robust &= correct
            selective &= ok
        if defense and results.get("calibration"):
            # the reject policy at each calibrated threshold, attacked there: joint APGD-CE and Orthogonal PGD aim
            # under that threshold, on the images it still holds after every attack above
            for label, t in results["calibration"]["thresholds"].items():
                for key, x_adv, holds in at_threshold_attacks(label, t, norm, eps, seen):
                    pred = defended.predict_batches(x_adv)
                    label_t = predict_logits(master, x_adv).argmax(1)
                    seen.append((pred.p_adversarial, label_t))
                    per_attack[key] = {"attacked": int(holds.sum()), "at_threshold": t, "broke": {
                        f"reject policy at {t:.4g}": int((holds & (label_t != y) & (pred.p_adversarial <= t)).sum())}}
        robust_baseline, baseline_square, held = {}, {}, {}
        for who, clean_ok in (("master", master_alone_clean), ("madry", madry_clean)):
            if who not in baselines:
                continue
            fooled = {}
            model = full_precision(attacked[(who, "dlr")][0])      # the judge runs in float32
            # nested: APGD-CE where the standard ensemble held at the smaller bound, APGD-DLR where the worst case did
            before = prior["baselines"][who] if prior else None
            for loss in ("ce", "dlr"):
                if before is None:
                    key, (arrays, _) = run_apgd(who, loss, norm, eps)
                    fooled[loss] = arrays["label"] != y
                    per_attack[key] = {who: rate(clean_ok & ~fooled[loss])}
                else:
                    standing = clean_ok & before["ce" if loss == "ce" else "worst"]
                    key, x_adv, k = on_standing(who, loss, norm, eps, standing, apgd_spec(who, norm, eps, loss, cfg,
                                                                                        None))
                    fooled[loss] = ~standing | (predict_logits(model, x_adv).argmax(1) != y)
                    per_attack[key] = {"attacked": k, "broke": {who: int((standing & fooled[loss]).sum())}}
            # the standard ensemble: APGD-CE, then APGD-T, FAB-T and Square on what it left standing
            standard = clean_ok & ~fooled["ce"]
            for attack in BASELINE_SURVIVORS:
                key, x_adv, k = on_standing(who, attack, norm, eps, standard)
                broke = standard & (predict_logits(model, x_adv).argmax(1) != y)
                per_attack[key] = {"attacked": k, "broke": {who: int(broke.sum())}}
                if attack == "square":
                    baseline_square[who] = int((broke & ~fooled["dlr"]).sum())
                standard &= ~broke
            robust_baseline[who] = rate(standard & ~fooled["dlr"])
            robust_baseline[f"{who}_autoattack"] = rate(standard)
            held[who] = {"ce": standard, "worst": standard & ~fooled["dlr"]}
        if cfg.nested:
            smaller[norm] = {"robust": robust, "selective": selective, "seen": seen, "baselines": held,
                             "held_fpr": held_at_thresholds(results.get("calibration"), clean.p_adversarial,
                                                            master_alone_clean, y, seen) if defense else None}
        ours = {"reabsnet": rate(robust), "selective": rate(selective),
                "fixed_fpr": at_thresholds(results.get("calibration"), clean.p_adversarial, master_alone_clean, y,
                                           seen)} if defense else {}
        results["bounds"][name] = {"norm": norm, "eps": eps, **ours, **robust_baseline, "per_attack": per_attack,
                                   "square_beyond_gradient": {**(square_broke if defense else {}),
                                                              **baseline_square}}
        labels = {"reabsnet": "ReabsNet", "selective": "reject policy", **{k: k for k in robust_baseline}}
        log.info("adaptive %s: %s", name, ", ".join(f"{label} {results['bounds'][name][k]['rate']:.3f}"
                                                    for k, label in labels.items() if k in results["bounds"][name]))
    if cfg.binarization:
        results["binarization"] = binarization(cfg, defended if defense else None, master, madry, baselines, x, bounds,
                                               splits.box, m.threshold)
    if sanity and defense:
        results["sanity"] = _sanity(profile, splits, defended, *attacked[("joint", "ce")], results, cw_raw, out,
                                    timings, x, y, bounds)
    results["n_cw"] = len(cw_raw[0]["y"]) if cw_raw else 0
    return results


def binarization(cfg, defended: ReabsNet | None, master: nn.Module, madry: nn.Module | None,
                 baselines: tuple[str, ...], x: torch.Tensor, bounds: list[tuple[str, float]], box, threshold: float
                 ) -> dict:
    """The binarization test at each bound: on the defense the reject policy (and its inverted control) and
    ReabsNet; on the Madry-style baseline, or on a plain classifier's evaluation the master, the classifier test.
    The suite's main attacks at the evaluation's budgets, on the first `cfg.binarization` images whose balls are
    disjoint."""
    out = {}
    for norm, eps in bounds:
        idx = well_apart(x, eps, norm, cfg.binarization)
        device = next(master.parameters()).device
        xs = x[idx].to(device)
        tests = {}
        budget = {"eps": eps, "norm": norm, "steps": cfg.steps, "queries": cfg.queries, "box": box}
        if defended is not None:
            d = defended
            modifier = {"revise_to": d.revise_to, "overshoot": d.overshoot, "max_iter": d.max_iter, "norm": d.norm,
                        "extra_steps": d.extra_steps}
            tests["ReabsNet"] = run_tests(d.master, xs, guardian=d.guardian, threshold=threshold,
                                          policies=("reject", "reject-inverted", "revise"), modifier=modifier,
                                          **budget)
        if madry is not None and "madry" in baselines:
            tests["Madry-style baseline"] = run_tests(madry, xs, **budget)
        if defended is None:
            tests["classifier"] = run_tests(master, xs, **budget)
        out[f"{norm} {eps:g}"] = {"images": len(idx), "tests": tests}
    return out


# clean false-positive rates the guardian's threshold is calibrated to, beside 0.5: Tramer 2022's 1% and 5%, and
# Bryniarski et al. 2022's SR@5 and SR@50
FPRS = (0.01, 0.05, 0.5)


def calibrate(guardian: nn.Module, splits: Splits) -> dict | None:
    """The guardian's thresholds on P(adversarial) that flag 1%, 5% and 50% of the natural validation images (the
    validation split; None where there is none), beside the paper's 0.5 and the share of them it flags."""
    x_val, _ = splits.split("val")
    if not len(x_val):
        return None
    p = predict_logits(guardian, x_val).softmax(1)[:, 1]
    ranked = p.sort(descending=True).values
    thresholds = {f"{f:g}": float(ranked[int(f * len(p))]) for f in FPRS}
    return {"val_images": len(p), "thresholds": thresholds, "flagged_at_0.5": rate(p > 0.5)}


def at_thresholds(calibration: dict | None, p_clean: torch.Tensor, clean_correct: torch.Tensor, y: torch.Tensor,
                  seen: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """The reject policy at each threshold t (0.5, and the calibrated 1%, 5% and 50% false-positive
    ones): flagged when
    P(adversarial) > t, rejected then, else the master's label. Per threshold: the clean images rejected; robust
    accuracy as correct-or-rejected; robust accuracy counting a rejected clean input as an error (Tramer 2022:
    right on the clean input, and correct or rejected under every attack); the attack success rate on the images
    the policy gets right clean (SR, Bryniarski et al. 2022: some attack set's example wrong and not flagged); and
    the ROC-AUC of the guardian between the clean images and, per image, the attacker's final example (the wrong
    one with the lowest P(adversarial)). Every attack set in `seen` counts at every threshold; the suite adds
    joint APGD-CE and Orthogonal PGD aimed under each calibrated threshold (`at_threshold_attacks`)."""
    thresholds = {"0.5": 0.5, **({f"fpr {k}": v for k, v in calibration["thresholds"].items()}
                                 if calibration else {})}
    p_adv = torch.stack([p for p, _ in seen]) if seen else torch.zeros(0, len(y))
    wrong = torch.stack([label != y for _, label in seen]) if seen else torch.zeros(0, len(y), dtype=torch.bool)
    # the attacker's final example per image: the wrong one the guardian scores lowest (none: not fooled)
    final = torch.where(wrong, p_adv, torch.full_like(p_adv, float("inf"))).amin(0) if seen else torch.full(
        (len(y),), float("inf"))
    fooled = (final < float("inf")) & clean_correct
    out = {}
    for name, t in thresholds.items():
        accepted_right = (p_clean <= t) & clean_correct
        broken = broken_at(t, y, seen)
        ok = ((p_clean > t) | clean_correct) & ~broken
        out[name] = {"threshold": t, "clean_rejected": rate(p_clean > t), "correct_or_rejected": rate(ok),
                     "robust_rejection_is_error": rate(accepted_right & ~broken),
                     "attack_success": rate(broken[accepted_right]) if accepted_right.any() else None}
    out["roc_auc_final_examples"] = roc_auc(p_clean, final[fooled]) if fooled.any() else None
    return out


def held_at_thresholds(calibration: dict | None, p_clean: torch.Tensor, clean_correct: torch.Tensor,
                       y: torch.Tensor, seen: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The images the reject policy still holds at some calibrated threshold t (correct-or-rejected clean, and no
    example in `seen` wrong with P(adversarial) <= t): what a nested larger bound must attack again."""
    held = torch.zeros(len(y), dtype=torch.bool)
    for t in (calibration or {}).get("thresholds", {}).values():
        held |= ((p_clean > t) | clean_correct) & ~broken_at(t, y, seen)
    return held


def broken_at(t: float, y: torch.Tensor, seen: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Per image: some example in `seen` (P(adversarial), the master's label) is wrong and not flagged at t."""
    if not seen:
        return torch.zeros(len(y), dtype=torch.bool)
    return torch.stack([(label != y) & (p <= t) for p, label in seen]).any(0)


def unscale_of(master_meta: dict) -> float:
    """1 / the master's distillation temperature (1 for an undistilled master): the factor that takes its deployed
    logits back to the scale it was trained at, where cross-entropy has gradients."""
    return 1.0 / float(master_meta.get("temperature") or 1.0)


def joint_networks(defended: ReabsNet, master_meta: dict, guardian_meta: dict) -> dict[str, tuple[nn.Module, dict]]:
    """The joint logits the attacks differentiate, with their digests: "dlr" as they are, "ce" with the master's
    logits divided by its distillation temperature (the attacker knows it): the same labels without the saturated
    softmax that zeroes cross-entropy gradients (DLR is scale-free)."""
    unscale = unscale_of(master_meta)
    meta = digest(master_meta, guardian_meta, extra=("joint", defended.threshold))
    return {"dlr": (JointLogits(defended.master, defended.guardian, defended.threshold).eval(), meta),
            "ce": (JointLogits(defended.master, defended.guardian, defended.threshold, unscale).eval(),
                   digest(meta, extra=("scale", unscale)))}


def sanity_sets(profile: Profile, splits: Splits, joint: nn.Module, joint_meta: dict, out: Path, timings: dict,
                n: int | None = None, single_eps: float = 0.3) -> dict[str, tuple[dict, dict]]:
    """The sanity checks' two sets on the first `n` images, against the joint logits in cross-entropy form:
    "unbounded" (APGD-CE at L-inf eps the box's width: the whole box) and "single" (one APGD step at L-inf
    `single_eps`, the largest L-inf bound evaluated)."""
    cfg = profile.adaptive
    reject, width = splits.classes, splits.box[1] - splits.box[0]
    unbounded = AttackSpec("joint-apgd-ce-linf-unbounded", "joint APGD-CE, unbounded", "apgd", False,
                           {"eps": width, "norm": "linf", "loss": "ce", "steps": cfg.steps, "restarts": cfg.restarts,
                            "reject": reject})
    single = AttackSpec(f"joint-single-step-linf-{eps_name(single_eps)}", "joint single step", "apgd", False,
                        {"eps": single_eps, "norm": "linf", "loss": "ce", "steps": 1, "restarts": 1,
                         "reject": reject})
    built = attack_sets(profile, splits, joint, joint_meta, out, timings, specs=[unbounded, single],
                        subdir="adaptive", n=n or cfg.n)
    return {"unbounded": built[unbounded.key], "single": built[single.key]}


def joint_cw(profile: Profile, splits: Splits, joint: nn.Module, joint_meta: dict, out: Path, timings: dict,
             subdir: str = "adaptive", n: int | None = None) -> tuple[dict, dict]:
    """Joint CW-L2, targeted at a random class, on the first `n_cw` of the evaluation's first `n` images."""
    cfg = profile.adaptive
    spec = AttackSpec("joint-cw-l2-t", "joint CW-L2 targeted", "cw-l2", True, None)
    return attack_sets(profile, splits, joint, joint_meta, out, timings, specs=[spec], subdir=subdir,
                       n=min(cfg.n_cw, n or cfg.n))[spec.key]


def _variant(net: ReabsNet, master: nn.Module | None = None, backward: str | None = None,
             guardian: nn.Module | None = None) -> ReabsNet:
    """`net` with its modifier settings, another master, guardian and/or backward pass."""
    return ReabsNet(master if master is not None else net.master,
                    guardian if guardian is not None else net.guardian, threshold=net.threshold,
                    revise_to=net.revise_to, overshoot=net.overshoot, max_iter=net.max_iter, box=net.box,
                    backward=backward or net.backward, norm=net.norm, extra_steps=net.extra_steps).eval()


def _pad(item: tuple[dict, dict], x: torch.Tensor) -> tuple[dict, dict]:
    """An attack set on the first k of the images `x`, extended to all of them with the unattacked originals."""
    arrays, meta = item
    k, n = len(arrays["y"]), len(x)
    if k >= n:
        return item
    rest = x[k:]
    zeros = torch.zeros(n - k, dtype=arrays["l2"].dtype)
    return {**arrays, "x": x, "x_adv": torch.cat([arrays["x_adv"], rest]), "l2": torch.cat([arrays["l2"], zeros]),
            "linf": torch.cat([arrays["linf"], zeros])}, meta


def _bounded(item: tuple[dict, dict], eps: float, norm: str) -> tuple[dict, dict]:
    """A minimal-distance attack set cut at a bound: examples farther than eps revert to the original."""
    arrays, meta = item
    within = (arrays["l2"] if norm == "l2" else arrays["linf"]) <= eps + 1e-5
    view = (-1, *[1] * (arrays["x"].dim() - 1))
    return {**arrays, "x_adv": torch.where(within.view(view), arrays["x_adv"], arrays["x"])}, meta


def _sanity(profile, splits, defended, joint, joint_meta, results, cw, out, timings, x, y, bounds) -> dict:
    """Carlini et al. (2019)'s checks, as measured lines for the report (and for tests to assert). `joint` here
    is the cross-entropy form (master logits / T). The single step runs at the largest L-inf bound of `bounds`
    (MNIST: 0.3), the loss trace at the smallest bound (MNIST: L-inf 0.1)."""
    cfg = profile.adaptive
    n = len(y)
    checks = {}
    linf = [results["bounds"][f"linf {e:g}"]["reabsnet"]["rate"] for e in sorted(e for v, e in bounds if v == "linf")]
    l2 = [results["bounds"][f"l2 {e:g}"]["reabsnet"]["rate"] for e in sorted(e for v, e in bounds if v == "l2")]
    checks["monotone"] = {"linf": linf, "l2": l2,
                          "holds": all(a >= b for a, b in zip(linf, linf[1:], strict=False)) and
                          all(a >= b for a, b in zip(l2, l2[1:], strict=False))}
    top = max((e for v, e in bounds if v == "linf"), default=None)
    sets = sanity_sets(profile, splits, joint, joint_meta, out, timings, n, single_eps=top or 0.3)
    # unbounded: an L-inf eps of the box's width covers the whole box
    arrays, _ = sets["unbounded"]
    pred = defended.predict_batches(arrays["x_adv"])
    checks["unbounded"] = {"pipeline_wrong": rate(pred.label != y),   # joint CW-L2 runs under L2 bounds only
                           "eps": splits.box[1] - splits.box[0],
                           "cw_l2_unbounded_success": rate(cw[0]["success"].bool()) if cw else None}
    # iterative beats single-step: one APGD step (a random start and one signed step of 2 eps) at the largest bound
    if top is not None:
        arrays, _ = sets["single"]
        single_acc = rate(defended.predict_batches(arrays["x_adv"]).label == y)
        iterative = results["bounds"][f"linf {top:g}"]["reabsnet"]
        checks["iterative_beats_single_step"] = {"single_step": single_acc, "iterative": iterative,
                                                 "bound": f"linf {top:g}",
                                                 "holds": iterative["rate"] <= single_acc["rate"]}
    # the loss goes up: trace joint APGD-CE at the smallest bound on the first images (a fresh run)
    trace: list[float] = []
    k = min(n, 200)
    norm, eps = min(bounds, key=lambda b: (b[0] != "linf", b[1]))
    device = next(joint.parameters()).device
    apgd(joint, x[:k].to(device), y[:k].to(device), eps=eps, norm=norm, loss="ce", steps=cfg.steps,
         reject=splits.classes, trace=trace, box=splits.box)
    finite = [t for t in trace if t == t]
    checks["loss_increases"] = {"bound": f"{norm} {eps:g}", "gain_after_first_step": finite[0] if finite else None,
                                "gain_at_end": finite[-1] if finite else None,
                                "holds": bool(finite) and finite[-1] > 0, "images": k,
                                "note": "mean over the images of the best attack loss so far minus the starting loss"}
    return checks


def transfer_check(results: dict, oblivious_pgd: dict) -> dict:
    """White-box beats transfer: the pipeline's accuracy on PGD crafted against the master alone (oblivious)
    against its adaptive robust accuracy at the same L-inf bounds."""
    rows = {}
    for key, b in results["bounds"].items():
        e = b["eps"]
        if b["norm"] == "linf" and e in oblivious_pgd:
            rows[key] = {"transfer_from_master": oblivious_pgd[e],
                         "adaptive": results["bounds"][key]["reabsnet"]["rate"]}
    # the curve's rates are float32 means (0.7 is 0.69999999), the adaptive ones exact fractions: equal counts hold
    return {"rows": rows, "holds": all(r["adaptive"] <= r["transfer_from_master"] + 1e-6 for r in rows.values())}


def hardening(profile: Profile, splits: Splits, defended: ReabsNet, master_meta: dict, guardian_meta: dict,
              madry: nn.Module, madry_meta: dict, out: Path, timings: dict,
              hardened: tuple[nn.Module, dict] | None = None) -> dict:
    """Configurations tried against the same adaptive attacks at every L-inf bound, on the first `harden_n` test
    images, beside the Madry-style baseline on those images: the paper's ReabsNet; ReabsNet with the adversarially
    trained baseline as its master (the guardian and modifier unchanged); and, when `hardened` (a guardian trained
    against joint PGD on that master) is given, that master with that guardian, also facing the tuned attack.
    Each also under the reject policy."""
    n = profile.adaptive.harden_n
    bounds = [("linf", e) for e in bound_list(profile.adaptive.harden_bounds)]
    # on the adaptive evaluation's own images the paper's configuration and the baseline are its very sets
    shared = n == profile.adaptive.n
    configs = {"ReabsNet (distilled master, the paper's)": (defended, master_meta, guardian_meta,
                                                            "adaptive" if shared else "adaptive-harden-paper", False),
               "ReabsNet with the Madry-style master": (_variant(defended, master=madry), madry_meta, guardian_meta,
                                                        "adaptive-harden-madry-master", False)}
    if hardened is not None:
        guardian, meta = hardened
        configs["Madry-style master, adversarially trained guardian"] = (
            _variant(defended, master=madry, guardian=guardian), madry_meta, meta, "adaptive-harden-guardian", True)
    rows = {}
    for name, (net, m_meta, g_meta, subdir, tuned) in configs.items():
        r = adaptive_evaluation(profile, splits, net, m_meta, g_meta, madry, madry_meta, out, timings,
                                bounds=bounds, n=n, subdir=subdir, baselines=("madry",), sanity=False, tuned=tuned,
                                baseline_subdir="adaptive" if shared else "adaptive-harden-baseline")
        rows[name] = {"clean": r["clean"]["reabsnet"],
                      "reject_policy_clean": r["clean"]["selective_correct_or_rejected"],
                      "reject_policy_rejects_clean": r["clean"]["selective_rejected"],
                      "madry_clean": r["clean"]["madry"], "tuned": tuned,
                      "bounds": {b: {"robust": v["reabsnet"], "reject_policy_robust": v["selective"],
                                     "madry_robust": v["madry"], "madry_autoattack": v["madry_autoattack"],
                                     "square_beyond_gradient": v["square_beyond_gradient"],
                                     "per_attack": v["per_attack"]}
                                 for b, v in r["bounds"].items()}}
    return {"n": n, "bounds": [f"linf {e:g}" for _, e in bounds], "configs": rows,
            "max_clean_rejection": profile.adaptive.max_clean_rejection, "lead": _lead(rows, profile)}


def _lead(rows: dict, profile: Profile, margin: float = 0.03) -> dict:
    """The hardening bar at L-inf 0.3: a configuration's reject-policy rate at least `margin` above the baseline's
    robust accuracy, with at most max_clean_rejection of clean images rejected."""
    verdicts = {}
    for name, row in rows.items():
        if "linf 0.3" not in row["bounds"]:
            continue
        b = row["bounds"]["linf 0.3"]
        gap = b["reject_policy_robust"]["rate"] - b["madry_robust"]["rate"]
        rejects = row["reject_policy_rejects_clean"]["rate"]
        verdicts[name] = {"gap": gap, "clean_rejected": rejects,
                          "beats": gap >= margin and rejects <= profile.adaptive.max_clean_rejection}
    return {"margin": margin, "verdicts": verdicts, "any": any(v["beats"] for v in verdicts.values())}
