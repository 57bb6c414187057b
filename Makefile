# rnnexp — the commands people type. `make help` lists them.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup run test test-all

help:  ## list the commands
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)  ## create the virtual environment and install rnnexp into it

run: $(STAMP)  ## train the default experiment (synthetic data), tracked in ./mlflow.db
	$(PY) -m rnnexp.run

test: $(STAMP)  ## run the fast test suite
	$(PY) -m pytest -q

test-all: $(STAMP)  ## run every test, slow ones included
	$(PY) -m pytest -q -m ''
