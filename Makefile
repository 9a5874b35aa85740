# Two entry points: `make demo` runs the whole pipeline on the bundled synthetic data,
# `make test` runs the test suite. Both create .venv with pip on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Test processes (pytest-xdist), each taking whole files: most of the suite's time is spent waiting on
# servers and subprocesses, so two processes on two cores finish sooner. TEST_WORKERS=0 runs in one.
TEST_WORKERS ?= 2
# The demo needs only the runtime; the tests also need the dev extra (Ray, moto, MiniLM, the reference metrics).
# --no-compile: Python compiles a module when it is first imported, so pip need not compile all of them (it
# halves the install: 78 s against 158-168 s for the runtime on 2 cores).
STAMP := $(VENV)/.installed-stamp
DEV_STAMP := $(VENV)/.installed-dev-stamp

.PHONY: install demo test lint clean

# `mm setup` creates the embedded stores (Prefect's and MLflow's databases in .mm/) at set-up, so the first
# run does not wait for them.
STORES := .mm/mlflow.db

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e .
	touch $(STAMP)

$(STORES): | $(STAMP)
	$(VENV)/bin/mm setup

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-compile -e '.[dev]'
	touch $(DEV_STAMP)

install: $(DEV_STAMP) $(STORES)

demo: $(STAMP) $(STORES)
	$(VENV)/bin/mm demo

test: $(DEV_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check mmcore tasks flows tests

clean:
	rm -rf .mm data/processed data/features data/models
