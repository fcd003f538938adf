# pertstore: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PERTSTORE_DATA_DIR ?= $(abspath ../shared/data)
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: setup demo test lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77"
	$(PY) -m pip install --quiet -e '.[dev,s3,crosscontext,generative]'
	$(PY) -m pip install --quiet --no-deps 'torchcfm>=1.0'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/pertstore demo --out demo-output

test: setup
	$(PY) -m pytest -q

lint: setup typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy on the store, the catalog and the facade, through a tree of links laid out as the installed
# package (store/, catalog/, ... are pertstore.store, pertstore.catalog, ... once installed)
typecheck: setup
	rm -rf build/typecheck && mkdir -p build/typecheck/pertstore
	for f in pertstore/*; do ln -s "$(CURDIR)/$$f" build/typecheck/pertstore/; done
	for p in store catalog producers consumers api; do ln -s "$(CURDIR)/$$p" build/typecheck/pertstore/$$p; done
	cd build/typecheck && "$(CURDIR)/$(VENV)/bin/mypy" --config-file "$(CURDIR)/pyproject.toml" \
		pertstore/store pertstore/catalog pertstore/_store.py

# every benchmark, one table (benchmarks/results/bench.csv); FULL=1: the documented sizes (bench-full.csv)
bench: setup
	$(PY) benchmarks/run_all.py $(if $(FULL),--full)

clean:
	rm -rf demo-output .pytest_cache build
