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

# The suite runs on every core (pytest-xdist; TEST_WORKERS=0 runs it in one process), a test file per
# worker at a time, so a file's module fixtures (a prepared corpus, a trained model) are built once.
# PYTEST_ARGS: more pytest options, e.g. `make test PYTEST_ARGS=--durations=25`.
TEST_WORKERS ?= auto
PYTEST_ARGS ?=
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: install
	$(PYTEST) tests

test-fast: install
	$(PYTEST) -m "not slow" tests

# The main job on the embedded PubMed data: prepare -> pretrain (tiny-cpu) -> report -> eval-ppl -> generate.
demo: install
	@start=$$(date +%s); set -e; \
	$(PY) -m biomamba prepare --out $(DEMO_DIR)/data; \
	$(PY) -m biomamba pretrain --config configs/tiny-cpu.yaml --out $(DEMO_DIR)/tiny data.dir=$(DEMO_DIR)/data; \
	$(PY) -m biomamba report train $(DEMO_DIR)/tiny --out $(DEMO_DIR); \
	$(PY) -m biomamba eval-ppl --model $(DEMO_DIR)/tiny --data prepared:$(DEMO_DIR)/data:val \
	    --out $(DEMO_DIR)/ppl.json --max-length 1024; \
	$(PY) -m biomamba report ppl $(DEMO_DIR)/ppl.json --out $(DEMO_DIR); \
	$(PY) -m biomamba eval-qa --model $(DEMO_DIR)/tiny --task titles:$(DEMO_DIR)/data:200 --out $(DEMO_DIR)/qa.json; \
	$(PY) -m biomamba generate --model $(DEMO_DIR)/tiny/model --max-new-tokens 40 \
	    --prompt "Patients with type 2 diabetes" --prompt "The aim of this study was"; \
	echo "make demo: done in $$(( $$(date +%s) - start )) s; results in $(DEMO_DIR)/ (report.md, loss.png)"

bench: install
	$(PY) bench/cpu_train.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
