"""The README's Python blocks run as shown (on a home holding the MNIST cache), so the front page cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
OWN_MODEL = Path(__file__).resolve().parents[1] / "docs" / "own-model.md"


def test_the_readme_has_its_python_blocks():
    assert len(BLOCKS) >= 2 and any("load_pretrained" in b for b in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, home, monkeypatch, capsys):
    monkeypatch.setenv("REABSNET_HOME", str(home))
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    if "pretrained_names()" in BLOCKS[index]:
        # one joint APGD-DLR on these 10 images: the shipped ReabsNet keeps at most one (the full suite keeps 0 of
        # 1,000), the Madry-style baseline at least 8 (0.892 of 1,000 under the suite)
        assert "['mnist-paper', 'mnist-paper-madry']" in out
        ours = float(re.search(r"ReabsNet at L-inf 0.3: ([0-9.]+)", out).group(1))
        theirs = float(re.search(r"baseline at L-inf 0.3: ([0-9.]+)", out).group(1))
        assert ours <= 0.1 and theirs >= 0.8, out
    if "evaluate_adaptive" in BLOCKS[index]:
        # two steps of the suite at the smoke budget on 10 images: a rate at the bound, and per image the step
        # that broke it or None
        assert "{'linf 0.1': " in out and ("joint-apgd-ce-linf-0.10" in out or "None" in out)
    if "outside the box" in BLOCKS[index]:
        assert "inputs lie outside the box (-0.5, 0.5)" in out


def test_the_own_model_page_builds_the_suite_it_shows(capsys):
    (block,) = re.findall(r"```python\n(.*?)```", OWN_MODEL.read_text(), flags=re.S)
    exec(compile(block, "docs/own-model.md python block", "exec"), {"__name__": "docs"})
    assert "['joint-apgd-ce', 'brighten', 'joint-square', 'baseline-apgd-ce']" in capsys.readouterr().out
