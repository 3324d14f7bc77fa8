"""TraceStore's Arrow path (ADBC drivers) against its SQLAlchemy path, on SQLite and PostgreSQL.

The store is made so that a naive Arrow read goes wrong: its first 1,200 spans (in start order)
have NULL model, tokens, cost and error text, which later spans fill in (SQLite's driver infers
types from the values it sees); times are written from several time zones; JSON columns hold
nested, repeated and NULL values.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.analysis.store import CONTENT_COLUMNS, SPAN_COLUMNS
from llmobs_callbacks.sinks.schema import ensure_schema, make_engine
from llmobs_callbacks.sinks.tables import BranchDecisionRow, RetrievedDocumentRow, ScoreRow, SpanRow

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=timezone.utc)
PLUS2 = timezone(timedelta(hours=2))
N_PLAIN, N_LLM = 200, 100  # traces without LLM calls first, then traces with two calls each


def _span(trace: int, i: int, kind: str, start: datetime, **extra) -> dict:
    row = {c.name: None for c in SpanRow.__table__.columns}
    row.update(
        span_id=f"t{trace:04d}-{i}",
        trace_id=f"t{trace:04d}",
        parent_span_id=None if i == 0 else f"t{trace:04d}-0",
        kind=kind,
        name="agent" if i == 0 else f"{kind}_{i}",
        framework="langchain",
        status="ok",
        start_time=start,
        end_time=start + timedelta(milliseconds=40),
        latency_ms=40.0 + trace,
        prompt_name="support",
        session_id=f"s-{trace % 7}",
        user_id=f"u-{trace % 5}",
        service="svc",
        attributes={"team": "a", "params": {"temperature": 0.0, "stop": ["\n"]}},
        input='{"q": "hi"}',
        output='{"a": "ok"}',
    )
    row.update(extra)
    return row


def build(url: str) -> dict[str, object]:
    spans, scores, branches, docs = [], [], [], []
    for t in range(N_PLAIN + N_LLM):
        # every third trace written in UTC+2: the store keeps the same instant in UTC
        start = T0 + timedelta(minutes=t)
        start = start.astimezone(PLUS2) if t % 3 == 0 else start
        llm = t >= N_PLAIN
        error = t in (N_PLAIN + 5, N_PLAIN + 50)
        version = "v2" if t % 2 else None  # declared on the root for half the traces
        spans.append(
            _span(
                t,
                0,
                "chain",
                start,
                prompt_version=version,
                status="error" if error else "ok",
                error_type="ValueError" if error else None,
                error_message="bad input\nline 2" if error else None,
                tags=["beta", "eu"] if t % 4 == 0 else None,
            )
        )
        for i in range(1, 6):
            kind = "llm" if llm and i in (2, 4) else ("tool" if i == 5 else "chain")
            extra: dict[str, object] = {}
            if kind == "llm":
                extra = dict(
                    model="gpt-4o-mini" if i == 2 else "gpt-4o",
                    provider="openai",
                    prompt_version="v1" if i == 2 else "v9",
                    input_tokens=100 + t if i == 2 else 7,
                    output_tokens=20,
                    total_tokens=120 + t if i == 2 else 27,
                    cost_usd=None if t % 10 == 0 else 0.001 * i,  # some calls unpriced
                    ttft_ms=None if i == 2 and t % 5 == 0 else 12.5,
                    attributes={"team": "a", "invocation_params": {"model": "gpt-4o-mini", "n": 1}},
                )
            spans.append(_span(t, i, kind, start + timedelta(milliseconds=i), **extra))
        if llm and t % 3 == 0:
            scores.append(
                dict(
                    id=f"sc-{t}",
                    trace_id=f"t{t:04d}",
                    name="faithfulness",
                    value=float(t % 5),
                    source="judge",
                    created_at=start + timedelta(seconds=30),
                )
            )
        branches.append(
            dict(
                id=f"b-{t}",
                trace_id=f"t{t:04d}",
                span_id=f"t{t:04d}-1",
                graph="g",
                from_node="route",
                to_node="answer" if t % 4 else "review",
                created_at=start,
            )
        )
    for rank in range(3):
        docs.append(
            dict(
                span_id="t0201-3",
                trace_id="t0201",
                rank=rank,
                document_id=f"d{rank}",
                score=None if rank == 2 else 0.5 - rank / 10,
                content=f"doc {rank}",
                attributes={"source": "kb"} if rank else None,
            )
        )
    engine = make_engine(url)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(SpanRow.__table__), spans)
        conn.execute(sa.insert(ScoreRow.__table__), scores)
        conn.execute(sa.insert(BranchDecisionRow.__table__), branches)
        conn.execute(sa.insert(RetrievedDocumentRow.__table__), docs)
    engine.dispose()
    return {"spans": spans}


@pytest.fixture
def stores(db_url: str, caplog: pytest.LogCaptureFixture):
    data = build(db_url)
    caplog.set_level(logging.DEBUG, logger="llmobs_callbacks.analysis.store")
    with TraceStore(db_url) as fast, TraceStore(db_url, arrow=False) as slow:
        yield fast, slow, data
    # no read fell back to SQLAlchemy: the Arrow path answered every call
    assert "read failed" not in caplog.text


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal values, missing for missing (NaN / None / <NA> alike)."""
    assert list(a.columns) == list(b.columns)
    assert list(a.index) == list(b.index)
    norm = [f.astype(object).where(f.notna(), None) for f in (a, b)]
    pd.testing.assert_frame_equal(norm[0], norm[1], check_dtype=False)


def test_reader_is_adbc_where_it_can_be(db_url: str, stores) -> None:
    fast, slow, _ = stores
    assert fast.reader == ("adbc-sqlite" if db_url.startswith("sqlite") else "adbc-postgresql")
    assert slow.reader == "sqlalchemy"


def test_spans_same_on_both_paths(stores) -> None:
    fast, slow, data = stores
    every = fast.spans(content=True)
    _same(every, slow.spans(content=True))
    assert len(every) == len(data["spans"]) == (N_PLAIN + N_LLM) * 6
    # the store's columns, times UTC-aware and the same instants as written
    assert list(every.columns) == SPAN_COLUMNS
    assert str(every["start_time"].dt.tz) == "UTC" and every["start_time"].is_monotonic_increasing
    written = sorted(r["start_time"].astimezone(timezone.utc) for r in data["spans"])
    assert [t.to_pydatetime() for t in every["start_time"]] == written
    # NULLs stay NULL; integers stay integers (nullable), floats floats, text text
    llm = every[every["kind"] == "llm"]
    assert every["input_tokens"].dtype == "Int64" and every["input_tokens"].isna().sum() == len(every) - len(
        llm
    )
    assert llm["input_tokens"].tolist()[:2] == [100 + N_PLAIN, 7]
    assert every["cost_usd"].dtype == "float64" and llm["cost_usd"].isna().sum() == 2 * (N_LLM // 10)
    assert every["error_message"].dropna().tolist() == ["bad input\nline 2"] * 2
    # JSON decoded: nested dicts and lists; NULL stays None
    root = every.iloc[0]
    assert root["attributes"] == {"team": "a", "params": {"temperature": 0.0, "stop": ["\n"]}}
    assert root["tags"] == ["beta", "eu"] and every.iloc[6]["tags"] is None
    assert llm.iloc[0]["attributes"]["invocation_params"] == {"model": "gpt-4o-mini", "n": 1}
    # input / output only on request
    default = fast.spans()
    assert list(default.columns) == [c for c in SPAN_COLUMNS if c not in CONTENT_COLUMNS]
    _same(default, slow.spans())
    assert fast.spans(columns=["span_id", "output"])["output"].iloc[0] == '{"a": "ok"}'


def test_filters_same_on_both_paths(stores) -> None:
    fast, slow, _ = stores
    for kwargs in (
        {"kind": "llm"},
        {"kind": ["tool", "llm"], "since": T0 + timedelta(minutes=250), "limit": 40},
        {"model": "gpt-4o", "until": (T0 + timedelta(minutes=260)).astimezone(PLUS2)},
        {"status": "error", "columns": ["trace_id", "error_message", "tags"]},
        {"trace_id": ["t0001", "t0250"], "session_id": "s-1"},
        {"prompt_version": "nope"},  # empty: same columns, no rows
    ):
        a, b = fast.spans(**kwargs), slow.spans(**kwargs)
        _same(a, b)
    assert len(fast.spans(kind="llm")) == 2 * N_LLM
    assert fast.spans(trace_id=["t0001", "t0250"], session_id="s-1")["trace_id"].unique().tolist() == [
        "t0001"
    ]


def test_traces_and_summary_same_on_both_paths(stores) -> None:
    fast, slow, _ = stores
    traces = fast.traces()
    _same(traces, slow.traces())
    assert len(traces) == N_PLAIN + N_LLM
    by_id = traces.set_index("trace_id")
    # the first LLM call gives the model, ttft and (when the root has none) the prompt version
    t = by_id.loc["t0202"]  # even: no version on the root
    assert (t["model"], t["prompt_version"], t["llm_calls"]) == ("gpt-4o-mini", "v1", 2)
    assert (t["input_tokens"], t["output_tokens"]) == (100 + 202 + 7, 40)
    assert t["cost_usd"] == pytest.approx(0.001 * 2 + 0.001 * 4)
    assert by_id.loc["t0201", "prompt_version"] == "v2"  # declared on the root
    assert pd.isna(by_id.loc["t0205", "ttft_ms"])  # the first call's, NULL (not the second's 12.5)
    assert pd.isna(by_id.loc["t0210", "cost_usd"])  # every call unpriced: NULL, not 0
    assert by_id.loc["t0001", "llm_calls"] == 0 and pd.isna(by_id.loc["t0001", "model"])
    assert by_id.loc["t0201", "score_faithfulness"] == 201 % 5
    for kwargs in (
        {"since": T0 + timedelta(minutes=199, seconds=30), "prompt_version": "v1"},
        {"model": "gpt-4o-mini", "status": "error"},
        {"until": T0 + timedelta(minutes=10), "session_id": "s-3"},
        {"trace_id": ["t0202", "t0001"], "scores": False},
    ):
        _same(fast.traces(**kwargs), slow.traces(**kwargs))
    assert fast.traces(model="gpt-4o-mini", status="error")["trace_id"].tolist() == ["t0205", "t0250"]
    for by in ("prompt_version", "model", "root"):
        _same(fast.summary(by=by), slow.summary(by=by))
    summary = fast.summary(by="model")
    assert summary.loc["gpt-4o-mini", "requests"] == N_LLM and summary.loc["(none)", "requests"] == N_PLAIN
    assert summary.loc["(none)", "branch_review"] == pytest.approx(50 / 200)
    _same(
        fast.summary(since=T0 + timedelta(minutes=150), until=T0 + timedelta(minutes=260)),
        slow.summary(since=T0 + timedelta(minutes=150), until=T0 + timedelta(minutes=260)),
    )


def test_other_reads_same_on_both_paths(stores) -> None:
    fast, slow, _ = stores
    _same(fast.scores(), slow.scores())
    late = {"name": "faithfulness", "since": T0 + timedelta(minutes=250)}
    _same(fast.scores(**late), slow.scores(**late))
    docs = fast.documents("t0201")
    _same(docs, slow.documents("t0201"))
    assert docs["rank"].tolist() == [0, 1, 2] and docs["attributes"].tolist() == [
        None,
        {"source": "kb"},
        {"source": "kb"},
    ]
    _same(fast.branches(), slow.branches())
    _same(fast.branches(freq="1h"), slow.branches(freq="1h"))
    _same(fast.cost(by="model", freq="1h"), slow.cost(by="model", freq="1h"))
    assert str(fast.trace("t0205")) == str(slow.trace("t0205"))


def test_fallback_when_the_driver_cannot_answer(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    build(sqlite_url)
    with TraceStore(sqlite_url) as ts:
        expected = ts.traces()

        def broken(query):
            raise OSError("driver exploded")

        monkeypatch.setattr(ts._reader, "read", broken)
        _same(ts.traces(), expected)  # answered through SQLAlchemy
    # stores the drivers cannot open read through SQLAlchemy from the start
    with TraceStore("sqlite://") as memory:
        assert memory.reader == "sqlalchemy"
    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with TraceStore(engine) as theirs:  # an Engine made elsewhere may carry connect_args
        assert theirs.reader == "sqlalchemy"
    engine.dispose()


def test_analysis_indexes_exist_and_are_used(db_url: str) -> None:
    build(db_url)
    engine = make_engine(db_url)
    names = {ix["name"] for ix in sa.inspect(engine).get_indexes("spans")}
    if engine.dialect.name == "sqlite":
        assert {"ix_spans_roots", "ix_spans_llm_calls"} <= names
        assert not {"ix_spans_root_start_pg", "ix_spans_llm_trace_pg"} & names
        with TraceStore(engine) as ts:
            sql = ts._traces_query().compile(
                dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
            )
            with engine.connect() as conn:
                plan = " / ".join(
                    str(row[-1])
                    for row in conn.exec_driver_sql(
                        f"EXPLAIN QUERY PLAN {sql}", tuple(sql.params[p] for p in sql.positiontup)
                    )
                )
        # both the roots and the LLM calls come from their covering indexes, never from the rows
        assert "COVERING INDEX ix_spans_roots" in plan and "COVERING INDEX ix_spans_llm_calls" in plan
    else:
        assert {"ix_spans_root_start_pg", "ix_spans_llm_trace_pg"} <= names
        assert not {"ix_spans_roots", "ix_spans_llm_calls"} & names
    # a store made before these indexes gets them when it is next opened
    with engine.begin() as conn:
        for name in names & {
            "ix_spans_roots",
            "ix_spans_llm_calls",
            "ix_spans_root_start_pg",
            "ix_spans_llm_trace_pg",
        }:
            conn.exec_driver_sql(f"DROP INDEX {name}")
    ensure_schema(engine)
    assert {ix["name"] for ix in sa.inspect(engine).get_indexes("spans")} == names
    engine.dispose()


def test_large_reads_split_in_ranges_give_the_same_frame(stores, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above SPLIT_MIN_ROWS spans, spans() reads start_time ranges in parallel: same rows, same order."""
    from llmobs_callbacks.analysis import fetch

    fast, slow, _ = stores
    statements: list[str] = []
    fast._reader.trace = statements.append
    monkeypatch.setattr(fetch, "SPLIT_MIN_ROWS", 100)
    for kwargs in (
        {},
        {"content": True},
        {"kind": "llm"},
        {"since": T0 + timedelta(minutes=100)},
        {"limit": 500},
    ):
        statements.clear()
        _same(fast.spans(**kwargs), slow.spans(**kwargs))
        # two ranges; one query for a selective filter or a LIMIT
        assert len(statements) == (1 if {"kind", "limit"} & set(kwargs) else 2)
    fast._reader.parallel = 3
    statements.clear()
    _same(fast.spans(), slow.spans())
    assert len(statements) == 3
