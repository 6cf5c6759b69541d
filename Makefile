# `make test` and `make demo` work on a fresh machine: they build .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.biomamba-installed
DEMO_DIR ?= demo_out

.PHONY: install test test-fast demo bench clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

demo: install
	$(PY) -m biomamba demo --out $(DEMO_DIR)

bench: install
	$(PY) bench/cpu_train.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
