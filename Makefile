# ssaf: `make test` and `make train` install everything they need on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-unit test-gpu train lint format bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "ssaf needs Python 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv and install ssaf with its dev tools

test: $(STAMP) ## every test that gates a merge (CI; no network; GPU tests skip without a GPU), ~11-12 min on 2 cores once installed
	$(PY) -m pytest $(ARGS)

test-unit: $(STAMP) ## the unit tests only (the maths, the adapter, data readers, contracts), ~2-4 min (2 cores; 4 with an empty Triton cache)
	$(PY) -m pytest -m "not integration" $(ARGS)

test-gpu: $(STAMP) ## the CUDA tests (kernels and transforms at real shapes, bf16); on a machine with a GPU
	$(PY) -m pytest -m gpu $(ARGS)

train: $(STAMP) ## run the default job offline (override with ARGS="task=mnli attn=softmax ...")
	$(PY) train.py $(ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check src tests scripts train.py setup.py
	$(VENV)/bin/ruff format --check src tests scripts train.py setup.py
	$(VENV)/bin/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests scripts train.py setup.py
	$(VENV)/bin/ruff format src tests scripts train.py setup.py

bench: $(STAMP) ## transform and training-step benchmarks (prints tables)
	$(PY) scripts/bench_transforms.py $(ARGS)

clean: ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
