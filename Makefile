# heartwire developer tasks. Every target creates the virtualenv it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= agent.example.toml

.PHONY: run test lint check validate clean
.PHONY: faults bench

$(BIN)/heartwire: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

## run: the agent in the foreground with the example config (Ctrl-C stops it)
run: $(BIN)/heartwire
	$(BIN)/heartwire run --config $(CONFIG)

## test: the whole test suite
test: $(BIN)/heartwire
	$(BIN)/python -m pytest

## lint: ruff and mypy (strict)
lint: $(BIN)/heartwire
	$(BIN)/ruff check agent tests bench
	$(BIN)/mypy
	$(BIN)/mypy bench

## check / validate: one-shot run and config check of $(CONFIG)
check: $(BIN)/heartwire
	$(BIN)/heartwire check --config $(CONFIG)

validate: $(BIN)/heartwire
	$(BIN)/heartwire validate --config $(CONFIG)

## faults: the slow fault-injection scenarios too (10,000 targets timing out, ...)
faults: $(BIN)/heartwire
	$(BIN)/python -m pytest tests/faults --run-slow

## bench: benchmarks beside their baselines and peers; writes bench/RESULTS.md (root;
## installs iproute2, prometheus-blackbox-exporter and monitoring-plugins-basic if missing)
bench: $(BIN)/heartwire
	$(BIN)/python -m bench --write bench/RESULTS.md

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
