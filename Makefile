# Returns desk. `make dev` runs everything on one machine; `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_DATABASE_URL ?= mysql+pymysql://root@127.0.0.1:3306/returns_test

.PHONY: dev test lint migrate bench check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)  ## Temporal dev server + UI, worker, API; Ctrl-C stops everything
	$(BIN)/python scripts/dev.py

test: lint  ## lint, then the suite against a real Temporal dev server, MariaDB/MySQL and SQLite
	TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python scripts/run_tests.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
