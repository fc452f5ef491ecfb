PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The venv never sees system site-packages: a dependency missing from pyproject.toml fails here.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

.PHONY: install install-dev run test system-deps lint typecheck pytest fake-upstream bench clean

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'

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
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

fake-upstream: install
	$(BIN)/python -m proxy fake-upstream

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
