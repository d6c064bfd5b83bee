# SIQ — one command per check. Everything installs into .venv in this checkout.
#   make run     start server + client locally, train a first bundle, print curl examples
#   make test    install (if needed) and run the whole test suite
#   make lint    ruff format --check, ruff check, mypy
#   make bench   regenerate bench/results/
#   make clean   remove .venv and caches (distclean: also ./var, make run's state)
# Variables: TORCH_INDEX_URL (where torch comes from, below), SIQ_DATA_DIR (the whole data sets;
# tests run without them on tests/data's sample), PYTEST_ARGS (e.g. "-m full_data"), RUN_ARGS.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
# Data for tests, benchmarks and `make run`; the product reads SIQ_DATA_DIR.
SIQ_DATA_DIR ?= $(abspath $(ROOT)/../shared/data)
export SIQ_DATA_DIR
# Where torch comes from. The public index's torch==2.13.0 for Linux is the multi-GB CUDA
# build; this index has the CPU build (the server trains on CPUs), as server/Dockerfile's
# TORCH_INDEX_URL build argument does. For CUDA use e.g. https://download.pytorch.org/whl/cu128;
# TORCH_INDEX_URL= (empty) takes torch from your pip configuration like everything else.
# Only torch's own step uses it (--index-url): pip's configured extra indexes and find-links
# still apply there and to everything else.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
# torch's version: its pin in pyproject.toml
TORCH_VERSION := $(shell sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' $(ROOT)/pyproject.toml)
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
ifneq ($(strip $(TORCH_INDEX_URL)),)
	@echo "==> make install: torch $(TORCH_VERSION) from $(TORCH_INDEX_URL) into $(VENV) (TORCH_INDEX_URL; a few minutes the first time)"
	$(PY) -m pip install --quiet --disable-pip-version-check 'torch==$(TORCH_VERSION)' --index-url '$(TORCH_INDEX_URL)'
endif
	@echo "==> make install: SIQ and its dependencies (extras server, client, dev, ray) into $(VENV) with pip (a few minutes the first time)"
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
