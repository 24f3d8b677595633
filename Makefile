# Returns desk. `make dev` runs everything on one machine; `make test` runs the suite.
PYTHON ?= python3.13
# The interpreter the project is pinned to (.python-version): 3.13 has the fix for CPython gh-106905.
PYTHON_SERIES := 3.13
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_DATABASE_URL ?= mysql+pymysql://root@127.0.0.1:3306/returns_test

.PHONY: dev test stress lint migrate bench check clean

$(STAMP): pyproject.toml .python-version
	@command -v $(PYTHON) >/dev/null 2>&1 && $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null \
	  || { echo "make: $(PYTHON) is missing or is not Python $(PYTHON_SERIES) (pyenv: pyenv install $$(cat .python-version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' \
	  || { echo "make: $(VENV) was made by another Python; remove it (rm -rf $(VENV)) and run make again"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)  ## Temporal dev server + UI, worker, API; Ctrl-C stops everything
	$(BIN)/python scripts/dev.py

test: lint  ## lint, then the suite against a real Temporal dev server, MariaDB/MySQL and SQLite
	TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python scripts/run_tests.py -m "not slow" --tb=native

stress: $(STAMP)  ## the long runs (pytest -m slow): the full-size stress test and the long fault runs
	TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python scripts/run_tests.py -m slow -v

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

check: $(STAMP)  ## look for invariant violations in the running deployment (DATABASE_URL, TEMPORAL_ADDRESS)
	$(BIN)/python -m ops.check

$(VENV)/.bench-installed: $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed  ## own stack on :7333/:8333/:8033 + DB returns_bench vs bare Temporal (~15-20 min; BENCH_SCALE=0.1 quick); docs/performance.md
	$(BIN)/python -m bench

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
