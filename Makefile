# rnnexp — the commands people type. `make help` lists them.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup run test test-all lint gradcheck data ui ui-check sweep search reproduce reproduce-full \
        truncation-study truncation-study-quick reports ptb ptb-medium bench bench-smoke server server-stop clean

help:  ## list the commands
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-24s %s\n", $$1, $$2}'

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

test-all: $(STAMP)  ## run every test, slow and fault-injection ones included (servers, PostgreSQL, joblib, ...)
	$(VENV)/bin/pip install -q -e '.[test,postgres]'
	$(PY) -m pytest -q -m ''

lint: $(STAMP)  ## ruff (lint and format) and mypy over the code
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

gradcheck: $(STAMP)  ## central-difference gradient check of every truncation mode and output layer
	for mode in window chunk full; do for output in softmax class; do \
	  $(PY) -m rnnexp.check_gradients model.truncation=$$mode model.output=$$output || exit 1; done; done

data: $(STAMP)  ## download the tutorial's reddit comments into ./data (verified by git blob id)
	$(PY) -m rnnexp.data

# The MLflow UI over ./mlflow.db: one server process and no job consumers (those run MLflow's GenAI jobs,
# which rnnexp has none of). rnnexp.ui prints the address of the experiment's runs table.
UI_STORE ?= sqlite:///$(CURDIR)/mlflow.db
UI_PORT  ?= 5000

ui: $(STAMP)  ## the MLflow UI (one light server); open the URL it prints: the runs table, best first
	@$(PY) -m rnnexp.ui tracking_uri=$(UI_STORE) url=http://127.0.0.1:$(UI_PORT)
	@MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri $(UI_STORE) \
	  --host 127.0.0.1 --port $(UI_PORT) --workers 1

ui-check: $(STAMP)  ## make ui's URL in a fresh headless Chromium, screenshots in /tmp (REFRESH_DOCS=1: docs/ui/)
	$(PY) docs/ui_check.py $(if $(REFRESH_DOCS),--refresh-docs)

sweep: $(STAMP)  ## hidden sizes in parallel (joblib), compared in one MLflow parent run
	$(PY) -m rnnexp.run -m experiment=hidden_dim_sweep hydra/launcher=joblib

search: $(STAMP)  ## Optuna search over optim.lr and model.hidden_dim
	$(PY) -m rnnexp.run -m hydra/sweeper=search

reproduce: $(STAMP)  ## the tutorial's claims, quick (<15 min): experiments/tutorial/REPORT.md
	$(PY) -m experiments.tutorial.reproduce

reproduce-full: $(STAMP)  ## the same on the full reddit CSV (make data first; hours)
	$(PY) -m experiments.tutorial.reproduce mode=full

ptb: $(STAMP)  ## the full PTB benchmark: the literature's recipes against their published perplexities, KN5 (70 min measured: 4,225 s on 2 otherwise idle cores): experiments/ptb/REPORT.md
	$(PY) -m experiments.ptb.report

ptb-medium: $(STAMP)  ## Zaremba et al.'s medium LSTM on PTB (39 epochs, 9.2 min per epoch measured on 2 idle cores); run again to resume it; adds its row to experiments/ptb/REPORT.md
	$(PY) -m experiments.ptb.report train_rows=false train_medium=true

# The truncation study: a learning-rate grid on validation, the fair sweeps at the chosen rates (early stopping),
# the fixed-rate sweep, then the report (experiments/truncation/study.py runs each `python -m rnnexp.run -m`).
truncation-study: $(STAMP)  ## RNN, LSTM and GRU, per truncation, 5 seeds a cell, fixed rate and fair protocol (36 + 45 + 195 jobs, 44 min measured on 2 cores): experiments/truncation/REPORT.md
	$(PY) -m experiments.truncation.study

truncation-study-quick: $(STAMP)  ## the same on fewer cells and seeds (12 + 12 + 40 jobs, 9 min measured): experiments/truncation/quick/REPORT.md
	$(PY) -m experiments.truncation.study grid_experiment=truncation_lr_grid_quick fair_experiment=truncation_fair_quick \
	  fixed_experiment=truncation_study_quick report_dir=experiments/truncation/quick

reports: $(STAMP)  ## regenerate the reports at the code as it is (truncation study, tutorial quick, ptb, bench; about 2.5 h: ptb's 70 min and the study's 44 measured)
	$(MAKE) truncation-study
	$(MAKE) reproduce
	$(MAKE) ptb
	$(MAKE) bench

bench: $(STAMP)  ## throughput against the tutorial's code and PyTorch, and scaling: benchmarks/RESULTS.md (11 min measured)
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) -m benchmarks.run_all

bench-smoke: $(STAMP)  ## a tiny run of every benchmark, as the tests do (no time asserted)
	$(PY) -m pytest -q -m '' tests/test_benchmarks_smoke.py

# A team tracking server: PostgreSQL 15 (Debian's package) in $(SERVER_DIR)/pg and an mlflow server in front of it
# with artifacts in $(SERVER_DIR)/artifacts. PostgreSQL refuses to run as root: as root it runs as `postgres`.
# Others log with tracking_uri=http://<this machine>:$(SERVER_PORT) (HOST=0.0.0.0 to listen beyond this machine).
SERVER_DIR  ?= $(CURDIR)/.server
SERVER_PORT ?= 5001
HOST        ?= 127.0.0.1
PG_PORT     ?= 5433
PG_BIN      ?= /usr/lib/postgresql/15/bin
PG_AS       := $(if $(filter 0,$(shell id -u)),su postgres -s /bin/sh -c,sh -c)
PG_URI      := postgresql+psycopg://mlflow@127.0.0.1:$(PG_PORT)/mlflow

server: $(STAMP)  ## a team mlflow server on PostgreSQL (.server/), on http://127.0.0.1:5001; make server-stop
	$(VENV)/bin/pip install -q -e '.[postgres]'
	mkdir -p $(SERVER_DIR)/pg $(SERVER_DIR)/artifacts
	if [ "$$(id -u)" = 0 ]; then chown postgres:postgres $(SERVER_DIR)/pg; fi
	test -f $(SERVER_DIR)/pg/data/PG_VERSION || \
	  $(PG_AS) '$(PG_BIN)/initdb -D $(SERVER_DIR)/pg/data -U mlflow --auth=trust -E UTF8 >/dev/null'
	$(PG_AS) '$(PG_BIN)/pg_ctl -D $(SERVER_DIR)/pg/data status >/dev/null' || \
	  $(PG_AS) '$(PG_BIN)/pg_ctl -D $(SERVER_DIR)/pg/data -l $(SERVER_DIR)/pg/log -w \
	    -o "-p $(PG_PORT) -k $(SERVER_DIR)/pg -c listen_addresses=127.0.0.1" start'
	$(PG_AS) '$(PG_BIN)/psql -h 127.0.0.1 -p $(PG_PORT) -U mlflow -d postgres -tAc \
	  "SELECT 1 FROM pg_database WHERE datname = '"'"'mlflow'"'"'" | grep -q 1 || \
	  $(PG_BIN)/createdb -h 127.0.0.1 -p $(PG_PORT) -U mlflow mlflow'
	$(VENV)/bin/mlflow server --backend-store-uri $(PG_URI) --artifacts-destination $(SERVER_DIR)/artifacts \
	  --host $(HOST) --port $(SERVER_PORT)

server-stop:  ## stop the PostgreSQL that make server started (the mlflow server stops with Ctrl-C)
	$(PG_AS) '$(PG_BIN)/pg_ctl -D $(SERVER_DIR)/pg/data -m fast -w stop'

clean:  ## remove the virtual environment, caches and local outputs (not mlflow.db)
	rm -rf $(VENV) .pytest_cache outputs multirun checkpoints *.egg-info
