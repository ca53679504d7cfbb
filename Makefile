# Two commands: `make demo` and `make test`. Everything else is what they need.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?= 0
export PSO_CACHE_DIR ?= $(HOME)/.cache/pso

.PHONY: setup demo test lint typecheck bench clean kafka-jars kcat

setup: $(STAMP) kafka-jars kcat

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "python 3.11 is required (PY=$(PY))"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

kafka-jars: $(STAMP)
	$(BIN)/pso broker fetch

kcat:
	@command -v kcat >/dev/null || command -v kafkacat >/dev/null || \
	  { command -v apt-get >/dev/null && (apt-get install -y -q kcat >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q kcat >/dev/null)) ; } || \
	  echo "kcat not installed: the non-Python client test will say so"

demo: setup
	$(BIN)/pso demo --duration $(DURATION)

test: setup
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check app agents tests bench
	$(BIN)/ruff format --check app agents tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Each bench prints one JSON object: kept in bench/results/, and docs/benchmarks.md made from them.
bench: setup
	mkdir -p bench/results
	$(BIN)/python bench/engine.py > bench/results/engine.json
	$(BIN)/python bench/forecast_quality.py > bench/results/forecast_quality.json
	$(BIN)/python bench/anomaly_quality.py > bench/results/anomaly_quality.json
	$(BIN)/python bench/backtest_speed.py > bench/results/backtest_speed.json
	$(BIN)/python bench/live_throughput.py > bench/results/live_throughput.json
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
