# The quick start is two commands: `make run` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint deps bench clean browser wrk

deps: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## Start a local chain, deploy, index into var/gridledger.db and serve on http://127.0.0.1:8000
run: deps
	$(BIN)/python -m scripts.serve

# Debian's Chromium for the explorer's browser test; nothing to do where it is installed.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "could not install chromium: tests/test_explorer.py will fail (deselect with -m 'not browser')" >&2

# Debian's wrk for scripts/bench_api.py, which tests/test_benchmarks.py runs; nothing to do where it is installed.
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || \
	  echo "could not install wrk: tests/test_benchmarks.py will fail (apt-get install wrk)" >&2

## The whole test suite (needs PostgreSQL at 127.0.0.1:5432, see README)
test: deps browser wrk
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: deps
	$(BIN)/ruff check ledger api scripts tests
	$(BIN)/ruff format --check ledger api scripts tests
	$(BIN)/mypy
	npx prettier --check 'contracts/**/*.sol'

bench: deps
	$(BIN)/python -m scripts.bench_record

clean:
	rm -rf build var artifacts cache
