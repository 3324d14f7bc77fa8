"""Many processes, one store: 4 processes × 2,000 traces into one SQLite file (WAL, busy
timeout) and into one PostgreSQL schema; every trace is present exactly once."""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from pathlib import Path

from conftest import fetch
from fixtures.durability import SPANS_PER_TRACE, multiprocess_worker

PROCESSES, TRACES = 4, 2000


def test_four_processes_write_one_store(db_url: str, tmp_path: Path) -> None:
    # spawn: each child starts clean and builds its own LLMObs (the schema does not exist yet,
    # so the four also race to create it).
    ctx = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"worker-{i}.json" for i in range(PROCESSES)]
    procs = [
        ctx.Process(target=multiprocess_worker, args=(db_url, str(tmp_path / "spool"), TRACES, str(out)))
        for out in outs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * PROCESSES

    reports = [json.loads(out.read_text()) for out in outs]
    assert all(r["flushed"] for r in reports)
    assert all(r["dropped"] == {} for r in reports)
    expected = {trace_id for r in reports for trace_id in r["ids"]}
    assert len(expected) == PROCESSES * TRACES

    spans = fetch(db_url, "spans")
    assert len(spans) == PROCESSES * TRACES * SPANS_PER_TRACE
    per_trace = Counter(s["trace_id"] for s in spans)
    assert set(per_trace) == expected
    assert set(per_trace.values()) == {SPANS_PER_TRACE}  # each trace once, complete
    roots = [s for s in spans if s["parent_span_id"] is None]
    assert sorted(s["span_id"] for s in roots) == sorted(expected)
