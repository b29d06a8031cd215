"""Carlini et al. (2019)'s sanity checks ("On evaluating adversarial robustness"), as measured lines for the report
and for tests to assert: accuracy falls as the bound grows; an unbounded attack wins; iterative beats single-step;
the attack loss goes up; white-box beats transfer from the master. (Square beyond gradient is read off the
ledgers by the engine.)"""

from __future__ import annotations

from reabsnet.attacks import apgd
from reabsnet.evaluation.paper import AttackSpec, build_sets
from reabsnet.evaluation.stats import rate
from reabsnet.security.engine import Run, Setup, eps_name


def sanity_sets(setup: Setup, joint, joint_meta: dict, single_eps: float | None) -> dict[str, tuple[dict, dict]]:
    """The checks' sets on the evaluation's images, against the joint logits in cross-entropy form: "unbounded"
    (APGD-CE at L-inf eps the box's width: the whole box) and "single" (one APGD step at L-inf `single_eps`, the
    largest L-inf bound evaluated; none where there is no L-inf bound)."""
    b, splits = setup.budget, setup.splits
    reject, width = splits.classes, splits.box[1] - splits.box[0]
    unbounded = AttackSpec("joint-apgd-ce-linf-unbounded", "joint APGD-CE, unbounded", "apgd", False,
                           {"eps": width, "norm": "linf", "loss": "ce", "steps": b.steps, "restarts": b.restarts,
                            "reject": reject})
    single = AttackSpec(f"joint-single-step-linf-{eps_name(single_eps or 0)}", "joint single step", "apgd", False,
                        {"eps": single_eps, "norm": "linf", "loss": "ce", "steps": 1, "restarts": 1,
                         "reject": reject})
    specs = [unbounded, single] if single_eps is not None else [unbounded]
    built = build_sets(setup.sets, splits, joint, joint_meta, setup.out, setup.timings, specs, "adaptive",
                       [setup.n] * len(specs))
    return {"unbounded": built[unbounded.key], **({"single": built[single.key]} if single_eps is not None else {})}


def sanity_checks(run: Run, results: dict, bounds: list[tuple[str, float]]) -> dict:
    """Every check on the defense. The single step runs at the largest L-inf bound of `bounds` (MNIST: 0.3), the
    loss trace at the smallest bound (MNIST: L-inf 0.1)."""
    joint, joint_meta = run.target.view("joint-ce")
    top = max((e for v, e in bounds if v == "linf"), default=None)
    sets = sanity_sets(run.setup, joint, joint_meta, single_eps=top)
    checks = {"monotone": monotone(results, bounds), "unbounded": unbounded(run, sets["unbounded"])}
    if top is not None:
        arrays, _ = sets["single"]
        single_acc = rate(run.target.defense.predict_batches(arrays["x_adv"]).label == run.y)
        iterative = results["bounds"][f"linf {top:g}"]["reabsnet"]
        checks["iterative_beats_single_step"] = {"single_step": single_acc, "iterative": iterative,
                                                 "bound": f"linf {top:g}",
                                                 "holds": iterative["rate"] <= single_acc["rate"]}
    checks["loss_increases"] = loss_increases(run, joint, bounds)
    return checks


def monotone(results: dict, bounds: list[tuple[str, float]]) -> dict:
    """ReabsNet's robust accuracy never rises with the bound, within each norm."""
    rates = {norm: [results["bounds"][f"{norm} {e:g}"]["reabsnet"]["rate"] for e in sorted(e for v, e in bounds
                                                                                        if v == norm)]
             for norm in ("linf", "l2")}
    return {**rates, "holds": all(a >= b for r in rates.values() for a, b in zip(r, r[1:], strict=False))}


def unbounded(run: Run, item: tuple[dict, dict]) -> dict:
    """An L-inf eps of the box's width covers the whole box: the pipeline should be wrong almost everywhere."""
    arrays, _ = item
    cw = run.minimal_sets.get("joint-cw-l2-t")
    pred = run.target.defense.predict_batches(arrays["x_adv"])
    box = run.setup.splits.box
    return {"pipeline_wrong": rate(pred.label != run.y),   # joint CW-L2 runs under L2 bounds only
            "eps": box[1] - box[0], "cw_l2_unbounded_success": rate(cw[0]["success"].bool()) if cw else None}


def loss_increases(run: Run, joint, bounds: list[tuple[str, float]]) -> dict:
    """Trace joint APGD-CE at the smallest bound on the first images (a fresh run): the best loss so far rises."""
    trace: list[float] = []
    k = min(len(run.y), 200)
    norm, eps = min(bounds, key=lambda b: (b[0] != "linf", b[1]))
    device = next(joint.parameters()).device
    apgd(joint, run.x[:k].to(device), run.y[:k].to(device), eps=eps, norm=norm, loss="ce",
         steps=run.setup.budget.steps, reject=run.reject, trace=trace, box=run.setup.splits.box)
    finite = [t for t in trace if t == t]
    return {"bound": f"{norm} {eps:g}", "gain_after_first_step": finite[0] if finite else None,
            "gain_at_end": finite[-1] if finite else None, "holds": bool(finite) and finite[-1] > 0, "images": k,
            "note": "mean over the images of the best attack loss so far minus the starting loss"}


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
