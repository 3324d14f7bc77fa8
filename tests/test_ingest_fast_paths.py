"""The writer's fast paths store and count exactly what the plain paths do.

- ``BulkInserter``: PostgreSQL batches go through COPY into a staging table (executemany below
  ``copy_threshold``); rows, JSON text, NULLs and timestamps must be the same either way, and a
  replayed batch must add nothing.
- SQLite batches go in as multi-row statements (power-of-two chunks): the same rows as
  ``executemany``, whatever the batch size, and replays add nothing.
- ``json_text`` is ``json.dumps``; ``jsonable_dict``'s flat-dict shortcut is ``to_jsonable``.
- Prometheus updates are summed per series over a batch: the scrape must match span-by-span
  ``observe``/``inc`` calls.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone

import pytest
from conftest import fetch, sql
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from llmobs_callbacks.model import STATUS_ERROR, RetrievedDocument, SpanRecord, TokenUsage
from llmobs_callbacks.serialize import jsonable_dict, to_jsonable
from llmobs_callbacks.sinks import bulk
from llmobs_callbacks.sinks.prometheus import PrometheusExporter
from llmobs_callbacks.sinks.prometheus import metrics as prometheus_metrics
from llmobs_callbacks.sinks.sql import SQLExporter

T0 = 1_763_800_000_123_456_789  # ns: sub-microsecond digits exercise the rounding


def _span(i: int, trace: str, *, parent: str | None = None, kind: str = "llm") -> SpanRecord:
    s = SpanRecord(str(uuid.uuid4()), trace, parent, kind, f"step-{i % 3}", "langchain", T0 + i * 1_000)
    s.end_ns = T0 + i * 1_000 + 2_500_000 + i
    s.input = '{"question":"é ü \\n\\t tab"}'
    s.output = None if i % 2 else "answer\twith\\backslash\nand newline"
    s.metadata = {"team": "support", "nested": {"a": [1, 2.5, None, "ß"]}, "flag": True} if i % 3 else None
    s.tags = ["x", "ü"] if i % 2 else None
    s.session_id = None if i % 4 == 0 else f"s-{i}"
    if kind == "llm":
        s.model, s.provider = "gpt-4o-mini", "openai"
        s.usage = TokenUsage(input_tokens=100 + i, output_tokens=20, total_tokens=120 + i)
        s.cost_usd = 0.000123 * (i + 1)
        s.price_source = "genai-prices"
    return s


def _rows(url: str) -> dict[str, dict]:
    return {r["span_id"]: r for r in fetch(url, "spans")}


@pytest.mark.parametrize("threshold", [1, 10**9], ids=["copy", "executemany"])
def test_bulk_paths_store_identical_rows_and_replays_add_nothing(
    db_url: str, threshold: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL ``copy`` uses COPY, ``executemany`` does not; SQLite uses multi-row INSERTs either way.
    Either way every column reads back as written and a replay (whole batch, or a batch mixing
    stored and new spans) inserts only the new rows."""
    monkeypatch.setattr(bulk.BulkInserter, "copy_threshold", threshold)
    exporter = SQLExporter(db_url)
    try:
        trace = str(uuid.uuid4())
        spans = [_span(i, trace, parent=None if i == 0 else "p") for i in range(40)]
        exporter.export(spans)
        first = _rows(db_url)
        assert len(first) == 40
        exporter.export(spans)  # replay: nothing new
        more = [_span(100 + i, trace, parent="p") for i in range(5)]
        exporter.export(spans[:10] + more)  # half replay
        rows = _rows(db_url)
        assert len(rows) == 45
        assert {k: rows[k] for k in first} == first  # replays changed nothing
        for s in spans + more:
            row = rows[s.span_id]
            assert row["start_time"] == datetime.fromtimestamp(s.start_ns / 1e9, tz=timezone.utc)
            assert row["end_time"] == datetime.fromtimestamp(s.end_ns / 1e9, tz=timezone.utc)
            assert (row["input"], row["output"]) == (s.input, s.output)
            assert row["attributes"] == s.metadata and row["tags"] == s.tags
            assert row["session_id"] == s.session_id and row["parent_span_id"] == s.parent_span_id
            assert row["input_tokens"] == s.usage.input_tokens and row["cost_usd"] == s.cost_usd
            assert row["error_type"] is None and row["ttft_ms"] is None
        # The JSON columns hold exactly what json.dumps gives (what SQLAlchemy's JSON writes).
        stored = dict(
            sql(db_url, "select span_id, cast(attributes as text) from spans where attributes is not null")
        )
        by_id = {s.span_id: s for s in spans + more}
        assert stored and all(text == json.dumps(by_id[k].metadata) for k, text in stored.items())
        null_json = sql(db_url, "select count(*) from spans where attributes is null")[0][0]
        assert null_json == sum(1 for s in spans + more if s.metadata is None)
    finally:
        exporter.shutdown()


def test_copy_and_executemany_write_the_same_text(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same spans through each path (different ids) read back as the same text, column by column."""
    exporter = SQLExporter(db_url)
    try:
        batches = {}
        for label, threshold in (("copy", 1), ("many", 10**9)):
            monkeypatch.setattr(bulk.BulkInserter, "copy_threshold", threshold)
            trace = f"trace-{label}"
            spans = [_span(i, trace, parent=None if i == 0 else "p") for i in range(35)]
            for i, s in enumerate(spans):
                s.span_id = f"{label}-{i:03d}"
            exporter.export(spans)
            batches[label] = spans
        columns = "start_time, end_time, attributes, tags, input, output, cost_usd, latency_ms, session_id"
        if "postgresql" in db_url:  # compare the stored text, not the values SQLAlchemy decodes
            columns = ", ".join(f"cast({c} as text)" for c in columns.split(", "))
        copy = sql(db_url, f"select {columns} from spans where trace_id = 'trace-copy' order by span_id")
        many = sql(db_url, f"select {columns} from spans where trace_id = 'trace-many' order by span_id")
        assert len(copy) == 35 and copy == many
    finally:
        exporter.shutdown()


def test_power_of_two_chunks_cover_every_row() -> None:
    for n in range(0, 1100):
        sizes = list(bulk._power_of_two_chunks(n, 256))
        assert sum(sizes) == n
        assert all(size & (size - 1) == 0 and size <= 256 for size in sizes)
        assert len(set(sizes[sizes.count(256) :])) == len(sizes) - sizes.count(256)  # binary digits


@pytest.mark.parametrize("batch", [1, 3, 256, 300, 517])
def test_sqlite_multi_row_statements_store_what_executemany_stores(
    sqlite_url: str, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = SQLExporter(sqlite_url)
    try:
        for label in ("multi", "many"):
            if label == "many":
                monkeypatch.setattr(
                    bulk.BulkInserter,
                    "_insert_sqlite",
                    lambda self, conn, params: conn.exec_driver_sql(self._sql, params),
                )
            spans = [_span(i, f"trace-{label}", parent=None if i == 0 else "p") for i in range(batch)]
            for i, s in enumerate(spans):
                s.span_id = f"{label}-{i:04d}"
                s.documents = [RetrievedDocument(0, f"d{i}", "c", 0.5, {"k": i})]
            exporter.export(spans)
            exporter.export(spans[: batch // 2 + 1])  # a replay adds nothing
        columns = "name, start_time, end_time, attributes, tags, input, output, cost_usd, input_tokens"
        multi = sql(
            sqlite_url, f"select {columns} from spans where trace_id = 'trace-multi' order by span_id"
        )
        many = sql(sqlite_url, f"select {columns} from spans where trace_id = 'trace-many' order by span_id")
        assert len(multi) == batch and multi == many
        docs = sql(sqlite_url, "select count(*) from retrieved_documents")[0][0]
        assert docs == 2 * batch
    finally:
        exporter.shutdown()


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1, 2.5, None, True, False], "c": {"d": "é ü 漢字 \n \u2028"}},
        ["x", "ü"],
        {"nan": math.nan, "inf": math.inf, "big": 10**30, "f": 0.1 + 0.2},
        [],
        {},
        "plain",
    ],
)
def test_json_text_is_json_dumps(value: object) -> None:
    assert bulk.json_text(value) == json.dumps(value)
    assert bulk.json_text(None) is None


def test_json_text_raises_like_json_dumps_on_cycles() -> None:
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular reference"):
        bulk.json_text(cycle)


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.one_of(st.text(max_size=4), st.integers()), st.one_of(_leaf, st.lists(_leaf, max_size=2))
    )
)
def test_jsonable_dict_flat_shortcut_matches_to_jsonable(value: dict) -> None:
    expected = to_jsonable(value) if value else None
    result = jsonable_dict(value)
    assert json.dumps(result, sort_keys=True) == json.dumps(expected, sort_keys=True)
    if result is not None:
        assert result is not value  # a copy: the preparer may not alias the user's metadata


def _mixed_spans() -> list[SpanRecord]:
    """LLM, tool, retriever and root spans, several per series, an error, an unpriced call."""
    spans = []
    for t in range(6):
        trace = f"trace-{t}"
        root = SpanRecord(f"root-{t}", trace, None, "chain", "rag", "langchain", T0)
        root.end_ns = T0 + (t + 1) * 40_000_000
        if t == 3:
            root.status = STATUS_ERROR
        spans.append(root)
        for i in range(4):
            llm = _span(t * 10 + i, trace, parent=root.span_id)
            llm.first_token_ns = llm.start_ns + 12_500_000 * i if i % 2 else None
            llm.usage.reasoning_tokens = i if i > 1 else None
            llm.prompt_version = f"v{i % 2}"
            if i == 3:
                llm.cost_usd = None  # unpriced
            spans.append(llm)
        tool = SpanRecord(f"tool-{t}", trace, root.span_id, "tool", "lookup", "langchain", T0)
        tool.end_ns = T0 + 7_000_000 * (t + 1)
        retr = SpanRecord(f"ret-{t}", trace, root.span_id, "retriever", "docs", "langchain", T0)
        retr.end_ns = T0 + 3_000_000
        retr.documents = [RetrievedDocument(r, f"d{r}", "text", 0.5, None) for r in range(t % 3)]
        spans += [tool, retr]
    return spans


def _samples(registry: CollectorRegistry) -> dict[tuple, tuple]:
    out = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.endswith("_created"):
                continue
            key = (s.name, tuple(sorted(s.labels.items())))
            out[key] = (s.value, None if s.exemplar is None else (s.exemplar.labels, s.exemplar.value))
    return out


def test_batched_prometheus_updates_equal_span_by_span(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = _mixed_spans()
    batched = CollectorRegistry()
    PrometheusExporter(batched).export(spans)

    def one_by_one(child: object, values: list) -> None:
        for value, trace_id in values:  # exemplars travel as trace ids until applied
            child.observe(value, prometheus_metrics._exemplar(trace_id))  # type: ignore[attr-defined]

    reference = CollectorRegistry()
    monkeypatch.setattr(prometheus_metrics, "_observe_many", one_by_one)
    exporter = PrometheusExporter(reference)
    for span in spans:
        exporter.export([span])  # one span per batch: every update applied on its own

    got, want = _samples(batched), _samples(reference)
    assert got.keys() == want.keys()
    assert (
        want[
            (
                "llmobs_llm_requests_total",
                (
                    ("model", "gpt-4o-mini"),
                    ("prompt_version", "v1"),
                    ("provider", "openai"),
                    ("status", "ok"),
                ),
            )
        ][0]
        == 12
    )
    for key, (value, exemplar) in want.items():
        assert got[key][0] == pytest.approx(value, rel=1e-12), key
        assert got[key][1] == exemplar, key
