# Two commands matter: `make reproduce` and `make test`. Both create .venv on first use and reuse it after.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stamp: rebuilt only when the package's metadata changes, so repeated runs install nothing.
STAMP := $(VENV)/.reabsnet-installed
PROFILE ?= quick
PIP := pip install -q --disable-pip-version-check

.PHONY: reproduce test lint bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned: the local CPU wheel; an unpinned torch would pull gigabytes of CUDA packages.
	@# pip byte-compiles what it installs (43 s of the 99 s here). Not --no-compile: where PYTHONDONTWRITEBYTECODE
	@# is set (this sandbox sets it) every process would then compile torch from source again, about 3 s each.
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m $(PIP) torch==2.13.0
	$(BIN)/python -m $(PIP) -e '.[test]'
	@touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/reabsnet data fetch
	$(BIN)/reabsnet reproduce --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean-venv:
	rm -rf $(VENV)
