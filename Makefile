# pertstore: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PERTSTORE_DATA_DIR ?= $(abspath ../shared/data)
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,s3,generative]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/pertstore demo --out demo-output

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_align.py

clean:
	rm -rf demo-output .pytest_cache
