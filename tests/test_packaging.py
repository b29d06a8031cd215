"""The package as a user gets it: torch.hub entry points on a clone, the wheel with its shipped networks installed
outside the clone, and docs whose relative links resolve."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_torch_hub_loads_the_verified_paper_networks_from_a_clone():
    from reabsnet.defense import ReabsNet
    from reabsnet.models.checkpoint import load_model
    from reabsnet.stages import SHIPPED_MODELS

    net = torch.hub.load(str(ROOT), "reabsnet_mnist", source="local", trust_repo=True)
    assert isinstance(net, ReabsNet) and not net.training and not net.master.training
    master, _ = load_model(SHIPPED_MODELS / "mnist" / "paper" / "master.safetensors", expect="master")
    assert all(torch.equal(a, b) for a, b in zip(net.master.state_dict().values(), master.state_dict().values(),
                                                 strict=True))
    baseline = torch.hub.load(str(ROOT), "madry_mnist", source="local", trust_repo=True)
    assert not baseline.training and baseline(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_every_hub_entry_point_says_what_it_returns():
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    entries = [n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith("_")
               and getattr(hub, n).__module__ == "hubconf"]
    assert sorted(entries) == ["madry_mnist", "reabsnet_mnist"]
    assert all(len(getattr(hub, n).__doc__ or "") > 80 for n in entries)


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    heads = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_every_relative_link_of_the_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs").glob("*/*/*.md"))]
    broken = []
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):       # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    import subprocess

    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}: exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def test_the_wheel_carries_the_networks_and_works_installed_outside_the_clone(tmp_path, home, mnist):
    """`python -m build` (what `make dist` runs), then the wheel in a fresh virtual environment in a folder that is
    not the clone, torch installed as `make` installs it: the version, the shipped ReabsNet's accuracy, `classify`
    on a PNG and `evaluate` on a small .npz with the smoke budget. Measured: about 40 s on 2 cores."""
    import os
    import sys
    import tarfile
    import zipfile

    import numpy as np
    from PIL import Image

    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], tmp_path, dict(os.environ), 900)
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"reabsnet/shipped/mnist/paper/{n}.{ext}" for n in ("master", "guardian", "madry")
            for ext in ("safetensors", "json")} <= set(names)
    # the sdist builds the same wheel (`build` makes the wheel from the sdist): the same package files
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as t:
        packaged = {n.split("/src/", 1)[1] for n in t.getnames() if "/src/reabsnet/" in n and t.getmember(n).isfile()}
    assert packaged == {n for n in names if n.startswith("reabsnet/")}

    venv, elsewhere = tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # installed as `make` installs (no byte-compilation at install): the first process here writes the bytecode of
    # what it imports, so PYTHONDONTWRITEBYTECODE is left out, as `make test` leaves it out
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")}
    env |= {"REABSNET_HOME": str(home), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    # without a pip of its own (ensurepip takes 4 s): this process's pip installs into it, the same files (pip's
    # --python came in 22.3; an older pip, as early Python 3.10 bundles, gets the venv's own pip)
    import pip as outer_pip

    own_pip = tuple(int(p) for p in outer_pip.__version__.split(".")[:2]) < (22, 3)
    _run([sys.executable, "-m", "venv", *([] if own_pip else ["--without-pip"]), str(venv)], elsewhere, env)
    py, cli = str(venv / "bin" / "python"), str(venv / "bin" / "reabsnet")
    pip = [py, "-m", "pip"] if own_pip else [sys.executable, "-m", "pip", "--python", py]
    pip += ["install", "-q", "--disable-pip-version-check", "--no-compile"]
    _run([*pip, "torch==2.13.0"], elsewhere, env, 900)
    _run([*pip, str(wheel)], elsewhere, env, 900)

    assert "reabsnet 0.1.0" in _run([cli, "--version"], elsewhere, env)
    accuracy = _run([py, "-c", "import reabsnet; from reabsnet import data\n"
                     "net = reabsnet.load_pretrained('mnist-paper'); x, y = data.load('mnist').split('test', 200)\n"
                     "print((net.predict(x).label == y).float().mean().item(), reabsnet.__file__)"], elsewhere, env)
    rate, where = accuracy.split()
    assert float(rate) >= 0.99 and str(venv) in where and str(ROOT) not in where
    x, y = mnist.split("test", 10)
    Image.fromarray(((x[0, 0] + 0.5) * 255).round().byte().numpy()).save(elsewhere / "digit.png")
    assert f"label {int(y[0])}" in _run([cli, "classify", "digit.png"], elsewhere, env)
    np.savez(elsewhere / "test.npz", x=x.numpy(), y=y.numpy())
    shipped = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / \
        "reabsnet" / "shipped" / "mnist" / "paper"
    out = _run([cli, "evaluate", "--master", str(shipped / "master.safetensors"), "--guardian",
                str(shipped / "guardian.safetensors"), "--data", "test.npz", "--box=-0.5,0.5", "--temperature",
                "100", "--attacks", "none", "--budget", "smoke", "--bounds", "0.1", "--out", "ev"], elsewhere, env)
    assert "robust accuracy (revise" in out and (elsewhere / "ev" / "REPORT.md").is_file()


PUBLIC = ("reabsnet", "reabsnet.attacks", "reabsnet.defense", "reabsnet.security")


def test_every_public_name_has_a_docstring_and_an_api_reference_entry():
    """The public surface is what the four modules export in `__all__`; docs/api.md (what `make docs` renders with
    mkdocstrings, strict) holds an entry for each function and class, and each has a docstring."""
    import inspect

    entries = set(re.findall(r"^::: (\S+)$", (ROOT / "docs" / "api.md").read_text(), flags=re.M))
    missing, undocumented = [], []
    for name in PUBLIC:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if attr.startswith("__") or not (inspect.isclass(obj) or callable(obj)):
                continue
            if f"{obj.__module__}.{obj.__qualname__}" not in entries:
                missing.append(f"{name}.{attr}")
            if not (obj.__doc__ or "").strip():
                undocumented.append(f"{name}.{attr}")
    assert not missing and not undocumented, f"no API entry: {missing}; no docstring: {undocumented}"
