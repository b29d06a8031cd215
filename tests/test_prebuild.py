"""`reabsnet reproduce --workers N` (reabsnet.prebuild): the tasks build every attack set under the key the
reproduction asks for, so the reproduction after them attacks nothing."""

from __future__ import annotations

import json
import math

import pytest
import torch

from homes import copy_networks
from reabsnet.cli import main
from reabsnet.profiles import get_profile

NETWORKS = ("init", "teacher", "master", "guardian", "madry")
# the smoke profile on fewer images (the networks' keys do not depend on these)
TINY = ["eval.n=10", "eval.n_cw_l2=4", "eval.n_cw_linf=3", "eval.n_pgd=6", "eval.n_cw_l2_baseline=3",
        "adaptive.n=6", "adaptive.n_cw=3", "adaptive.harden_n=0", "eval.figure_examples=1"]


def _home_with_networks(tmp_path, smoke_run, mnist_cache):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    for f in (mnist_cache, mnist_cache.with_suffix(".json")):
        (home / "data" / f.name).symlink_to(f)
    copy_networks(smoke_run, home / "runs" / "mnist" / "smoke", NETWORKS)
    return home


def test_the_tasks_ask_for_exactly_the_sets_the_reproduction_built(smoke_run, shared_home, monkeypatch):
    """In the smoke reproduction's home the tasks compute nothing and load every set it built, and only those."""
    from pathlib import Path

    import reabsnet.evaluation.paper as paper
    from reabsnet.prebuild import build_task, networks, tasks

    loaded, load_set = set(), paper.load_set

    def recorded(path):
        loaded.add(Path(path).relative_to(smoke_run).as_posix())
        return load_set(path)

    def refuse(name):
        raise AssertionError(f"a task asked for a set the reproduction did not build ({name})")

    monkeypatch.setattr(paper, "load_set", recorded)
    monkeypatch.setattr(paper, "get_attack", refuse)
    profile, cpu = get_profile("smoke"), torch.device("cpu")
    nets = networks(profile, cpu, shared_home, shipped=None)       # as a worker holds them
    for name in tasks(profile):
        build_task(name, profile, cpu, shared_home, shipped=None, nets=nets)
    built = {p.relative_to(smoke_run).as_posix() for sub in ("attacks", "attacks-madry", "attacks-pgd",
                                                             "attacks-madry-pgd", "adaptive")
             for p in (smoke_run / sub).glob("*.npz")}
    assert loaded == built and len(built) > 60


@pytest.mark.slow
def test_after_the_tasks_the_reproduction_attacks_nothing(smoke_run, mnist_cache, tmp_path, monkeypatch):
    import reabsnet.evaluation.paper as paper
    from reabsnet.prebuild import build_task, tasks
    from reabsnet.reproduce import reproduce

    profile, cpu = get_profile("smoke", TINY), torch.device("cpu")
    home = _home_with_networks(tmp_path, smoke_run, mnist_cache)
    names = tasks(profile)
    # tables x2, pgd, cw, sanity; the smoke profile's 3 bounds (L-inf 0.1, 0.3, L2 2) x 3 parts
    assert len(names) == len(set(names)) == 5 + 3 * 3
    assert len(tasks(get_profile("paper"))) == 5 + 5 * 3
    assert names[0] == "adaptive linf 0.1 defense" and names.index("adaptive cw") < names.index("pgd")
    for name in names:
        assert build_task(name, profile, cpu, home, shipped=None) > 0

    def refuse(name):
        raise AssertionError(f"the reproduction attacked ({name}) after every task ran")

    monkeypatch.setattr(paper, "get_attack", refuse)
    out = reproduce(profile, cpu, home=home, command="test", shipped=None)
    results = json.loads((out / "results.json").read_text())["results"]
    assert set(results["adaptive"]["bounds"]) == {"linf 0.1", "linf 0.3", "l2 2"}
    assert results["adaptive"]["sanity"]["unbounded"]["pipeline_wrong"]["n"] == 6


def test_a_task_without_the_defense_builds_only_its_baseline(smoke_run, mnist_cache, tmp_path):
    from reabsnet.prebuild import build_task

    profile = get_profile("smoke", TINY)
    home = _home_with_networks(tmp_path, smoke_run, mnist_cache)
    build_task("adaptive linf 0.3 madry", profile, torch.device("cpu"), home, shipped=None)
    built = sorted(p.stem for p in (home / "runs" / "mnist" / "smoke" / "adaptive").glob("*.npz"))
    assert built and all(name.startswith("madry-") and name.endswith("linf-0.30") for name in built)
    with pytest.raises(ValueError, match="unknown task"):
        build_task("adaptive linf 0.3 everyone", profile, torch.device("cpu"), home, shipped=None)


@pytest.mark.slow
def test_workers_give_the_single_process_results(smoke_run, mnist_cache, tmp_path):
    """Two workers then the reproduction: the same results as one process (timings aside)."""
    homes = [_home_with_networks(tmp_path / str(w), smoke_run, mnist_cache) for w in (1, 2)]
    for workers, home in zip((1, 2), homes, strict=True):
        args = ["-q", "reproduce", "--profile", "smoke", "--home", str(home), "--device", "cpu",
                "--workers", str(workers), *[a for s in TINY for a in ("--set", s)]]
        assert main(args) == 0

    def same(a, b, at=""):
        """Counts and labels equal; floats (medians, scores) equal up to the thread count's rounding."""
        if isinstance(a, dict):
            keys = {k for k in a if "seconds" not in k}
            assert keys == {k for k in b if "seconds" not in k}, at
            for k in keys:
                same(a[k], b[k], f"{at}/{k}")
        elif isinstance(a, list):
            assert len(a) == len(b), at
            for i, (u, v) in enumerate(zip(a, b, strict=True)):
                same(u, v, f"{at}[{i}]")
        elif isinstance(a, float) and isinstance(b, float):
            assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), (at, a, b)
        else:
            assert a == b, (at, a, b)

    one, two = (json.loads((h / "runs" / "mnist" / "smoke" / "results.json").read_text()) for h in homes)
    same(one["results"], two["results"])
    # the workers' phase counts in the run's wall time, and the report says what it did
    assert "prebuild" not in one and two["prebuild"]["workers"] == 2 and not two["prebuild"]["stopped"]
    pre = two["stage_seconds"]["sets by 2 workers (prebuild)"]
    assert pre == two["prebuild"]["seconds"] and two["wall_seconds"] >= pre > 0
    assert "first built by 2 processes" in (homes[1] / "runs" / "mnist" / "smoke" / "REPORT.md").read_text()
