# `make demo` and `make test` work on a fresh clone: each creates .venv and installs on first use.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-peers bench-memory clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## replay the demo's simulated day into a fresh ./llmobs.db, then print the report
	rm -f llmobs.db llmobs.db-wal llmobs.db-shm
	$(VENV)/bin/llmobs demo --database-url sqlite:///llmobs.db

test: $(STAMP) lint  ## every suite (PostgreSQL tests skip with a reason when it is not running)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check llmobs_callbacks tests benchmarks
	$(VENV)/bin/ruff format --check llmobs_callbacks tests benchmarks

bench: $(STAMP)  ## overhead per invocation, hot path, ingest, saturation (~4 min; benchmarks/README.md)
	$(PY) benchmarks/overhead.py

bench-peers: $(STAMP)  ## ours vs Langfuse, LangSmith, OpenInference in one run (~3 min)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) benchmarks/peers.py

bench-memory: $(STAMP)  ## RSS over 100,000 traced invocations (~10 min on a busy 2-core VM)
	$(PY) benchmarks/memory.py

clean:
	rm -rf $(VENV) llmobs.db llmobs.db-wal llmobs.db-shm .pytest_cache
