# The two commands of the README: `make up` (local Airflow + trading_db with demo data) and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)/plugins

.PHONY: up down test lint venv

venv:
	@scripts/bootstrap.sh

up: venv
	@$(PY) -m trading_ops.devenv up

down:
	@$(PY) -m trading_ops.devenv down

test: venv
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .
