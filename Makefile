# ingestd: `make run` installs and runs the daemon on the embedded SQLite default;
# `make test` installs the test extras and runs the whole suite (lint, types, tests).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE_OPML ?= deploy/example.opml

.PHONY: install install-test run test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	@if [ -z "$$($(BIN)/ingestd feeds list)" ]; then \
		echo "first start: subscribing to the feeds in $(EXAMPLE_OPML)"; \
		$(BIN)/ingestd feeds import $(EXAMPLE_OPML); \
	fi
	exec $(BIN)/ingestd run

lint: install-test
	$(BIN)/ruff check ingestd tests bench
	$(BIN)/ruff format --check ingestd tests bench

typecheck: install-test
	$(BIN)/mypy

pytest: install-test
	$(BIN)/pytest

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/stages.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
