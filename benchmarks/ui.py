"""How fast the web UI answers on a large store (SQLite and PostgreSQL), through the ASGI app.

    python benchmarks/ui.py [--size 1000000] [--repeat 15] [--dir /tmp/llmobs-bench-ui]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test] [--no-sqlite]

The store is ``benchmarks/analysis.py``'s synthetic one (10 spans per trace, two prompt
versions, 2 % errors, sessions and users; bulk inserts, not the handler) plus one 50-span trace
(nested four deep, LLM calls, retrieved documents, scores, a branch decision). It is built once
and reused: ``DIR/bench_ui_<size>.db`` for SQLite, schema ``bench_ui_<size>`` for PostgreSQL
(kept: drop it yourself). A reused store first gets the indexes the current schema adds.

Each route is requested through Starlette's test client (the whole app: routing, middleware,
queries, templates), once to warm up, then ``--repeat`` times; the median and the slowest are
printed in milliseconds as a Markdown table. The targets: the first page of ``/traces`` with and
without filters ≤ 300 ms, a 50-span trace page ≤ 200 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analysis import populate

from llmobs_callbacks.sinks.bulk import BulkInserter
from llmobs_callbacks.sinks.schema import ensure_schema, make_engine
from llmobs_callbacks.sinks.tables import (
    BranchDecisionRow,
    RetrievedDocumentRow,
    ScoreRow,
    SpanRow,
)

BIG_TRACE = "big-trace-0000-50-spans"


def add_big_trace(url: str) -> None:
    """One request of 50 spans (a root, 7 steps of 6 nested spans, an LLM call in each step, a
    retriever with 5 documents), with two scores and a branch decision."""
    engine = make_engine(url)
    base = {c.name: None for c in SpanRow.__table__.columns}
    start = datetime.now(timezone.utc) - timedelta(days=8)  # older than the synthetic traces
    spans = []

    def span(
        i: int, parent: int | None, kind: str, offset_ms: float, latency: float, **extra: object
    ) -> None:
        row = dict(base)
        row.update(
            span_id=f"{BIG_TRACE}-{i}",
            trace_id=BIG_TRACE,
            parent_span_id=None if parent is None else f"{BIG_TRACE}-{parent}",
            kind=kind,
            name=f"{kind}_{i}",
            framework="langchain",
            status="ok",
            start_time=start + timedelta(milliseconds=offset_ms),
            end_time=start + timedelta(milliseconds=offset_ms + latency),
            latency_ms=latency,
            prompt_name="support",
            prompt_version="v2",
            session_id="s-big",
            user_id="u-big",
            attributes={"step": i, "langgraph_node": f"node_{i % 7}"},
            input=json.dumps({"question": "How long do refunds take? " * 20, "step": i}),
            output=json.dumps({"answer": "Refunds take 5 business days. " * 30}),
        )
        row.update(extra)
        spans.append(row)

    span(0, None, "chain", 0, 7000)
    i = 1
    for step in range(7):
        t = step * 1000.0
        top = i
        span(top, 0, "graph_node", t, 950)
        span(top + 1, top, "chain", t + 5, 900)
        span(top + 2, top + 1, "retriever", t + 10, 100)
        span(top + 3, top + 1, "prompt", t + 120, 5)
        messages = [
            {"type": "system", "content": "You answer briefly."},
            {"type": "human", "content": "Refunds?"},
        ]
        span(top + 4, top + 1, "llm", t + 130, 700, input=json.dumps(messages), model="gpt-4o-mini",
             provider="openai", input_tokens=300 + step, output_tokens=60, total_tokens=360 + step,
             cost_usd=(300 + step) * 0.15e-6 + 60 * 0.6e-6, ttft_ms=120.0)  # fmt: skip
        span(top + 5, top + 1, "parser", t + 840, 3)
        i += 6
    span(i, 0, "tool", 6990, 5)  # span 43
    for j in range(i + 1, 50):
        span(j, i, "chain", 6991 + (j - i) * 0.1, 0.1)
    docs = [
        {"span_id": f"{BIG_TRACE}-3", "rank": r, "trace_id": BIG_TRACE, "document_id": f"doc-{r}",
         "score": 0.9 - r / 10, "content": "Refunds are issued within 5 business days. " * 5,
         "attributes": {"source": "kb"}}
        for r in range(5)
    ]  # fmt: skip
    scores = [
        {"id": uuid.uuid4().hex, "trace_id": BIG_TRACE, "span_id": f"{BIG_TRACE}-0", "name": name,
         "value": value, "source": source, "created_at": start + timedelta(seconds=10)}
        for name, value, source in (("faithfulness", 0.9, "judge"), ("user_feedback", 1.0, "user"))
    ]  # fmt: skip
    branch = {"id": f"{BIG_TRACE}-b", "trace_id": BIG_TRACE, "span_id": f"{BIG_TRACE}-1",
              "graph": "support_bot", "from_node": "classify", "to_node": "answer", "condition": "route",
              "created_at": start}  # fmt: skip
    with engine.begin() as conn:
        BulkInserter(engine, SpanRow.__table__, ["span_id"]).insert(conn, spans)
        BulkInserter(engine, RetrievedDocumentRow.__table__, ["span_id", "rank"]).insert(conn, docs)
        conn.execute(sa.insert(ScoreRow.__table__), scores)
        conn.execute(sa.insert(BranchDecisionRow.__table__), [branch])
    engine.dispose()


def routes(url: str) -> list[tuple[str, str, str | None]]:
    """(label, path, target): the routes measured, with their targets."""
    engine = make_engine(url)
    with engine.connect() as conn:
        small = conn.execute(
            sa.text("select trace_id from spans where parent_span_id is null and trace_id like 't%' limit 1")
        ).scalar()
        first, last = conn.execute(
            sa.text("select min(start_time), max(start_time) from spans where trace_id like 't%'")
        ).one()
    engine.dispose()
    first = first if isinstance(first, datetime) else datetime.fromisoformat(str(first))
    last = last if isinstance(last, datetime) else datetime.fromisoformat(str(last))
    middle = (first + (last - first) / 2).replace(tzinfo=None)
    since, until = (f"{t.isoformat(timespec='seconds')}Z" for t in (middle, middle + timedelta(hours=1)))
    return [
        ("/traces (first page, no filter)", "/traces", "300"),
        ("/traces?prompt_version=v2", "/traces?prompt_version=v2", "300"),
        ("/traces?model=gpt-4o-mini", "/traces?model=gpt-4o-mini", "300"),
        ("/traces?status=error", "/traces?status=error", "300"),
        ("/traces?session=s-17", "/traces?session=s-17", "300"),
        ("/traces?user=u-42", "/traces?user=u-42", "300"),
        ("/traces?since=…&until=… (middle 1 h)", f"/traces?since={since}&until={until}", "300"),
        ("/traces?sort=latency", "/traces?sort=latency", "300"),
        ("/traces?page=20", "/traces?page=20", "300"),
        ("/traces?search=business (in every trace)", "/traces?search=business", None),
        ("/traces?search=no-such-text (no match: a full scan)", "/traces?search=no-such-text", None),
        ("/traces?sort=cost (every request's sums)", "/traces?sort=cost", None),
        ("/api/traces", "/api/traces", "300"),
        ("/api/summary (every request: pandas)", "/api/summary", None),
        ("/traces/{id} (50 spans)", f"/traces/{BIG_TRACE}", "200"),
        ("/api/traces/{id} (50 spans)", f"/api/traces/{BIG_TRACE}", "200"),
        ("/traces/{id} (10 spans)", f"/traces/{small}", "200"),
        # The overview and the other pages (no target in the issue; a page, then its panels).
        ("/ (overview, 24 h)", "/", None),
        ("/?range=1h", "/?range=1h", None),
        ("/api/charts/overview", "/api/charts/overview", None),
        *((f"/fragments/overview/{p}",) * 2 + (None,) for p in ("branches", "tools", "spend")),
        ("/sessions", "/sessions", None),
        ("/sessions/s-17", "/sessions/s-17", None),
        ("/prompts", "/prompts", None),
    ]


def measure(label: str, url: str, repeat: int) -> list[tuple[str, float, float, str | None]]:
    from starlette.testclient import TestClient

    from llmobs_callbacks.ui import create_app

    out = []
    with TestClient(create_app(url)) as client:
        for name, path, target in routes(url):
            response = client.get(path)  # warm: templates compiled, pages cached
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200
            out.append((name, statistics.median(times), max(times), target))
            print(f"  {label} {name}: median {statistics.median(times):.1f} ms", file=sys.stderr, flush=True)
    return out


def prepare_sqlite(directory: Path, size: int) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bench_ui_{size}.db"
    url = f"sqlite:///{path}"
    if not path.exists():
        start = time.perf_counter()
        populate(url, size - 50)
        add_big_trace(url)
        print(f"built {path} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    else:
        engine = make_engine(url)
        ensure_schema(engine)  # the indexes a newer schema adds
        engine.dispose()
    return url


def prepare_postgres(base: str, size: int) -> str:
    schema = f"bench_ui_{size}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        exists = conn.exec_driver_sql(
            "select 1 from information_schema.schemata where schema_name = %s", (schema,)
        ).first()
        if not exists:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    admin.dispose()
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    if not exists:
        start = time.perf_counter()
        populate(url, size - 50)
        add_big_trace(url)
        print(f"built PostgreSQL schema {schema} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    engine = make_engine(url)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE spans, retrieved_documents, scores, branch_decisions")
    engine.dispose()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--dir", default="/tmp/llmobs-bench-ui", help="where the SQLite store is kept")
    parser.add_argument("--postgres", metavar="URL", help="also benchmark this PostgreSQL database")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    results = {}
    if not args.no_sqlite:
        results["SQLite"] = measure("SQLite", prepare_sqlite(Path(args.dir), args.size), args.repeat)
    if args.postgres:
        results["PostgreSQL"] = measure("PostgreSQL", prepare_postgres(args.postgres, args.size), args.repeat)
    load = os.getloadavg()[0]
    print(f"{args.size:,} spans, median (max) of {args.repeat} requests, ms; load average {load:.2f}\n")
    names = list(results)
    print("| route | target ms | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for i, (name, _, _, target) in enumerate(next(iter(results.values()))):
        cells = [f"{results[n][i][1]:.0f} ({results[n][i][2]:.0f})" for n in names]
        print(f"| {name} | {target or '–'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
