"""Backpressure: a burst far beyond the writer's throughput. With ``queue_full="drop"`` every
span is either stored or counted as dropped (exactly); with ``"block"`` the caller waits
(bounded) instead, and what still does not fit is counted too."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa
from conftest import fetch
from fixtures.durability import SPANS_PER_TRACE, run_traces
from prometheus_client import CollectorRegistry

from llmobs_callbacks import LLMObs

WRITE_PAUSE_S = 0.15  # per statement: a writer of a few hundred spans/s (batches of 50)


def _slow_writer_obs(tmp_path: Path, **options) -> tuple[LLMObs, str, CollectorRegistry]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    registry = CollectorRegistry()
    obs = LLMObs(
        url,
        prometheus_registry=registry,
        spool_dir=tmp_path / "spool",
        max_queue_size=200,
        max_batch_size=50,
        flush_interval_s=0.05,
        **options,
    )

    @sa.event.listens_for(obs.sql.engine, "before_cursor_execute")
    def _slow(*_args) -> None:  # the database is the bottleneck, as in production bursts
        time.sleep(WRITE_PAUSE_S)

    return obs, url, registry


def _dropped_metric(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("llmobs_spans_dropped_total", {"reason": reason})
    return value or 0.0


def _span_ids(url: str) -> set[str]:
    return {r["span_id"] for r in fetch(url, "spans")}


def test_drop_policy_counts_exactly_what_is_missing(tmp_path: Path) -> None:
    obs, url, registry = _slow_writer_obs(tmp_path)
    traces = 2000
    started = time.monotonic()
    run_traces(obs.langchain_handler(), traces)
    elapsed = time.monotonic() - started
    stored_during_burst = len(_span_ids(url))
    assert obs.flush(timeout=60)

    stored = len(_span_ids(url))
    dropped = obs.stats()["spans_dropped"]
    assert set(dropped) == {"queue_full"}
    assert dropped["queue_full"] > 0 and stored > 0
    assert stored + dropped["queue_full"] == traces * SPANS_PER_TRACE
    assert _dropped_metric(registry, "queue_full") == dropped["queue_full"]
    offered, written = traces * SPANS_PER_TRACE / elapsed, stored_during_burst / elapsed
    print(f"burst: {offered:.0f} spans/s offered, writer {written:.0f}/s, {dropped['queue_full']} dropped")
    obs.shutdown()


def test_block_policy_waits_for_room_instead_of_dropping(tmp_path: Path) -> None:
    obs, url, registry = _slow_writer_obs(tmp_path, queue_full="block", block_timeout_s=30.0)
    ids = run_traces(obs.langchain_handler(), 300)
    assert obs.flush(timeout=60)
    rows = fetch(url, "spans")
    assert len(rows) == 300 * SPANS_PER_TRACE
    assert {r["trace_id"] for r in rows} == set(ids)
    assert obs.stats()["spans_dropped"] == {}
    assert _dropped_metric(registry, "queue_full") == 0
    obs.shutdown()


def test_block_policy_drops_and_counts_after_its_timeout(tmp_path: Path) -> None:
    obs, url, registry = _slow_writer_obs(tmp_path, queue_full="block", block_timeout_s=0.001)
    run_traces(obs.langchain_handler(), 1000)
    assert obs.flush(timeout=60)
    stored = len(_span_ids(url))
    dropped = obs.stats()["spans_dropped"].get("queue_full", 0)
    assert dropped > 0
    assert stored + dropped == 1000 * SPANS_PER_TRACE
    assert _dropped_metric(registry, "queue_full") == dropped
    obs.shutdown()
