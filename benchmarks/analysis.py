"""How fast ``TraceStore`` reads a large SQLite store into pandas.

    python benchmarks/analysis.py [--sizes 100000 1000000] [--repeat 3]

For each size, a temporary SQLite file gets that many synthetic spans (10 per trace: a root
chain, retriever, prompt, LLM, parser…, two prompt versions, 2 % errors, one branch decision
per trace) through a DBAPI ``executemany`` (``sinks.bulk.BulkInserter``, the writer's own fast
path). Then, best of ``--repeat``: ``spans()`` (every column, the whole table),
``spans(kind="llm")``, ``traces()`` (SQL GROUP BY per trace) and ``summary()``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.sinks.bulk import BulkInserter
from llmobs_callbacks.sinks.schema import ensure_schema, make_engine
from llmobs_callbacks.sinks.tables import BranchDecisionRow, SpanRow

KINDS = ["chain", "graph_node", "chain", "retriever", "chain", "prompt", "llm", "parser", "chain", "tool"]


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
                    start_time=start + timedelta(milliseconds=i),
                    end_time=start + timedelta(milliseconds=i + latency),
                    latency_ms=latency,
                    prompt_name="support",
                    prompt_version=version,
                    session_id=f"s-{t % 1000}",
                    user_id=f"u-{t % 300}",
                    service="bench",
                    attributes={"k": i},
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
    engine.dispose()


def best(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("| spans | populate s | spans() s | spans(kind='llm') s | traces() s | summary() s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            start = time.perf_counter()
            populate(url, size)
            populate_s = time.perf_counter() - start
            with TraceStore(url) as ts:
                t_spans, frame = best(ts.spans, args.repeat)
                assert len(frame) == size  # type: ignore[arg-type]
                t_llm, _ = best(lambda ts=ts: ts.spans(kind="llm"), args.repeat)
                t_traces, _ = best(ts.traces, args.repeat)
                t_summary, _ = best(ts.summary, args.repeat)
            print(
                f"| {size:,} | {populate_s:.1f} | {t_spans:.2f} | {t_llm:.2f} | {t_traces:.2f} "
                f"| {t_summary:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
