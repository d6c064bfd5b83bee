# SIQ — one command per check. Everything installs into .venv in this checkout.
#   make run     start server + client locally, train a first bundle, print curl examples
#   make test    install (if needed) and run the whole test suite
#   make lint    ruff format --check, ruff check, mypy
#   make bench   regenerate bench/results/
#   make clean   remove .venv and caches (distclean: also ./var, make run's state)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
# Data for tests, benchmarks and `make run`; the product reads SIQ_DATA_DIR.
SIQ_DATA_DIR ?= $(abspath $(ROOT)/../shared/data)
export SIQ_DATA_DIR
MYPY_PATHS ?= shared client server scripts
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: help install test lint format run bench clean distclean

help:
	@grep -E '^#   make ' $(lastword $(MAKEFILE_LIST)) | sed 's/^#   //'

# Reinstalls only when pyproject.toml changes (the stamp is newer otherwise). The stamp is
# written last, so an interrupted install is redone next time.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[server,client,dev,ray]'
	@touch $@

install: $(VENV)/.installed

test: install
	@echo "SIQ_DATA_DIR=$(SIQ_DATA_DIR)"
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy $(MYPY_PATHS)

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

run: install
	$(PY) -m scripts.run_local $(RUN_ARGS)

bench: install
	$(PY) -m bench.run_all

# `clean` keeps ./var (make run's trained bundles); `distclean` removes it too.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +

distclean: clean
	rm -rf var
