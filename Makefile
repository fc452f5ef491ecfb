PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every install takes the exact versions recorded in constraints.txt (`make upgrade` refreshes them).
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c constraints.txt
# The venv never sees system site-packages: a dependency missing from pyproject.toml fails here.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) pip

.PHONY: install install-dev run test system-deps lint typecheck pytest fake-upstream bench chaos upgrade clean

install: $(BIN)/python
	$(PIP_INSTALL) -e .

install-dev: $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'

run: install
	@echo "llm-stream-proxy on http://127.0.0.1:$${PROXY_PORT:-8000} (built-in fake upstream unless PROXY_UPSTREAM_URL is set)"
	@echo "try:  curl -N http://127.0.0.1:$${PROXY_PORT:-8000}/v1/stream -H 'Content-Type: application/json' -d '{\"prompt\": \"Hello\"}'"
	$(BIN)/python -m proxy serve

test: system-deps install-dev lint typecheck pytest

# System packages the tests run (redis-server, nginx, chromium, fonts, node, npm): installed
# with apt-get when missing and run as root, else one line says what to install.
system-deps:
	@sh .ci/system-deps

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy proxy/ benchmarks/

pytest:
	$(BIN)/pytest -q

bench: $(BIN)/python
	$(PIP_INSTALL) -e '.[bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Replicas and Redis killed under load; every response judged (docs/operations.md).
chaos: install-dev
	$(BIN)/python -m benchmarks.chaos $(CHAOS_ARGS)

fake-upstream: install
	$(BIN)/python -m proxy fake-upstream

# The newest releases that pyproject.toml's ranges allow, recorded in constraints.txt (its
# header kept), then the whole suite on them: review `git diff constraints.txt` and commit both.
UPGRADE_VENV := .upgrade-venv
upgrade:
	rm -rf $(UPGRADE_VENV)
	$(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(UPGRADE_VENV)/bin/python -m pip install --quiet '.[dev,bench]'
	{ grep '^#' constraints.txt; $(UPGRADE_VENV)/bin/python -m pip freeze --all \
		--exclude llm-stream-proxy --exclude setuptools | grep -v '^#'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(UPGRADE_VENV) $(VENV)
	$(MAKE) test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
