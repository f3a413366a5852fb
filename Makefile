# chatbot-sse: one target per task. `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
# The newest CPython from 3.13 down to 3.11 that runs here, pyenv's installed versions included
# (their shims run only the version pyenv selects): the newest is supported the longest; for
# speed 3.13 and 3.11 measured alike here (docs/bench.md). PYTHON=... overrides.
PYTHON ?= $(shell for v in 3.13 3.12 3.11; do \
  for p in python$$v $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/$$v.*/bin/python$$v 2>/dev/null | sort -V | tail -n 1); do \
    "$$p" -c 'import ensurepip, sqlite3, venv' >/dev/null 2>&1 && { echo "$$p"; exit; }; \
  done; done; echo python3.11)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
SRC := src/chatbot_sse
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help install dev-install setup-dev run run-dev run-gunicorn test test-coverage \
        lint format type-check check-all clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-18s %s\n",$$1,$$2}'

$(VENV)/.created:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11+); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install the server

dev-install: $(VENV)/.dev-installed ## Install the server plus test and lint tools

setup-dev: dev-install ## Developer setup: dev tools and a git pre-commit hook running the linters
	@if [ -d .git ]; then printf '#!/bin/sh\nexec make lint type-check\n' > .git/hooks/pre-commit; \
	  chmod +x .git/hooks/pre-commit; echo "pre-commit hook installed"; fi

run: install ## Serve on 127.0.0.1:8000 with the embedded defaults
	HOST=$(HOST) PORT=$(PORT) $(VENV)/bin/chatbot-sse serve

run-dev: install ## Serve with auto-reload and console logs
	DEBUG=true HOST=$(HOST) PORT=$(PORT) $(PY) -m uvicorn chatbot_sse.main:app --host $(HOST) \
	  --port $(PORT) --reload --reload-dir src --http chatbot_sse.request_deadline:RequestDeadlineProtocol

run-gunicorn: install ## Serve in production mode: gunicorn with uvicorn workers
	HOST=$${HOST:-0.0.0.0} PORT=$(PORT) $(VENV)/bin/gunicorn -c gunicorn.conf.py chatbot_sse.main:app

test: dev-install browser nginx ## Run the whole test suite (installs what it drives: chromium, nginx, wrk, llama-cpp-python)
	$(PY) -m pytest

test-coverage: dev-install ## Run the tests with a coverage report (htmlcov/)
	$(PY) -m pytest --cov --cov-report=term-missing --cov-report=html

lint: dev-install ## ruff lint and format check
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: dev-install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

type-check: dev-install ## mypy --strict on the package
	$(VENV)/bin/mypy

check-all: lint type-check ## Every quality gate: lint, format, types

clean: ## Remove caches, coverage and the local database
	rm -rf .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage data

-include mk/*.mk
