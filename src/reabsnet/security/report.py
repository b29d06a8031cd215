"""The report's section on the adaptive attacks (REPORT.md, `reabsnet evaluate`'s report, `AdaptiveResult.markdown`),
rendered from the adaptive results dict as results.json stores it."""

from __future__ import annotations

import re

from reabsnet.rates import bound_label, cell, fmt, in_order
from reabsnet.runtime import BF16_MIN_SPEEDUP
from reabsnet.security.alarm import column_name
from reabsnet.security.suite import NETWORKS, Step, Suite

DEFENSE_CLEAN = ("reabsnet", "selective_correct_or_rejected", "selective_rejected")
# where the suite's attacks on detectors come from
CITED = {"selective-pgd": "Bryniarski et al. 2022", "orthogonal-pgd": "Bryniarski et al. 2022",
         "logit-matching": "Tramer et al. 2020: both networks' outputs made those of a natural image of another "
                           "class"}

# the adaptive table's columns, in order, where the results hold them: (key in each bound, header, key in "clean")
ADAPTIVE_COLUMNS = (("reabsnet", "ReabsNet (worst case)", "reabsnet"),
                    ("selective", "reject policy: correct or rejected", "selective_correct_or_rejected"),
                    ("master", "master alone (worst case)", "master"),
                    ("master_autoattack", "master alone, AutoAttack standard only", None),
                    ("madry", "Madry-style baseline (worst case)", "madry"),
                    ("madry_autoattack", "Madry-style baseline, AutoAttack standard only", None))


def adaptive_section(a: dict) -> list[str]:
    """The report's section on the adaptive attacks, from the adaptive results (also those of `evaluate_adaptive`
    on a user's model: a plain classifier's results hold the master's columns only)."""
    if "reabsnet" not in a["clean"]:
        return _classifier_section(a)
    lines = ["", "## Adaptive attacks (white-box; the paper's section 5 leaves this open)", "",
             "Threat models. *Oblivious* (the paper's, Tables 1-3): the attacker knows the master only. *White-box "
             "adaptive* (this section): the attacker knows the master, the guardian and the modifier, with their "
             "weights, and wins when the pipeline's final label is wrong for an input within the bound. Per bound "
             "the steps below ran in this order (`reabsnet suite` lists the suite), and an image counts as robust "
             "only if the pipeline is right under all of them (worst case per example). A step on every image "
             "attacks them all; a survivor step, as in the AutoAttack protocol, only the images every earlier step "
             "left standing for the verdicts it serves. Every step's examples are judged under both policies.", "",
             *suite_lines(a), "", budget_line(a), "",
             "*Reject policy* is the selective-classification alternative the paper argues against: flagged inputs "
             "are rejected instead of revised; an outcome is acceptable when the input is rejected or classified "
             "correctly (against the joint attacks that policy faces exactly the attacks above).", "",
             *_bound_table(a), *escalation_lines(a), *indicator_lines(a), *alarm_lines(a)]
    lines += _fixed_fpr(a) + binarization_lines(a.get("binarization")) + _precision_lines(a)
    if a.get("nested"):
        lines += ["", "Bounds are nested: within a norm, at each larger bound every attack ran only on the images the "
                  "smaller bound left standing (an example within the smaller ball lies within the larger one, so an "
                  "image broken there stays broken); its rows below count the images each attack ran on."]
    lines += ["", "Per attack (accuracy of the network it targets; for the pipeline's attacks also the fraction the "
              "guardian flags). The survivor attacks (APGD-T onwards) ran only on the images still standing; "
              "their row counts those and how many each broke (for the pipeline: under revision / under the reject "
              "policy):", "", "| bound | attack | accuracy | flagged |", "|---|---|---|---|"]
    for name, b in in_order(a["bounds"]):
        lines += per_attack_rows(name, b["per_attack"])
    return lines + _sanity_lines(a)


def escalation_lines(a: dict) -> list[str]:
    """Per bound and verdict column, the rate after each escalation round and whether it converged."""
    bounds = [(name, b["escalation"]) for name, b in in_order(a["bounds"]) if "escalation" in b]
    if not bounds:
        return []
    # a verdict whose rates stopped falling is not attacked in later rounds: its cells there are "-" (unless another
    # verdict's attacks lowered it)
    factors = sorted({r["factor"] for _, e in bounds for r in e["rounds"]})
    lines = ["", "Escalation: after the suite at its budget, every step attacked the images still standing again at "
             "larger budgets (APGD's restarts, else Square's queries, else the steps, times the factor; logit "
             "matching's candidate guides too; fresh random starts). A verdict whose round broke at most "
             f"{a.get('escalation_tolerance', 0.01):g} of the images has converged (at the budget before that "
             "round) and later rounds leave its images; the headline rates are the last round's. Rate after each "
             "round:", "",
             "| bound | verdict | " + " | ".join(f"{f}x" for f in factors) + " | converged |",
             "|---|---|" + "---|" * (len(factors) + 1)]
    for name, e in bounds:
        ran = {r["factor"]: r for r in e["rounds"]}
        order = [c for c, _, _ in ADAPTIVE_COLUMNS]
        for column in sorted(e["converged"], key=lambda c: (order.index(c) if c in order else len(order), c)):
            since = e["converged"][column]
            rates = " | ".join(fmt(ran[f]["robust"][column]) if f in ran and (
                column in ran[f].get("columns", [column]) or ran[f]["broke"][column]) else "-" for f in factors)
            lines.append(f"| {bound_label(name)} | {column_name(column)} | {rates} | "
                         + (f"at {since}x" if since is not None else "**not converged at the cap**") + " |")
    return lines


def indicator_lines(a: dict) -> list[str]:
    """Per bound, the images still standing that tripped each indicator of attack failure, and the verdicts the
    re-check in a batch of their own reversed."""
    rows = [(name, b) for name, b in in_order(a["bounds"]) if "indicators" in b]
    if not rows:
        return []
    names = list(rows[0][1]["indicators"])
    lines = ["", "Indicators of attack failure (Pintor et al. 2022) among the images still standing (ReabsNet / "
             "reject policy): an image that stands with one tripped is not evidence of robustness. *Re-check*: "
             "the verdicts a second judgement, of the breaking examples in a batch of their own, reversed (an image "
             "falls only where both judgements agree).", "",
             "| bound | " + " | ".join(names) + " | re-check reversed |", "|---|" + "---|" * (len(names) + 1)]
    for name, b in rows:
        ind, re = b["indicators"], b.get("rechecked", {})
        lines.append(f"| {bound_label(name)} | " + " | ".join(f"{ind[k]['reabsnet']} / {ind[k]['selective']}"
                                                          for k in names)
                     + f" | {re.get('reabsnet', 0)} / {re.get('selective', 0)} |")
    return lines


def alarm_lines(a: dict) -> list[str]:
    """The masking alarm's verdict and its evidence (`security.alarm`)."""
    alarm = a.get("alarm")
    if alarm is None:
        return []
    if not alarm["raised"]:
        return ["", "Masking alarm: not raised (no gradient-free step beat the gradient steps"
                + (", no standing image tripped an indicator of attack failure"
                   if any("indicators" in b for b in a["bounds"].values()) else "")
                + (", every escalation converged" if any("escalation" in b for b in a["bounds"].values()) else "")
                + (", the binarization test passed" if a.get("binarization") else "") + ")."]
    return ["", "**Masking alarm raised**: these robust accuracies may overstate the defense:", "",
            *[f"- {line}" for line in alarm["evidence"]]]


def _aimed(a: dict) -> str:
    """The steps re-aimed under each calibrated threshold, by title ("APGD-CE and Orthogonal PGD")."""
    titles = [s.title for s in steps_run(a) if s.at_threshold] or ["APGD-CE", "Orthogonal PGD"]
    return titles[0] if len(titles) == 1 else ", ".join(titles[:-1]) + " and " + titles[-1]


def steps_run(a: dict) -> list[Step]:
    """The steps of the standard suite (and the tuned one) whose sets the results hold rows of, in suite order.
    `a`: adaptive results, or {"bounds": [each bound's results], "baselines": [names], "n": images}."""
    bounds = a["bounds"].values() if isinstance(a["bounds"], dict) else a["bounds"]
    keys = {k for b in bounds for k in b["per_attack"]}
    names = a.get("baselines") or [k for k in a["clean"] if k not in DEFENSE_CLEAN]
    baselines = "|".join(re.escape(k) for k in names) or "-"
    found = []
    for step in Suite.catalog():
        stem = re.escape(step.stem or step.name).replace(r"\{baseline\}", f"({baselines})").replace(
            r"\{fpr\}", "[0-9.]+")
        if any(re.fullmatch(f"{stem}(-(linf|l2)-[0-9.e-]+)?", k) for k in keys):
            found.append(step)
    return found


def suite_lines(a: dict) -> list[str]:
    """One line per step that ran: its name, the attack and the network it differentiates, which images."""
    n_cw = a.get("n_cw", a["n"])
    return [f"- `{s.name}`: {s.title} on {NETWORKS[s.network]}; "
            + ("on the images still standing" if s.survivors else
               f"on the first {n_cw} images, one set cut at each bound" if s.minimal else "on every image")
            + (f" ({CITED[s.attack]})" if s.attack in CITED else "") for s in steps_run(a)]


def budget_line(a: dict) -> str:
    return (f"First {a['n']} test images. Budgets: APGD {a['steps']} steps, {a['restarts']} restart(s); APGD-T "
            f"{a.get('targets', '-')} target classes x {a['steps']} steps, FAB-T the same; Square "
            f"{a.get('queries', '-')} queries per image on the joint score and the baselines, "
            f"{a.get('pipeline_queries', '-')} on the pipeline's output (p_init 0.8; auto-attack's standard: 5,000)."
            + margin_note(a))


def margin_note(a: dict) -> str:
    m = a.get("success_margin")
    return (f" Success margin {m:g}: every step that takes one went on past the boundary until the label it wanted "
            "led by that much in logits." if m else "")


def _precision_lines(a: dict) -> list[str]:
    if a.get("baseline_precision"):
        return ["", f"The Madry-style baseline's APGD-CE, APGD-DLR, APGD-T and Square searched in "
                f"{a['baseline_precision']} (`adaptive.precision`; FAB-T and every attack on the defense in "
                "float32); every success they claimed was confirmed, and every example judged, by the float32 "
                "network." + (f" Chosen by `auto`: its pass timed {a['bf16_speedup']:g}x faster than float32's here."
                              if a.get("bf16_speedup") else "")]
    if a.get("bf16_speedup"):
        return ["", f"Every attack searched in float32: `adaptive.precision=auto` timed the baseline's bfloat16 pass "
                f"at {a['bf16_speedup']:g}x float32's here, below the {BF16_MIN_SPEEDUP:g}x it asks for."]
    return []


def _sanity_lines(a: dict) -> list[str]:
    """Carlini et al. (2019)'s checks, each with its measurement and verdict."""
    s = a.get("sanity")
    if not s:
        return []
    mono, unb, loss = s["monotone"], s["unbounded"], s["loss_increases"]
    it = s.get("iterative_beats_single_step")
    cw = unb.get("cw_l2_unbounded_success")
    lines = ["", "Sanity checks (Carlini et al. 2019, \"On evaluating adversarial robustness\"):", "",
             f"- accuracy falls as the bound grows: L-inf {', '.join(f'{v:.3f}' for v in mono['linf'])}"
             + (f"; L2 {', '.join(f'{v:.3f}' for v in mono['l2'])}" if mono["l2"] else "")
             + f": {verdict(mono['holds'])}.",
             f"- unbounded attack (joint APGD-CE with L-inf eps {unb.get('eps', 1):g}, the whole box): pipeline "
             f"wrong on {cell(unb['pipeline_wrong'])}"
             + (f"; unbounded joint CW-L2 targeted succeeds on {cell(cw)}." if cw else "."),
             *([f"- iterative beats single-step at {bound_label(it.get('bound', 'linf 0.3'))}: one step leaves "
                f"accuracy {cell(it['single_step'])}, the iterative worst case {cell(it['iterative'])}: "
                f"{verdict(it['holds'])}."] if it else []),
             f"- the attack loss goes up (joint APGD-CE at {bound_label(loss.get('bound', 'linf 0.1'))}, "
             f"{loss['images']} images): mean gain {fmt(loss['gain_after_first_step'])} after one step, "
             f"{fmt(loss['gain_at_end'])} at the end: {verdict(loss['holds'])}."]
    beyond = {name: b["square_beyond_gradient"] for name, b in in_order(a["bounds"]) if "square_beyond_gradient" in b}
    if beyond:
        wins = {name: {k: v for k, v in counts.items() if v} for name, counts in beyond.items()}
        wins = {name: w for name, w in wins.items() if w}
        detail = "; ".join(f"{bound_label(name)}: " + ", ".join(f"{k} {v}" for k, v in w.items())
                           for name, w in wins.items())
        lines.append("- gradient-free beats gradient? Images Square broke that every gradient attack left standing "
                     "(gradient masking where not zero): "
                     + (detail + ": gradient masking" if wins else "none at any bound: holds") + ".")
    t = s.get("transfer")
    if t:
        rows = "; ".join(f"{k}: transfer {v['transfer_from_master']:.3f}, white-box {v['adaptive']:.3f}"
                         for k, v in t["rows"].items())
        lines.append(f"- white-box beats transfer from the master (PGD crafted on the master alone, from the "
                     f"accuracy-vs-bound curve): {rows}: {verdict(t['holds'])}.")
    return lines


def verdict(holds: bool) -> str:
    return "holds" if holds else "FAILS"


def _fixed_fpr(a: dict) -> list[str]:
    """The reject policy at the paper's threshold and at thresholds calibrated to 1%, 5% and 50% clean false
    positives."""
    rows = [(name, b["fixed_fpr"]) for name, b in in_order(a["bounds"]) if b.get("fixed_fpr")]
    if not rows:
        return []
    c = a.get("calibration")
    where = (f"on the {c['val_images']:,} natural validation images (which the guardian flags "
             f"{c['flagged_at_0.5']['rate']:.4f} of at 0.5)" if c else "(no validation split: 0.5 only)")
    lines = ["", "The reject policy at other detection thresholds, calibrated " + where + ". *Rejection is an "
             "error*: robust only if the clean input is accepted and classified correctly and every attack's example "
             "is correct or rejected (Tramer 2022). *SR*: of the images the policy gets right clean, the share some "
             "attack's example fools unflagged (Bryniarski et al. 2022's SR@FPR). *ROC-AUC*: the guardian between "
             "the clean images and each image's final adversarial example (the wrong one it scores lowest). Every "
             f"attack above aims under 0.5; at each calibrated threshold joint {_aimed(a)} run again, "
             "aiming under it, on the images the policy still holds there (rows `joint-fpr...` below), and every "
             "example of every attack counts at every threshold.", "",
             "| bound | threshold (clean FPR) | clean rejected | correct or rejected | robust, rejection is an error | "
             "SR | ROC-AUC |", "|---|---|---|---|---|---|---|"]
    for name, f in rows:
        auc = f"{f['roc_auc_final_examples']:.3f}" if f.get("roc_auc_final_examples") is not None else "-"
        for key, v in f.items():
            if key == "roc_auc_final_examples":
                continue
            label = f"{v['threshold']:.4g}" + (f" ({key.split()[1]})" if key.startswith("fpr") else " (the paper's)")
            sr = cell(v["attack_success"]) if v.get("attack_success") else "-"
            lines.append(f"| {bound_label(name)} | {label} | {v['clean_rejected']['rate']:.3f} | "
                         f"{cell(v['correct_or_rejected'])} | {cell(v['robust_rejection_is_error'])} | {sr} | "
                         f"{auc} |")
    return lines


def _bound_table(a: dict) -> list[str]:
    """The robust-accuracy table: a row per bound (and clean), a column per network or policy the results hold."""
    c = a["clean"]
    first = next(iter(a["bounds"].values()), {})
    columns = [(key, header, clean) for key, header, clean in ADAPTIVE_COLUMNS if key in first or key in c]

    def clean_cell(key: str | None) -> str:
        if key is None or key not in c:
            return ""
        rejects = f" (rejects {c['selective_rejected']['rate']:.3f})" if key.startswith("selective") else ""
        return cell(c[key]) + rejects

    lines = ["| bound | " + " | ".join(h for _, h, _ in columns) + " |", "|---|" + "---|" * len(columns),
             "| none (clean) | " + " | ".join(clean_cell(k) for _, _, k in columns) + " |"]
    for name, b in in_order(a["bounds"]):
        lines.append(f"| {bound_label(name)} | " + " | ".join(cell(b[k]) if k in b else "-" for k, _, _ in columns)
                     + " |")
    return lines


def _classifier_section(a: dict) -> list[str]:
    """The adaptive section of a plain classifier (no guardian): AutoAttack's standard ensemble and APGD-DLR."""
    return ["", "## Adaptive attacks on the classifier alone", "",
            "AutoAttack's standard ensemble (APGD-CE, then APGD-T, FAB-T and Square on the images it left standing) "
            "and APGD-DLR on every image; an image is robust only if the classifier is right under all of them "
            f"(worst case). First {a['n']} images. Budgets: APGD {a['steps']} steps, {a['restarts']} restart(s); "
            f"APGD-T and FAB-T {a['targets']} target classes; Square {a['queries']} queries.{margin_note(a)}", "",
            *_bound_table(a), *escalation_lines(a), *alarm_lines(a), "",
            "| bound | attack | accuracy | flagged |", "|---|---|---|---|",
            *[row for name, b in in_order(a["bounds"]) for row in per_attack_rows(name, b["per_attack"])],
            *binarization_lines(a.get("binarization"))]


TEST_NAMES = {"classifier": "classifier", "reject": "reject policy", "reject-inverted": "reject policy, inverted "
              "guardian (control)", "revise": "ReabsNet (revision)"}


def binarization_lines(b: dict | None) -> list[str]:
    """The binarization test's table (security.binarization): per bound, defense and test, each attack's success
    rate on the binary tasks whose example is known to exist, with its pass/FAIL verdict."""
    if not b:
        return []
    from reabsnet.security.binarization import PASS_RATE

    lines = ["", "Binarization test (Zimmermann, Brendel, Tramer and Carlini 2022): per image, a linear readout on the "
             "defended model's frozen features separates points inside the bound from points on it, so an "
             "adversarial example within the bound is known to exist; each attack of the suite runs unchanged on "
             "the model with that readout. Attack success rate (ASR) over the images whose task could be built; "
             f"an attack passes at ASR >= {PASS_RATE:g}, and one that fails cannot be trusted to show robustness on "
             "that defense. 'random' counts the images where one of 100 random points on the bound already finds "
             "the example (the task is then easy). 'any' is the worst case per image over the attacks.", "",
             "| bound | defense | test | images | random | ASR per attack |", "|---|---|---|---|---|---|"]
    for name, entry in in_order({k: v for k, v in b.items()}):
        for defense, tests in entry["tests"].items():
            for test, r in tests.items():
                cells = "; ".join(f"{attack} {v['rate']:.2f} ({v['success']}/{v['n']}) "
                                  f"{'pass' if v['passes'] else 'FAIL'}" for attack, v in r["attacks"].items()
                                  if v["n"]) or "no task could be built"
                lines.append(f"| {bound_label(name)} | {defense} | {TEST_NAMES.get(test, test)} | {r['usable']} of "
                             f"{r['images']} | {r['random_success']} | {cells} |")
    return lines


def per_attack_rows(name: str, per_attack: dict) -> list[str]:
    rows = []
    for key, v in per_attack.items():
        if "attacked" in v:
            broke = (", ".join(f"{n} ({k})" for k, n in v["broke"].items()) if "at_threshold" in v
                     else " / ".join(f"{n}" for n in v["broke"].values()))
            flagged = f"{v['flagged']['rate']:.3f}" if v.get("flagged") else ""
            rows.append(f"| {name} | {key} | on {v['attacked']} standing: broke {broke} | {flagged} |")
        else:
            acc = v.get("reabsnet") or v.get("master") or v.get("madry")
            flagged = f"{v['flagged']['rate']:.3f}" if "flagged" in v else ""
            rows.append(f"| {name} | {key} | {cell(acc)} | {flagged} |")
    return rows
