# Two commands for a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint venv clean-var bench

# The venv is rebuilt when pyproject.toml changes; stamps record which extras are installed.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed

## make run: initialise ./var (SQLite, local store), start the controller and the dashboard on http://127.0.0.1:8501
run: $(VENV)/.installed
	$(BIN)/nsbi up

## make test: create or update .venv with the dev extra and run the whole suite (slow and browser tests included)
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make lint: ruff (lint + format check), the import contracts (layers, no cycles), mypy
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

clean-var:
	rm -rf var
