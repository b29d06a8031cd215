"""Every result number of the README's tables and verdict traced to the committed report it cites
(docs/results/mnist-paper/results.json) or to the paper's numbers the report prints beside it, and docs/security.md's
tables (measured, threshold, escalation, guardian and binarization) to the records they cite: a cell changed by hand,
or a record regenerated without the pages, fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RESULTS = json.loads((ROOT / "docs" / "results" / "mnist-paper" / "results.json").read_text())

CW = ("CW L2 untargeted", "CW L2 targeted", "CW Linf untargeted", "CW Linf targeted")
# the "Results at a glance" rows: README label -> the report's headline cells, in the order of the row's values
GLANCE = {
    "clean accuracy, master / ReabsNet": ["clean accuracy, master", "clean accuracy, ReabsNet"],
    "natural images passed as natural": ["Table 1: natural images passed"],
    "Table 1, detection: DeepFool / CW-L2 U / CW-L2 T": [f"Table 1: detection, {a}" for a in ("DeepFool", *CW[:2])],
    "Table 1, detection: CW-Linf U / T": [f"Table 1: detection, {a}" for a in CW[2:]],
    "Table 2, ReabsNet correct: FGSM / DeepFool": ["Table 2: ReabsNet, FGSM", "Table 2: ReabsNet, DeepFool"],
    "Table 2, ReabsNet correct: CW-L2 U / T": [f"Table 2: ReabsNet, {a}" for a in CW[:2]],
    "Table 2, ReabsNet correct: CW-Linf U / T": [f"Table 2: ReabsNet, {a}" for a in CW[2:]],
    "Table 3 at L-inf 0.3, ReabsNet: DeepFool / CW-L2 U / CW-Linf U": [
        f"Table 3 eps 0.3: ReabsNet, {a}" for a in ("DeepFool", CW[0], CW[2])],
    "Table 3 at L-inf 0.3, Madry-style: DeepFool / CW-L2 U / CW-Linf U": [
        f"Table 3 eps 0.3: Madry-style, {a}" for a in ("DeepFool", CW[0], CW[2])],
    "adaptive L-inf 0.1 / 0.2 / 0.3, ReabsNet (worst case)": [
        f"adaptive L-inf {e}: ReabsNet" for e in ("0.1", "0.2", "0.3")],
    "adaptive L-inf 0.1 / 0.2 / 0.3, Madry-style baseline": [
        f"adaptive L-inf {e}: Madry-style" for e in ("0.1", "0.2", "0.3")],
}


SECURITY = (ROOT / "docs" / "security.md").read_text()


def _table(text: str, header: str) -> list[list[str]]:
    """The rows (cells, bold marks dropped) of the Markdown table whose header row starts with `header`."""
    start = text.index(f"| {header}")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().replace("*", "") for c in line.strip().strip("|").split("|")])
    return rows


def _value(v) -> float | None:
    return v["rate"] if isinstance(v, dict) else v


def _agrees(text: str, value: float | None) -> bool:
    """A printed number agrees with a value when it is that value rounded to the digits printed."""
    if value is None:
        return text == "not evaluated"
    digits = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - value) <= 0.5 * 10 ** -digits + 1e-12


def _row(label: str) -> list[str]:
    match = re.search(rf"^\| {re.escape(label)} \|(.+)\|\s*$", README, flags=re.M)
    assert match, f"README has no row {label!r}"
    return [c.strip().replace("*", "") for c in match.group(1).split("|")]


def _numbers(cell: str) -> list[str]:
    return ["not evaluated"] if cell == "not evaluated" else re.findall(r"\d+\.\d+|\d+", cell)


@pytest.mark.parametrize("label", list(GLANCE))
def test_every_results_at_a_glance_cell_is_the_reports_and_the_papers(label):
    from reabsnet.report import headline

    cells = headline(RESULTS)
    paper, ours = _row(label)
    names = GLANCE[label]
    for column, which in ((ours, 0), (paper, 1)):
        printed = _numbers(column)
        wanted = [_value(cells[n][which]) for n in names]
        if printed == ["not evaluated"]:
            assert all(w is None for w in wanted), (label, wanted)
            continue
        assert len(printed) == len(wanted), (label, printed, wanted)
        assert all(_agrees(p, w) for p, w in zip(printed, wanted, strict=True)), (label, printed, wanted)


def test_the_glance_table_has_no_row_the_test_does_not_trace():
    table = README[README.index("## Results at a glance"):README.index("Tables 1-3 use the paper's threat model")]
    rows = [r.split("|")[1].strip() for r in table.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert rows == list(GLANCE)


def _adaptive_rows_are_the_reports(rows: list[list[str]], clean_label: str) -> None:
    """An adaptive table (bound | ReabsNet | reject policy | master alone | Madry-style baseline) against the report:
    the clean row (with the reject policy's rejections) and one row per bound."""
    a = RESULTS["results"]["adaptive"]
    assert [r[0] for r in rows] == [clean_label, "L-inf 0.1", "L-inf 0.2", "L-inf 0.3", "L2 1.5", "L2 2.0"]
    for label, *cells in rows:
        if label == clean_label:
            c = a["clean"]
            wanted = [c["reabsnet"], c["selective_correct_or_rejected"], c["selective_rejected"], c["master"],
                      c["madry"]]
        else:
            norm, eps = label.replace("L-inf", "linf").replace("L2", "l2").split()
            b = a["bounds"][f"{norm} {float(eps):g}"]
            wanted = [b["reabsnet"], b["selective"], b["master"], b["madry"]]
        printed = [n for cell in cells for n in _numbers(cell)]
        assert len(printed) == len(wanted) and all(
            _agrees(p, _value(w)) for p, w in zip(printed, wanted, strict=True)), (label, printed)


def test_the_security_table_is_the_reports_adaptive_table():
    section = README[README.index("## Security"):README.index("## Speed")]
    _adaptive_rows_are_the_reports(_table(section, "bound | ReabsNet | reject policy"), "clean")


def test_the_verdict_is_the_reports():
    from reabsnet.report import headline

    cells = headline(RESULTS)
    verdict = README[README.index("> **Verdict.**"):README.index("![robust accuracy")]
    detection = [_value(cells[f"Table 1: detection, {a}"][0]) for a in ("DeepFool", *CW)]
    low, high = map(int, re.search(r"flags (\d+)-(\d+)% of DeepFool and CW", verdict).groups())
    assert (low, high) == (int(min(detection) * 100), round(max(detection) * 100))
    revised = [_value(cells[f"Table 2: ReabsNet, {a}"][0]) for a in CW]
    paper = [cells[f"Table 2: ReabsNet, {a}"][1] for a in CW]
    ours_range, paper_range = re.search(r"not for CW \(([\d.]+-[\d.]+) against ([\d.]+-[\d.]+)\)", verdict).groups()
    assert ours_range == f"{min(revised):.2f}-{max(revised):.2f}"
    assert paper_range == f"{min(paper):.2f}-{max(paper):.2f}"
    keeps = re.findall(r"keeps \*\*([\d.]+)\*\*", verdict)
    assert _agrees(keeps[0], _value(cells["adaptive L-inf 0.3: ReabsNet"][0]))
    assert _agrees(keeps[1], _value(cells["adaptive L-inf 0.3: Madry-style"][0]))


def test_docs_security_measured_table_is_the_reports():
    rows = _table(SECURITY, "bound | ReabsNet (worst case) | reject policy")
    _adaptive_rows_are_the_reports(rows, "none (clean, these 1,000 images)")


def test_docs_security_guardian_table_is_the_sharpness_study():
    study = json.loads((ROOT / "docs" / "results" / "mnist-paper" / "SHARPNESS.json").read_text())["rows"]
    rows = _table(SECURITY, "guardian (validation accuracy)")
    assert len(rows) == len(study)
    for (label, *cells), r in zip(rows, study, strict=True):
        epochs = re.search(r"(\d+) epochs?", label).group(1)
        same = epochs in r["guardian"] and ("shipped" in label) == ("shipped" in r["guardian"])
        assert same, (label, r["guardian"])
        b = r["bounds"]
        f = b["linf 0.3"]["fixed_fpr"]
        wanted = [r["val_accuracy"], *(b[f"linf {e}"][col]["rate"] for col in ("reabsnet", "selective")
                                       for e in ("0.1", "0.2", "0.3")),
                  *(f[k]["attack_success"]["rate"] for k in ("0.5", "fpr 0.01", "fpr 0.05", "fpr 0.5")),
                  f["roc_auc_final_examples"]]
        printed = _numbers(label)[-1:] + [n for cell in cells for n in _numbers(cell)]
        assert len(printed) == len(wanted) and all(
            _agrees(p, w) for p, w in zip(printed, wanted, strict=True)), (label, printed, wanted)


ESCALATION = json.loads((ROOT / "docs" / "results" / "mnist-paper" / "ESCALATION.json").read_text())["adaptive"]


def _escalated(bound: str, column: str, record: dict = ESCALATION) -> tuple[list[float], str]:
    """A verdict's rate after each round it was attacked in, and where it converged ("at Nx" or "not converged at
    Mx", M the cap)."""
    e = record["bounds"][bound]["escalation"]
    rates = [r["robust"][column] for r in e["rounds"] if column in r.get("columns", [column])]
    since = e["converged"][column]
    return rates, (f"converged at {since}x" if since is not None else f"not converged at {e['rounds'][-1]['factor']}x")


@pytest.mark.parametrize("header, record, columns", [
    ("bound | ReabsNet: 1x / 3x / 10x", ESCALATION, ("reabsnet", "selective", "madry")),
    ("bound (the quick pair) | ReabsNet: 1x / 3x", json.loads(
        (ROOT / "docs" / "results" / "mnist-quick" / "ESCALATION.json").read_text())["adaptive"],
     ("reabsnet", "selective")),
])
def test_docs_security_escalation_tables_are_the_escalated_runs(header, record, columns):
    rows = _table(SECURITY, header)
    assert [r[0] for r in rows] == ["L-inf 0.1", "L-inf 0.2", "L-inf 0.3"]
    for label, *cells in rows:
        bound = label.replace("L-inf", "linf")
        for cell, column in zip(cells, columns, strict=True):
            rates, state = _escalated(bound, column, record)
            printed, said = cell.split(" (")
            numbers = printed.split(" / ")
            assert len(numbers) == len(rates) and all(_agrees(p, w) for p, w in zip(numbers, rates, strict=True)), (
                label, column, numbers, rates)
            assert said.rstrip(")") == state, (label, column, said, state)


def test_the_verdict_says_where_the_headline_converged():
    box = README[README.index("> **Verdict.**"):README.index("![robust accuracy")]
    verdict = " ".join(line.removeprefix(">").strip() for line in box.splitlines())
    said = re.search(r"3x and 10x on the first (\d+) test images[^:]*: ReabsNet's ([\d.]+) and the baseline's ([\d.]+)"
                     r" at L-inf 0.3 converged at (\d+)x", verdict)
    assert said, verdict
    n, reabsnet, madry, at = said.groups()
    assert int(n) == ESCALATION["n"]
    for printed, column in ((reabsnet, "reabsnet"), (madry, "madry")):
        rates, state = _escalated("linf 0.3", column)
        assert _agrees(printed, rates[-1]) and state == f"converged at {at}x", (column, rates, state)
    first, last = re.search(r"L-inf 0.2 the reject policy fell from ([\d.]+) to ([\d.]+) and had not converged",
                            verdict).groups()
    rates, state = _escalated("linf 0.2", "selective")
    assert _agrees(first, rates[0]) and _agrees(last, rates[-1]) and state.startswith("not converged")


def test_docs_security_threshold_table_is_the_re_aimed_run():
    bounds = json.loads((ROOT / "docs" / "results" / "mnist-paper" / "THRESHOLDS.json").read_text())["adaptive"][
        "bounds"]
    rows = _table(SECURITY, "bound | correct or rejected at 0.5 / 1% / 5% / 50% FPR")
    assert [r[0] for r in rows] == ["L-inf 0.1", "L-inf 0.2", "L-inf 0.3"]
    for label, *cells in rows:
        f = bounds[label.replace("L-inf", "linf")]["fixed_fpr"]
        for cell, field in zip(cells, ("correct_or_rejected", "robust_rejection_is_error"), strict=True):
            wanted = [f[k][field]["rate"] for k in ("0.5", "fpr 0.01", "fpr 0.05", "fpr 0.5")]
            printed = cell.split(" / ")
            assert len(printed) == 4 and all(_agrees(p, w) for p, w in zip(printed, wanted, strict=True)), (
                label, field, printed, wanted)
    readme = README[README.index("With every joint step re-aimed"):]
    kept = re.search(r"it keeps ([\d.]+) at L-inf 0.3 at\s+1%, 5% and 50%", readme).group(1)
    assert all(_agrees(kept, bounds["linf 0.3"]["fixed_fpr"][k]["correct_or_rejected"]["rate"])
               for k in ("fpr 0.01", "fpr 0.05", "fpr 0.5"))


def test_docs_security_binarization_table_is_the_binarization_run():
    results = json.loads((ROOT / "docs" / "results" / "mnist-paper" / "binarization.json").read_text())["results"]
    rows = _table(SECURITY, "test | L-inf 0.1 | L-inf 0.2 | L-inf 0.3")
    tests = {"reject policy": ("ReabsNet", "reject"), "ReabsNet": ("ReabsNet", "revise"),
             "Madry-style baseline": ("Madry-style baseline", "classifier")}
    assert [r[0].split(":")[0] for r in rows] == list(tests)
    for label, *cells in rows:
        who, test = tests[label.split(":")[0]]
        attacks = [a.replace("any", "any attack") for a in label.split(": ")[1].split(" / ")]
        for cell, bound in zip(cells, ("linf 0.1", "linf 0.2", "linf 0.3"), strict=True):
            record = results[bound]["tests"][who][test]["attacks"]
            printed = cell.split(" / ")
            wanted = [record[a]["rate"] for a in attacks]
            assert len(printed) == len(wanted) and all(_agrees(p, w) for p, w in zip(printed, wanted, strict=True)), (
                label, bound, printed, wanted)
