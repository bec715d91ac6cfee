# The two commands of the README: `make up` (local Airflow + trading_db with demo data) and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)/plugins

.PHONY: up down alerts test lint venv

venv:
	@scripts/bootstrap.sh

up: venv
	@$(PY) -m trading_ops.dev up

down:
	@$(PY) -m trading_ops.dev down

# What the DAGs sent to Slack and PagerDuty since `make up` (the local sink's .local/alerts.jsonl).
alerts:
	@$(PY) -m trading_ops.dev alerts

test: venv
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .
