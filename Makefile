# Two entry points: `make demo` runs the whole pipeline on the bundled synthetic data,
# `make test` runs the test suite. Both create .venv with pip on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Test processes (pytest-xdist), each taking whole files: most of the suite's time is spent waiting on
# servers and subprocesses, so two processes on two cores finish sooner. TEST_WORKERS=0 runs in one.
TEST_WORKERS ?= 2
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mm demo

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check mmcore tasks flows tests

clean:
	rm -rf .mm data/processed data/features data/models
