# edgewatch developer and CI entry points. `make test` is the README's test command.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The CPU wheel of this exact release is what gateways run; an open torch range
# makes pip fetch a multi-GB CUDA build, so torch is installed first and pinned.
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: install test test-slow test-chaos lint format pytest demo bench mosquitto clean retrain-models

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q --disable-pip-version-check "hatchling>=1.24" "editables>=0.5"
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[dev,onnx,opcua,dashboard,fleet]"
	touch $@

mosquitto:
	@if command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else echo "mosquitto is needed for the tests: sudo apt-get install -y mosquitto" >&2; exit 1; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

pytest: install mosquitto
	$(BIN)/pytest -m "not slow" --cov --cov-report=term --durations=25 $(PYTEST_ARGS)

test: lint pytest

test-slow: install mosquitto
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# The fault-injection suite at the issue's counts (about 15 min on 2 cores); it
# writes docs/reliability.md. `make test` runs it at EDGEWATCH_CHAOS_SCALE=short.
CHAOS_SCALE ?= full
test-chaos: install mosquitto
	EDGEWATCH_CHAOS_SCALE=$(CHAOS_SCALE) $(BIN)/pytest -m chaos tests/chaos $(PYTEST_ARGS)

# Mosquitto is preferred but optional here: without it the demo runs on edgewatch's
# embedded broker.
demo: install
	@$(MAKE) --no-print-directory mosquitto 2>/dev/null || \
		echo "mosquitto is not installed: the demo uses edgewatch's embedded broker"
	$(BIN)/edgewatch demo

bench: install mosquitto
	$(BIN)/edgewatch bench

retrain-models: install
	$(PY) -m models.retrain_shipped

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage dist build
