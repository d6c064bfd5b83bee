# SIQ — one command per check. Everything installs into .venv in this checkout.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Data for tests, benchmarks and `make run`; the product reads SIQ_DATA_DIR.
SIQ_DATA_DIR ?= $(abspath ../shared/data)
export SIQ_DATA_DIR

.PHONY: install test lint format run bench clean

# Reinstalls only when pyproject.toml changes (the stamp is newer otherwise).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,client,dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy shared client server

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

run: install
	$(PY) -m scripts.run_local

bench: install
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
