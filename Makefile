# Two commands: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA ?= $(abspath ../shared/data)
SHARED_BENCHMARKS ?= $(abspath ../shared/benchmarks)
DEMO_WORKDIR ?= workdirs/demo

.PHONY: venv demo test lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,tpu]'
	$(PY) -m pip check
	touch $(STAMP)

demo: venv
	JAX_PLATFORMS=$${JAX_PLATFORMS-cpu} $(PY) tools/launch.py demo --workdir $(DEMO_WORKDIR)

test: venv
	JAX_PLATFORMS=$${JAX_PLATFORMS-cpu} FLANJAX_DATA_DIR=$(SHARED_DATA) FLANJAX_BENCHMARK_DIR=$(SHARED_BENCHMARKS) $(PY) -m pytest -q -rs $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check flanjax mixtures tools configs benchmarks tests
	$(VENV)/bin/ruff format --check flanjax mixtures tools configs benchmarks tests

clean:
	rm -rf $(VENV) workdirs
