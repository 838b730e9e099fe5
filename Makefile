# Two commands on a fresh machine:  make demo   and   make test
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# torch/torchvision pinned: a pip cache or wheel directory that holds them installs them offline, and pip
# never fetches a newer multi-GB CUDA build. Override: make TORCH="torch torchvision"
TORCH   ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-fast lint format install install-test clean assets experiment

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	bash scripts/demo.sh

# the tests run in one process per core (pytest-xdist): most are single-threaded, or wait on the subprocesses they start
test: install-test
	$(BIN)/python -m pytest -n auto --durations=15

# the edit loop: everything but the tests marked slow (torchrun, SIGKILL, training loops), under a minute
test-fast: install-test
	$(BIN)/python -m pytest -n auto -m "not slow"

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# photo cut-outs and backgrounds for `densecl data scenes`, from Debian packages, into .cache/assets/
assets: install
	bash scripts/fetch-assets.sh

# how long to pre-train on a small data set, and which dense positives: DenseCL, MoCo-v2 and the rules on the photo
# scenes, then on 4-band 16-bit scenes, pre-trained and evaluated on the CPU (many hours; resumable: rerun after an
# interruption). Writes docs/results.md. DRY_RUN=1 prints the steps.
experiment: install
	bash scripts/small_budget.sh
	DATASET=bands4 bash scripts/small_budget.sh

clean:
	rm -rf runs/demo .pytest_cache
