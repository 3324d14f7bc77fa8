"""Process-wide instrumentation, schema versioning and migration, and the CLI."""

from __future__ import annotations

import asyncio
import json
import re
import threading

import pytest
import sqlalchemy as sa
from conftest import fetch, sql
from langchain_core.runnables import RunnableLambda

from llmobs_callbacks import LLMObs
from llmobs_callbacks.cli import main
from llmobs_callbacks.sinks.schema import SchemaVersionError
from llmobs_callbacks.sinks.tables import SCHEMA_VERSION


def test_instrument_langchain_records_every_run_without_config(sqlite_url: str) -> None:
    obs = LLMObs(sqlite_url)
    handle = obs.instrument_langchain()
    try:
        chain = RunnableLambda(lambda x: x + 1, name="plain")
        chain.invoke(1)  # main thread, no callbacks anywhere
        t = threading.Thread(target=lambda: chain.invoke(2))
        t.start()
        t.join()
        asyncio.run(chain.ainvoke(3))
        # also passing the handler explicitly must not record the run twice
        chain.invoke(4, config={"callbacks": [obs.langchain_handler()]})
        assert obs.flush()
        rows = fetch(sqlite_url, "spans")
        assert len(rows) == 4 and {r["name"] for r in rows} == {"plain"}
        handle.close()
        chain.invoke(5)
        assert obs.flush()
        assert len(fetch(sqlite_url, "spans")) == 4
    finally:
        handle.close()
        obs.shutdown()


def test_schema_version_is_recorded(db_url: str) -> None:
    LLMObs(db_url).shutdown()
    assert sql(db_url, "select version from llmobs_schema") == [(SCHEMA_VERSION,)]
    LLMObs(db_url).shutdown()  # reopening is a no-op
    assert sql(db_url, "select count(*) from llmobs_schema") == [(1,)]


def test_upgrade_adds_missing_columns_without_losing_rows(db_url: str) -> None:
    with LLMObs(db_url) as obs:
        RunnableLambda(lambda x: x, name="old").invoke(1, config={"callbacks": [obs.langchain_handler()]})
        assert obs.flush()
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # pretend the database predates these columns
        # and the analysis index that covers one of them (SQLite cannot drop an indexed column)
        conn.execute(sa.text("DROP INDEX IF EXISTS ix_spans_llm_calls"))
        conn.execute(sa.text("ALTER TABLE spans DROP COLUMN ttft_ms"))
        conn.execute(sa.text("ALTER TABLE spans DROP COLUMN price_source"))
        conn.execute(sa.text("UPDATE llmobs_schema SET version = 0"))
    engine.dispose()
    with LLMObs(db_url) as obs:
        RunnableLambda(lambda x: x, name="new").invoke(1, config={"callbacks": [obs.langchain_handler()]})
        assert obs.flush()
    rows = {r["name"]: r for r in fetch(db_url, "spans")}
    assert set(rows) == {"old", "new"} and rows["old"]["ttft_ms"] is None
    assert sql(db_url, "select version from llmobs_schema") == [(SCHEMA_VERSION,)]


def test_newer_schema_is_a_clear_error(sqlite_url: str) -> None:
    LLMObs(sqlite_url).shutdown()
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE llmobs_schema SET version = 999"))
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="version 999, newer than this llmobs-callbacks"):
        LLMObs(sqlite_url)


def test_sqlite_uses_wal(sqlite_url: str) -> None:
    LLMObs(sqlite_url).shutdown()
    assert sql(sqlite_url, "PRAGMA journal_mode") == [("wal",)]


def test_database_url_from_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("LLMOBS_DATABASE_URL", url)
    obs = LLMObs()
    assert obs.database_url == url
    obs.shutdown()
    assert (tmp_path / "env.db").exists()


def test_cli_demo_then_report(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--traces", "40", "--hours", "4", "--switch-at-hour", "2", "--no-progress"]
    assert main(["demo", "--database-url", db_url, *args]) == 0
    out = capsys.readouterr().out
    replayed = int(re.search(r"replayed (\d+) demo requests over a simulated 4 h", out).group(1))
    table = [line.split() for line in out.splitlines() if line[:3] in ("v1 ", "v2 ")]
    lines = {cells[0]: cells for cells in table if cells[1].isdigit()}  # the report's rows
    assert set(lines) == {"v1", "v2"}
    assert int(lines["v1"][1]) + int(lines["v2"][1]) == replayed
    assert "v1 → v2" in out and "human-review share" in out  # the comparison follows the report
    roots = dict(
        sql(db_url, "select prompt_version, count(*) from spans where parent_span_id is null group by 1")
    )
    assert main(["report", "--database-url", db_url, "--format", "json"]) == 0
    report = {r["group"]: r for r in json.loads(capsys.readouterr().out)}
    assert {g: r["requests"] for g, r in report.items()} == roots
    assert int(lines["v1"][1]) == roots["v1"] and int(lines["v2"][1]) == roots["v2"]
    # the report's totals are the store's totals
    ((tokens, cost),) = sql(db_url, "select sum(input_tokens), sum(cost_usd) from spans where kind = 'llm'")
    assert report["v1"]["input_tokens"] + report["v2"]["input_tokens"] == tokens
    assert report["v1"]["cost_usd"] + report["v2"]["cost_usd"] == pytest.approx(cost)
    assert report["v2"]["cost_per_request"] > report["v1"]["cost_per_request"]  # v2 is the verbose prompt
    assert report["v1"]["p50_latency_ms"] <= report["v1"]["p95_latency_ms"]
    (branches,) = sql(db_url, "select count(*) from branch_decisions")
    assert branches[0] == replayed  # one routing decision per request
    assert sql(db_url, "select count(*) from retrieved_documents where score is not null")[0][0] > 0
