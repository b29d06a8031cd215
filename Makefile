# Two commands matter: `make reproduce` and `make test`. Both create .venv on first use and reuse it after.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stamp: rebuilt only when the package's metadata changes, so repeated runs install nothing.
STAMP := $(VENV)/.reabsnet-installed
# paper-subset: the shipped paper networks evaluated on the first test images (Tables 1-3, Figure 4, the adaptive
# table at L-inf 0.1-0.3), each cell beside the committed full-scale report's; PROFILE=quick trains everything
# from scratch at a small scale, PROFILE=paper evaluates at full scale (hours on a CPU)
PROFILE ?= paper-subset
PIP := pip install -q --disable-pip-version-check

.PHONY: reproduce test lint dist docs bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned: the local CPU wheel; an unpinned torch would pull gigabytes of CUDA packages.
	@# Without pip's byte-compilation of every file (about 20 s on one core): Python writes the bytecode of the
	@# modules a process imports, the first time one does.
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m $(PIP) --no-compile torch==2.13.0
	$(BIN)/python -m $(PIP) --no-compile -e '.[test]'
	@touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/reabsnet data fetch
	$(BIN)/reabsnet reproduce --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/ruff check src tests examples hubconf.py
	@# bytecode written where PYTHONDONTWRITEBYTECODE would have every test process compile torch again (3 s each)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n auto

# a wheel and an sdist in dist/: the package with its shipped networks, installable outside a clone
dist: $(STAMP)
	$(BIN)/python -m build --outdir dist .

# the docs and the API reference as a static site in site/, strict: a broken link or missing reference fails it
docs: $(STAMP)
	@$(BIN)/python -c "import mkdocs, mkdocstrings" 2>/dev/null || $(BIN)/python -m $(PIP) 'mkdocs>=1.6' 'mkdocstrings[python]>=0.26'
	$(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check src tests examples hubconf.py

clean-venv:
	rm -rf $(VENV)
