"""The adaptive suite as data and its engine: every step runs and is judged, survivors are exactly the images still
standing, a broken image is never credited, a user's own attack counts, and a calibrated threshold flags the share
of natural images it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from reabsnet.cli import main
from reabsnet.defense import ReabsNet
from reabsnet.errors import ReabsnetError
from reabsnet.security.api import evaluate_adaptive
from reabsnet.security.results import AttackRow, BoundResult
from reabsnet.security.suite import BOTH, MORE_AT_THRESHOLDS, REVISE, TUNED, Step, Suite
from reabsnet.security.thresholds import FPRS, calibrate

EPS = 0.6


class PixelGap(nn.Module):
    """Four classes on (N, 1, 2, 2) images (DLR needs four): class 0 when pixel 0 is brighter than pixel 1, else
    class 1; classes 2 and 3 never win."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x[:, 0, 0, 0] - x[:, 0, 0, 1]) * self.w
        return torch.stack([d, -d, d.abs() - 50, d.abs() - 60], dim=1)


class Bright(nn.Module):
    """A guardian that flags images whose mean pixel is above 0.2; its gradient moves every pixel alike, so the
    modifier's revision leaves PixelGap's label as it was."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.w * (x.flatten(1).mean(1) - 0.2)
        return torch.stack([-s, s], dim=1)


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight images, four of each class, pixel 0 and 1 apart by 0.2, pixel 3 telling them apart."""
    x = torch.zeros(8, 1, 2, 2)
    x[:, 0, 1, 1] = 0.01 * torch.arange(8)
    x[::2, 0, 0, 0], x[::2, 0, 0, 1] = 0.1, -0.1
    x[1::2, 0, 0, 0], x[1::2, 0, 0, 1] = -0.1, 0.1
    return x, torch.tensor([0, 1] * 4)


def _moves(x: torch.Tensor) -> torch.Tensor:
    """The known adversarial points: images 0 and 1 flagged and wrong (revision keeps them wrong, rejection holds
    them), images 2 and 3 wrong and unflagged (both policies lose them), the rest unchanged."""
    out = x.clone()
    for i in (0, 1):
        out[i, 0, 0, 0], out[i, 0, 0, 1] = x[i, 0, 0, 1] + 0.35, x[i, 0, 0, 0] + 0.35
        out[i, 0, 1] = 0.35
    for i in (2, 3):
        out[i, 0, 0, 0], out[i, 0, 0, 1] = x[i, 0, 0, 1], x[i, 0, 0, 0]
    return out


def moving(model, x, y, *, target=None, eps, norm, box, **settings):
    """A user's attack: it finds the known points (it returns the batch; the engine judges it)."""
    known, _ = _images()
    rows = [int(torch.nonzero((known.flatten(1) == xi.flatten()).all(1))[0]) for xi in x]
    return _moves(known)[rows]


def recording(seen: list):
    def attack(model, x, y, *, target=None, eps, norm, box, **settings):
        seen.append(len(x))
        return x.clone()
    return attack


def _run(suite: Suite, tmp_path, bounds=(EPS,), **kwargs):
    x, y = _images()
    budget = {"steps": 3, "restarts": 1, "targets": 1, "queries": 20, "pipeline_queries": 10, "n_cw": 2}
    return evaluate_adaptive(PixelGap(), Bright(), x, y, bounds=list(bounds), budget=budget, sanity=False,
                             suite=suite, out=tmp_path, **kwargs)


def test_the_defense_behaves_as_the_toy_says():
    x, y = _images()
    net = ReabsNet(PixelGap(), Bright()).eval()
    clean, moved = net.predict_batches(x), net.predict_batches(_moves(x))
    assert not clean.flagged.any() and torch.equal(clean.label, y)
    assert moved.flagged[:2].all() and not moved.flagged[2:].any()
    assert torch.equal(moved.label != y, torch.tensor([True] * 4 + [False] * 4))    # revision keeps 0, 1 wrong


def test_a_users_attack_counts_in_the_worst_case_and_survivors_are_exactly_what_stands(tmp_path):
    both, revise = [], []
    suite = Suite(()).add(Step("known-points", moving, "joint", BOTH)).add(
        Step("after-both", recording(both), "joint", BOTH, survivors=True)).add(
        Step("after-revise", recording(revise), "pipeline", REVISE, survivors=True))
    result = _run(suite, tmp_path)
    bound = result.results["bounds"][f"linf {EPS:g}"]
    # the known points break images 0-3 under revision and 2-3 under rejection: never credited to either
    assert (bound["reabsnet"]["k"], bound["selective"]["k"]) == (4, 6)
    row = bound["per_attack"][f"known-points-linf-{EPS:.2f}"]
    assert (row["reabsnet"]["k"], row["selective"]["k"], row["flagged"]["k"]) == (4, 6, 2)
    # a step serving both policies attacks what either still holds; one serving revision, what revision holds
    assert both == [6] and revise == [4]
    assert bound["per_attack"][f"after-both-linf-{EPS:.2f}"]["attacked"] == 6
    result.policy = "revise"
    assert result.broken_by(f"linf {EPS:g}") == [f"known-points-linf-{EPS:.2f}"] * 4 + [None] * 4


def test_a_step_leaving_its_bound_is_refused_in_one_line_and_writes_nothing(tmp_path):
    def too_far(model, x, y, *, target=None, eps, norm, box, **settings):
        return x + 2 * eps

    suite = Suite(()).add(Step("too-far", too_far, "joint", BOTH))
    with pytest.raises(ReabsnetError, match="suite step 'too-far': an example leaves the linf bound 0.1"):
        _run(suite, tmp_path, bounds=[0.1])
    assert not list(tmp_path.rglob("*.npz"))


@pytest.mark.parametrize("names", [None, ["+" + s.name for s in MORE_AT_THRESHOLDS]])
def test_every_step_of_the_standard_suite_runs_and_is_judged(tmp_path, names):
    """The standard suite, and (names "+...") the standard suite with every joint step re-aimed at the thresholds."""
    x, y = _images()
    calibration = x + 0.01 * torch.arange(8).view(8, 1, 1, 1)
    suite = Suite.named(names) if names else Suite.standard()
    assert len(suite) == len(Suite.standard()) + len(names or [])
    result = _run(suite, tmp_path, x_calibration=calibration)
    r = result.results
    rows = r["bounds"][f"linf {EPS:g}"]["per_attack"]
    expected = []
    for step in suite:
        if step.minimal:
            continue            # joint CW-L2 serves L2 bounds only
        if step.at_threshold:
            expected += [step.set_stem(fpr=f) for f in r["calibration"]["thresholds"]]
        else:
            expected.append(step.set_stem(baseline="master"))
    assert sorted(rows) == sorted(f"{e}-linf-{EPS:.2f}" for e in expected)
    # each survivor row says how many images it attacked: the judge saw every one of its examples
    assert all("attacked" in v or "reabsnet" in v or "master" in v for v in rows.values())


def test_choosing_steps_is_one_line_and_an_unknown_one_is_refused():
    suite = Suite.standard().only("joint-apgd-ce", "pipeline-square")
    assert suite.names == ["joint-apgd-ce", "pipeline-square"]
    assert Suite.standard().with_budget("pipeline-square", queries=7).only("pipeline-square").steps[0].settings == {
        "queries": 7}
    assert Suite.standard().add(TUNED, after="joint-apgd-t").names.index("tuned-apgd") == 7
    with pytest.raises(ReabsnetError, match="unknown suite step 'nope'; the steps: joint-apgd-ce, joint-apgd-dlr"):
        Suite.standard().only("nope")


def test_a_calibrated_threshold_flags_the_share_of_natural_images_it_names():
    x = torch.linspace(-0.5, 0.5, 400).view(400, 1, 1, 1).expand(400, 1, 2, 2).contiguous()
    guardian = Bright()
    guardian.w.data.fill_(1.0)         # no saturated scores: 400 distinct ones
    cal = calibrate(guardian, x)
    p = guardian(x).softmax(1)[:, 1]
    for f in FPRS:
        assert int((p > cal["thresholds"][f"{f:g}"]).sum()) == int(f * len(x))


def test_typed_results_read_and_write_the_committed_json_unchanged():
    results = json.loads(Path("docs/results/mnist-paper/results.json").read_text())["results"]["adaptive"]
    for b in results["bounds"].values():
        assert BoundResult.from_json(b).to_json() == b
        for row in b["per_attack"].values():
            assert AttackRow.from_json(row).to_json() == row


def test_suite_command_lists_the_steps_and_unknown_steps_exit_2(capsys, tmp_path):
    assert main(["suite", "--budget", "quick"]) == 0
    out = capsys.readouterr().out
    assert "joint-apgd-ce" in out and "pipeline-square" in out and "[queries=100]" in out
    assert main(["reproduce", "--profile", "smoke", "--set", "adaptive.suite=joint-apgd-ce,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown suite step 'nope'" in err
    x, y = _images()
    assert main(["evaluate", "--master", "m.safetensors", "--data", "d.npz", "--suite", "nope", "--out",
                 str(tmp_path)]) == 2
    assert "unknown suite step 'nope'" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_evaluation_settings_never_re_key_a_trained_network():
    from reabsnet.profiles import get_profile
    from reabsnet.train.madry import EVAL_ONLY, baseline_key

    base = get_profile("quick")
    key = baseline_key(base, "short-pgd", "data")
    for field in EVAL_ONLY:
        changed = get_profile("quick", [f"baseline.{field}=7"])
        assert baseline_key(changed, "short-pgd", "data") == key, field
    assert baseline_key(get_profile("quick", ["baseline.eps=0.2"]), "short-pgd", "data") != key


def test_the_own_attack_example_counts_its_attack(mnist, shared_home):
    import importlib.util

    spec = importlib.util.spec_from_file_location("own_attack", "examples/own_attack.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.evaluate(n=6, home=shared_home)
    rows = result.results["bounds"]["linf 0.3"]["per_attack"]
    assert list(rows) == ["joint-apgd-ce-linf-0.30", "brighten-linf-0.30", "joint-square-linf-0.30",
                          "master-apgd-ce-linf-0.30"]
    assert rows["brighten-linf-0.30"]["reabsnet"]["n"] == 6
