# `make demo` and `make test` work on a fresh clone: each creates .venv and installs on first use.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## trace the demo app into ./llmobs.db, then print the per-prompt-version report
	$(VENV)/bin/llmobs demo --database-url sqlite:///llmobs.db

test: $(STAMP) lint  ## every suite (PostgreSQL tests skip with a reason when it is not running)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check llmobs_callbacks tests benchmarks
	$(VENV)/bin/ruff format --check llmobs_callbacks tests benchmarks

bench: $(STAMP)  ## hot-path overhead and ingest throughput (see benchmarks/README.md)
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) llmobs.db llmobs.db-wal llmobs.db-shm .pytest_cache
