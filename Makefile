# The two commands a newcomer needs: `make run` and `make test`. CI runs `make test` (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint kafka-up kafka-down cassandra-up cassandra-down bench clean

# setup.py compiles shared/analysis_core.py (mypyc): an edit to it re-runs the install, which rebuilds it
COMPILED := shared/analysis_core.py

$(STAMP): pyproject.toml setup.py $(COMPILED)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,postgres,cassandra,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tracing dev

test: $(STAMP)
	bash scripts/test.sh

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

kafka-up:
	bash deploy/kafka/kafka.sh up

kafka-down:
	bash deploy/kafka/kafka.sh down

cassandra-up:
	bash scripts/cassandra.sh up $(CASSANDRA_ARGS)

cassandra-down:
	bash scripts/cassandra.sh down

bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	bash deploy/kafka/kafka.sh down || true
	bash scripts/cassandra.sh down || true
	bash scripts/s3.sh down || true
	rm -rf .run data .mypy_cache .ruff_cache .pytest_cache
