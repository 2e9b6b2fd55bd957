# heartwire developer tasks. Every target creates the virtualenv it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= agent.example.toml
# make run keeps its outbox here instead of /var/lib/heartwire (not writable for a
# normal user); an installed agent uses [agent] state_dir.
STATE_DIR ?= .state

.PHONY: run test lint check validate clean
.PHONY: run-agent
.PHONY: deb rpm package-check
.PHONY: faults bench bench-outbox bench-history

$(BIN)/heartwire: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

## run: the receiver and an agent wired to it on loopback, with the demo's own checks and
## central.example.toml; a check goes down and up, a maintenance window holds an alert, a
## gateway that is down holds the alert of the app behind it until it is back, two agents
## judge a service by quorum (one seeing it down is shown, both: one alert)
## (starts from a clean .state/demo, which `python -m agent.central.demo --keep-state` keeps;
## Ctrl-C stops both)
run: $(BIN)/heartwire
	$(BIN)/python -m agent.central.demo --state-dir $(STATE_DIR)/demo

## run-agent: the agent alone in the foreground with the example config (Ctrl-C stops it)
run-agent: $(BIN)/heartwire
	$(BIN)/heartwire run --config $(CONFIG) --state-dir $(STATE_DIR)

## test: the whole test suite
test: $(BIN)/heartwire
	$(BIN)/python -m pytest

## lint: ruff, mypy (strict) and the import contracts between stages (pyproject.toml)
lint: $(BIN)/heartwire
	$(BIN)/ruff check agent tests bench
	$(BIN)/mypy
	$(BIN)/mypy bench
	$(BIN)/lint-imports

## check / validate: one-shot run and config check of $(CONFIG)
check: $(BIN)/heartwire
	$(BIN)/heartwire check --config $(CONFIG)

validate: $(BIN)/heartwire
	$(BIN)/heartwire validate --config $(CONFIG)

## deb / rpm: the Debian / RPM package in dist/ (see packaging/build.sh for the tools)
deb:
	packaging/build.sh deb

rpm:
	packaging/build.sh rpm

## package-check: what CI checks on the packages: builds them, runs lintian, and tests the
## .debs in a Debian 12 booted with systemd-nspawn (root; needs debootstrap, systemd-container)
package-check:
	packaging/ci-check.sh

## faults: the fault-injection suite with its slow scenarios (kill -9 twenty times,
## 10,000 targets timing out at once, ...)
faults: $(BIN)/heartwire
	HEARTWIRE_RUN_SLOW=1 $(BIN)/python -m pytest tests/faults

## bench: benchmarks beside their baselines and peers; writes bench/RESULTS.md (root;
## installs iproute2, prometheus-blackbox-exporter and monitoring-plugins-basic with apt
## and py-spy with pip if missing; about 15 minutes)
bench: $(BIN)/heartwire
	$(BIN)/python -m bench --write bench/RESULTS.md

## bench-outbox: enqueue rate and the drain of an hour of results; appends to bench/RESULTS-outbox.md
bench-outbox: $(BIN)/heartwire
	$(BIN)/python -m bench.outbox --write bench/RESULTS-outbox.md

## bench-history: the receiver's ingest with history and its page/API at 50,000 checks with
## 30 days of rollups (writes a 6 GB database to the temporary directory); appends to
## bench/RESULTS-history.md
bench-history: $(BIN)/heartwire
	$(BIN)/python -m bench.bench_central_history --write bench/RESULTS-history.md

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
