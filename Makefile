# fundus2ffa: `make train` and `make test` are the two commands of the README quick start.
# Each creates .venv (Python 3.11+) with the pinned dependency set on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist workers for make test / test-fast: one per core of the 2-core CI machine (each runs one torch thread).
TEST_WORKERS ?= 2

.PHONY: install train test test-fast bench bench-reference smoke clean-outputs

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint constraints.txt --editable ".[test,export,lpips,app,mlflow,optuna]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) -m fundus2ffa.run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Your own loop: everything but the tests marked slow (the model x data smoke matrix, the README commands);
# `make test` (CI) runs them all.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m fundus2ffa.bench $(ARGS)

# Side by side with the reference pix2pixHD in ../shared/perf (interleaved rounds, one thread; not part of make test).
bench-reference: $(STAMP)
	$(PY) experiments/perf/bench_reference.py $(ARGS)

smoke: $(STAMP)
	$(PY) -m fundus2ffa.run debug=smoke $(ARGS)

clean-outputs:
	rm -rf outputs multirun
