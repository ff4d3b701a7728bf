# Two commands for a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# Test processes (pytest-xdist). Much of the suite waits on subprocesses, servers and a browser,
# so 2 processes on the 2-core CI machine take about 60 % of the serial time. Tests never share
# a daemon, port, database schema or folder across processes; 0: serial.
PYTEST_WORKERS ?= 2
# Exact versions of every dependency (pyproject.toml keeps the supported ranges): every install
# below and the Dockerfile use them, so two machines get the same packages. `make constraints`.
CONSTRAINTS := constraints.txt

.PHONY: run test lint venv clean-var bench constraints schemas

# The venv is updated when pyproject.toml or constraints.txt changes; stamps record which
# extras are installed.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed

## make run: initialise ./var (SQLite, local store), start the controller and the dashboard on http://127.0.0.1:8501
run: $(VENV)/.installed
	$(BIN)/nsbi up

## make test: create or update .venv with the dev extra and run the whole suite (slow and browser tests included) in $(PYTEST_WORKERS) processes
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest --numprocesses $(PYTEST_WORKERS) $(PYTEST_ARGS)

## make lint: ruff (lint + format check), the import contracts (layers, no cycles), mypy
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

## make constraints: refresh constraints.txt after changing dependencies in pyproject.toml (installs them into .venv without the old pins, then pins what is installed; UPGRADE=1: newest allowed versions of everything)
constraints: | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(if $(UPGRADE),--upgrade) -e '.[dev]'
	$(BIN)/python .ci/constraints.py $(CONSTRAINTS)
	touch $(VENV)/.installed-dev $(VENV)/.installed

clean-var:
	rm -rf var

## make schemas: rewrite the JSON schemas generated from the pydantic models (campaign configs,
## analysis files, workspaces); tests/backend/test_config_models.py checks they are current
schemas: $(VENV)/.installed-dev
	$(BIN)/python -c 'from backend.campaign_model import schema_text as s; print(s(), end="")' > docs/schemas/campaign.schema.json
	$(BIN)/python -c 'from backend.analysis.spec_models import schema_text as s; print(s(), end="")' > docs/schemas/analysis.schema.json
	$(BIN)/python -c 'from sbi_engine.fit.workspace_model import schema_text as s; print(s(), end="")' > sbi_engine/schemas/workspace.schema.json
