"""How fast ``TraceStore`` reads a large store into pandas (SQLite and PostgreSQL).

    python benchmarks/analysis.py [--sizes 100000 1000000] [--repeat 3]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test] [--no-sqlite] [--keep DIR]

For each size, a store gets that many synthetic spans (10 per trace: a root chain, retriever,
prompt, LLM, parser…, two prompt versions, 2 % errors, one branch decision per trace; ``input`` /
``output`` JSON text of a few hundred characters, as the writer stores them) through a DBAPI
``executemany`` (``sinks.bulk.BulkInserter``, the writer's own fast path): a temporary SQLite
file (or, with ``--keep DIR``, ``DIR/bench_<size>.db``, reused by later runs), and with
``--postgres URL`` a schema ``bench_analysis_<pid>`` that is dropped afterwards (or, with
``--postgres-schema NAME``, ``NAME_<size>``, kept and reused; a reused store first gets the
indexes the current schema adds, as an application's next start would).

Then, best of ``--repeat``: ``spans()`` (the whole table: every column but ``input`` /
``output``), ``spans(content=True)`` (all 33 columns), ``spans(kind="llm")``, ``traces()`` and
``summary()``. ``--profile`` prints a pyinstrument profile of each call instead of timing it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.sinks.bulk import BulkInserter
from llmobs_callbacks.sinks.schema import ensure_schema, make_engine
from llmobs_callbacks.sinks.tables import BranchDecisionRow, SpanRow

KINDS = ["chain", "graph_node", "chain", "retriever", "chain", "prompt", "llm", "parser", "chain", "tool"]
QUESTION = "How long do refunds take for an annual plan bought through the app store? "


def populate(url: str, n_spans: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    engine = make_engine(url)
    ensure_schema(engine)
    spans = BulkInserter(engine, SpanRow.__table__, ["span_id"])
    branches = BulkInserter(engine, BranchDecisionRow.__table__, ["id"])
    t0 = datetime.now(timezone.utc) - timedelta(days=7)
    base = {c.name: None for c in SpanRow.__table__.columns}
    batch: list[dict] = []
    decisions: list[dict] = []
    per_trace = len(KINDS)
    with engine.begin() as conn:
        for t in range(n_spans // per_trace):
            trace_id = f"t{t:08d}"
            start = t0 + timedelta(seconds=t * 0.5)
            version = "v1" if t % 3 else "v2"
            error = rng.random() < 0.02
            for i, kind in enumerate(KINDS):
                latency = rng.uniform(5, 2000) if i == 0 else rng.uniform(1, 500)
                row = dict(base)
                row.update(
                    span_id=f"{trace_id}-{i}",
                    trace_id=trace_id,
                    parent_span_id=None if i == 0 else f"{trace_id}-0",
                    kind=kind,
                    name=f"{kind}_{i}",
                    framework="langchain",
                    status="error" if error and i in (0, 9) else "ok",
                    error_type="ValueError" if error and i in (0, 9) else None,
                    start_time=start + timedelta(milliseconds=i),
                    end_time=start + timedelta(milliseconds=i + latency),
                    latency_ms=latency,
                    prompt_name="support",
                    prompt_version=version,
                    session_id=f"s-{t % 1000}",
                    user_id=f"u-{t % 300}",
                    service="bench",
                    environment="prod",
                    tags=["beta"] if t % 2 else None,
                    attributes={"k": i, "prompt_version": version},
                    input=json.dumps({"question": QUESTION * (1 + t % 4), "trace": t}),
                    output=json.dumps({"answer": "Refunds take 5 business days. " * (1 + i % 5)}),
                )
                if kind == "llm":
                    tin = rng.randint(100, 400) * (2 if version == "v2" else 1)
                    tout = rng.randint(20, 80)
                    row.update(
                        model="gpt-4o-mini",
                        provider="openai",
                        input_tokens=tin,
                        output_tokens=tout,
                        total_tokens=tin + tout,
                        cost_usd=tin * 0.15e-6 + tout * 0.6e-6,
                        price_source="genai-prices 0.0.30:openai/gpt-4o-mini",
                        ttft_ms=latency / 3,
                    )
                batch.append(row)
            decisions.append(
                {
                    "id": trace_id,
                    "trace_id": trace_id,
                    "span_id": f"{trace_id}-1",
                    "graph": "support_bot",
                    "from_node": "classify",
                    "to_node": rng.choice(["answer", "answer", "order_status", "human_review"]),
                    "condition": "route",
                    "created_at": start,
                }
            )
            if len(batch) >= 20_000:
                spans.insert(conn, batch)
                branches.insert(conn, decisions)
                batch, decisions = [], []
        spans.insert(conn, batch)
        branches.insert(conn, decisions)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # What autovacuum gives a long-lived store soon after a bulk load: planner statistics.
            conn.exec_driver_sql("ANALYZE spans, branch_decisions")  # these tables only
    engine.dispose()


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(label: str, url: str, size: int, repeat: int, profile: bool, populate_s: float | None) -> None:
    content = "content" in inspect.signature(TraceStore.spans).parameters  # older versions: no option
    with TraceStore(url) as ts:
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("spans()", ts.spans),
            ("spans(content=True)", (lambda: ts.spans(content=True)) if content else ts.spans),
            ("spans(kind='llm')", lambda: ts.spans(kind="llm")),
            ("traces()", ts.traces),
            ("summary()", ts.summary),
        ]
        figures = []
        for name, fn in calls:
            if profile:
                from pyinstrument import Profiler

                with Profiler(interval=0.001) as profiler:
                    fn()
                print(f"## {label} {size:,} {name}")
                print(profiler.output_text(unicode=False, color=False, show_all=False))
                continue
            seconds, frame = best(fn, repeat)
            if name.startswith("spans()"):
                assert len(frame) == size, (len(frame), size)
            figures.append(seconds)
    if not profile:
        pop = "reused" if populate_s is None else f"{populate_s:.1f}"
        print(f"| {label} | {size:,} | {pop} | " + " | ".join(f"{s:.2f}" for s in figures) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", help="also benchmark this PostgreSQL database")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument(
        "--postgres-schema",
        metavar="NAME",
        help="keep the PostgreSQL store in schema NAME_<size> (reused, never dropped: drop it yourself)",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep (and reuse) the SQLite files in DIR")
    parser.add_argument("--profile", action="store_true", help="pyinstrument profiles instead of timings")
    args = parser.parse_args()
    if not args.profile:
        print(
            "| database | spans | populate s | spans() s | spans(content=True) s | spans(kind='llm') s "
            "| traces() s | summary() s |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        if not args.no_sqlite:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(args.keep or tmp) / f"bench_{size}.db"
                populate_s = None
                if not path.exists():
                    start = time.perf_counter()
                    populate(f"sqlite:///{path}", size)
                    populate_s = time.perf_counter() - start
                else:  # a kept store gets the indexes the current schema adds
                    engine = make_engine(f"sqlite:///{path}")
                    ensure_schema(engine)
                    engine.dispose()
                measure("SQLite", f"sqlite:///{path}", size, args.repeat, args.profile, populate_s)
        if args.postgres:
            measure_postgres(args, size)


def measure_postgres(args: argparse.Namespace, size: int) -> None:
    keep = args.postgres_schema is not None
    schema = f"{args.postgres_schema}_{size}" if keep else f"bench_analysis_{os.getpid()}"
    admin = sa.create_engine(args.postgres)
    with admin.begin() as conn:
        exists = conn.exec_driver_sql(
            "select 1 from information_schema.schemata where schema_name = %s", (schema,)
        ).first()
        if not exists:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = f"{args.postgres}{'&' if '?' in args.postgres else '?'}options=-csearch_path%3D{schema}"
    try:
        populate_s = None
        if exists:
            # A kept store, as an app finds it at its next start: missing indexes are added.
            engine = make_engine(url)
            ensure_schema(engine)
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE spans, branch_decisions")  # these tables only
            engine.dispose()
        else:
            start = time.perf_counter()
            populate(url, size)
            populate_s = time.perf_counter() - start
        measure("PostgreSQL", url, size, args.repeat, args.profile, populate_s)
    finally:
        if not keep:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


if __name__ == "__main__":
    main()
