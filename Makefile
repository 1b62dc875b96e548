# Two commands on a fresh clone: `make run` (materialize the default lifecycle) and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export LIFECYCLE_HOME ?= $(CURDIR)
export DAGSTER_HOME ?= $(LIFECYCLE_HOME)/.dagster
export LIFECYCLE_PRESET ?= tiny

.PHONY: run test install install-dev system-deps install-large-web ui mlflow-ui lint bench-dedup clean-data repro dvc-yaml

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned and installed first so no CUDA build gets pulled in by a dependency.
$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

# semgrep (the insecure-code analyser, ml/safety/insecure_code.py) lives in its own venv: its pins of
# opentelemetry, protobuf and click clash with dagster's and mlflow's.
SEMGREP := $(VENV)/semgrep/bin/semgrep
$(SEMGREP): | $(BIN)/activate
	$(PY) -m venv $(VENV)/semgrep
	$(VENV)/semgrep/bin/pip install -q semgrep==1.185.0

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

# The documentation of the `large` local web (3.4 GiB of Debian doc packages): for one-GPU `small` runs,
# never part of `make install` (CI and `make run` stay on the tiny web).
install-large-web: system-deps
	bash scripts/install-large-web-docs.sh

install: system-deps $(VENV)/.installed $(SEMGREP)
install-dev: system-deps $(VENV)/.installed-dev $(SEMGREP)

# training launches of `make run` use both cores (1.8x faster on tiny when the machine is otherwise idle); the
# tests keep 1 thread per launch, since two threads stall when another process takes a core
TRAIN_THREADS ?= 2

run: install
	mkdir -p $(DAGSTER_HOME)
	LIFECYCLE_TRAIN_THREADS=$(TRAIN_THREADS) $(BIN)/lifecycle run --partition local-web

test: install-dev
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

# dvc.yaml stages run `.venv/bin/python -m dagster_project.cli materialize` (params.yaml `python`): this venv,
# so `dvc repro` works from a fresh shell once `make install` has built it.
repro: install
	$(BIN)/dvc repro

dvc-yaml: install
	$(BIN)/python -m dagster_project.cli dvc-yaml

ui: install
	$(BIN)/python -c 'from dagster_project.cli import _instance; _instance()'  # dagster.yaml: no telemetry, no popup
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(LIFECYCLE_HOME)/mlflow.db -h 127.0.0.1 -p 5000

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench-dedup: install-dev
	$(BIN)/python benchmarks/dedup.py
