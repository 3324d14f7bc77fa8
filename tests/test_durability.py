"""No loss when the database is down, locked or full: retry, spool, replay, exactly once.

The PostgreSQL outage goes through a TCP proxy (tests/fixtures/durability.py): the shared
server keeps running for everyone else while this test's connections die and are refused.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import _PG_SKIP_REASON, POSTGRES_URL, fetch
from fixtures.durability import SPANS_PER_TRACE, FlakyProxy, counting_exporter, run_traces, store_counts
from prometheus_client import CollectorRegistry

from llmobs_callbacks import LLMObs

# The scenario is a 30 s outage; LLMOBS_TEST_OUTAGE_S shortens it for quick runs.
OUTAGE_S = float(os.environ.get("LLMOBS_TEST_OUTAGE_S", "30"))

needs_postgres = pytest.mark.skipif(bool(_PG_SKIP_REASON), reason=_PG_SKIP_REASON or "")


def _sample_sum(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def pg_schema():
    """A fresh schema on the shared PostgreSQL (dropped afterwards): (direct URL, schema, base)."""
    if _PG_SKIP_REASON:
        pytest.skip(_PG_SKIP_REASON)
    schema = f"t_dur_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", schema
    with engine.begin() as conn:
        conn.execute(sa.text(f'drop schema "{schema}" cascade'))
    engine.dispose()


@pytest.fixture
def proxy():
    url = sa.engine.make_url(POSTGRES_URL)
    p = FlakyProxy((url.host or "127.0.0.1", url.port or 5432))
    yield p
    p.close()


def _via(proxy: FlakyProxy, direct_url: str) -> str:
    return direct_url.replace(f"127.0.0.1:{sa.engine.make_url(POSTGRES_URL).port}", f"127.0.0.1:{proxy.port}")


@needs_postgres
def test_postgres_outage_in_the_middle_of_5000_traces(pg_schema, proxy, tmp_path: Path) -> None:
    direct, _ = pg_schema
    registry = CollectorRegistry()
    seen, counting = counting_exporter()
    obs = LLMObs(
        _via(proxy, direct),
        prometheus_registry=registry,
        exporters=[counting],
        spool_dir=tmp_path / "spool",
        replay_interval_s=1.0,
        database_timeout_s=2.0,
    )
    handler = obs.langchain_handler()
    ids = run_traces(handler, 2500)
    assert obs.flush(timeout=30)

    proxy.down()
    outage_start = time.monotonic()
    ids += run_traces(handler, 2500)
    # Not stored yet: flush says so instead of blocking, and the spool holds the spans.
    assert obs.flush(timeout=1.0) is False
    assert _wait_for(lambda: obs.stats()["spool"]["pending_spans"] > 0)
    assert obs.stats()["spool"]["store_available"] is False
    assert _sample_sum(registry, "llmobs_store_available") == 0
    assert _sample_sum(registry, "llmobs_spool_pending_spans") > 0
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_start)))
    assert obs.flush(timeout=0.5) is False  # still down after the whole outage
    proxy.up()

    assert obs.flush(timeout=60) is True
    rows, distinct, traces = store_counts(direct)
    assert rows == distinct == 5000 * SPANS_PER_TRACE
    assert traces == set(ids)
    stats = obs.stats()
    assert stats["spans_dropped"] == {}
    assert stats["spool"]["pending_spans"] == 0
    assert stats["spool"]["replayed_spans"] > 0
    assert stats["spool"]["store_available"] is True
    # Other exporters saw every span exactly once: only the SQL write was retried.
    assert len(seen()) == 5000 * SPANS_PER_TRACE and set(seen().values()) == {1}
    assert _sample_sum(registry, "llmobs_traces_total") == 5000
    # The outage, as Prometheus sees it.
    assert _sample_sum(registry, "llmobs_store_outages_total") == 1
    assert _sample_sum(registry, "llmobs_spool_spans_replayed_total") == stats["spool"]["replayed_spans"]
    assert _sample_sum(registry, "llmobs_spool_spans_written_total") == stats["spool"]["spooled_spans"] > 0
    assert _sample_sum(registry, "llmobs_spool_pending_spans") == 0
    assert _sample_sum(registry, "llmobs_store_available") == 1
    obs.shutdown()
    assert not list((tmp_path / "spool").glob("segment-*"))  # replayed segments are deleted


@needs_postgres
def test_unreachable_postgres_at_start_can_spool_by_choice(pg_schema, proxy, tmp_path: Path) -> None:
    direct, _ = pg_schema
    proxy.down()
    obs = LLMObs(
        _via(proxy, direct),
        prometheus_registry=None,
        require_database=False,
        spool_dir=tmp_path / "spool",
        replay_interval_s=0.5,
    )
    ids = run_traces(obs.langchain_handler(), 50)
    assert obs.flush(timeout=1.0) is False
    proxy.up()
    assert obs.flush(timeout=30) is True  # creates the schema, then replays
    rows, distinct, traces = store_counts(direct)
    assert rows == distinct == 50 * SPANS_PER_TRACE and traces == set(ids)
    obs.shutdown()


def _sqlite(tmp_path: Path, **options) -> tuple[LLMObs, str, Path]:
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    options = {
        "prometheus_registry": None,
        "spool_dir": tmp_path / "spool",
        "database_timeout_s": 0.2,
        "replay_interval_s": 0.5,
        **options,
    }
    return LLMObs(url, **options), url, path


def test_locked_sqlite_file_spools_then_replays(tmp_path: Path) -> None:
    obs, url, path = _sqlite(tmp_path)
    handler = obs.langchain_handler()
    ids = run_traces(handler, 200)
    assert obs.flush(timeout=10)

    locker = sqlite3.connect(path, timeout=0, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another connection holds the write lock
    ids += run_traces(handler, 800)
    assert obs.flush(timeout=1.0) is False
    assert _wait_for(lambda: obs.stats()["spool"]["pending_spans"] == 800 * SPANS_PER_TRACE)
    assert store_counts(url)[0] == 200 * SPANS_PER_TRACE  # nothing new reached the store
    locker.execute("COMMIT")
    locker.close()

    assert obs.flush(timeout=30) is True
    rows, distinct, traces = store_counts(url)
    assert rows == distinct == 1000 * SPANS_PER_TRACE and traces == set(ids)
    assert obs.stats()["spans_dropped"] == {}
    obs.shutdown()


def test_disk_full_spools_then_replays(tmp_path: Path) -> None:
    obs, url, _ = _sqlite(tmp_path)
    handler = obs.langchain_handler()
    ids = run_traces(handler, 20)
    assert obs.flush(timeout=10)

    def cap_pages(dbapi_conn, _record) -> None:  # SQLite's own "database or disk is full"
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

    engine = obs.sql.engine
    sa.event.listen(engine, "connect", cap_pages)
    engine.dispose()
    ids += run_traces(handler, 300)
    assert obs.flush(timeout=1.0) is False
    assert "full" in (obs.stats()["spool"]["last_error"] or "")
    sa.event.remove(engine, "connect", cap_pages)
    engine.dispose()  # "disk space freed"

    assert obs.flush(timeout=30) is True
    rows, distinct, traces = store_counts(url)
    assert rows == distinct == 320 * SPANS_PER_TRACE and traces == set(ids)
    obs.shutdown()


def test_spool_is_bounded_and_what_does_not_fit_is_counted(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    obs, url, path = _sqlite(
        tmp_path, spool_max_bytes=40_000, prometheus_registry=registry, max_batch_size=20
    )
    handler = obs.langchain_handler()
    locker = sqlite3.connect(path, timeout=5, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    run_traces(handler, 500)
    assert obs.flush(timeout=2.0) is False
    locker.execute("COMMIT")
    locker.close()
    assert obs.flush(timeout=30) is True

    stored = store_counts(url)[0]
    dropped = obs.stats()["spans_dropped"]
    assert set(dropped) == {"spool_full"}
    assert 0 < stored < 500 * SPANS_PER_TRACE  # part fitted in the spool, the rest is counted
    assert stored + dropped["spool_full"] == 500 * SPANS_PER_TRACE
    assert _sample_sum(registry, "llmobs_spans_dropped_total", reason="spool_full") == dropped["spool_full"]
    obs.shutdown()


def test_without_a_spool_an_outage_is_counted_as_store_unavailable(tmp_path: Path) -> None:
    obs, url, path = _sqlite(tmp_path, spool_dir=False, max_batch_size=50)
    handler = obs.langchain_handler()
    locker = sqlite3.connect(path, timeout=5, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    run_traces(handler, 100)
    obs.flush(timeout=5.0)
    locker.execute("COMMIT")
    locker.close()
    time.sleep(0.6)  # past the next probe time: the next batch probes the database again
    run_traces(handler, 10)
    assert obs.flush(timeout=10)
    stored = store_counts(url)[0]
    assert stored >= 10 * SPANS_PER_TRACE  # writes resumed after the outage
    assert stored + obs.stats()["spans_dropped"]["store_unavailable"] == 110 * SPANS_PER_TRACE
    obs.shutdown()


def test_the_spool_holds_prepared_rows_only(tmp_path: Path) -> None:
    """What is spooled is what the store would get: no captured content with capture_content=False."""
    secret = "sk-live-SECRET-4242"
    obs, url, path = _sqlite(tmp_path, capture_content=False)
    locker = sqlite3.connect(path, timeout=5, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    from fixtures.durability import make_chain

    run_id = uuid.uuid4()
    make_chain().invoke({"q": secret}, config={"callbacks": [obs.langchain_handler()], "run_id": run_id})
    assert obs.flush(timeout=1.0) is False
    spooled = b"".join(p.read_bytes() for p in (tmp_path / "spool").glob("segment-*.jsonl"))
    assert str(run_id).encode() in spooled
    assert secret.encode() not in spooled
    locker.execute("COMMIT")
    locker.close()
    assert obs.flush(timeout=30)
    (root,) = fetch(url, "spans", span_id=str(run_id))
    assert root["input"] is None and root["output"] is None
    obs.shutdown()


def test_orphaned_runs_are_evicted_after_the_ttl(tmp_path: Path) -> None:
    """Bounded memory: a run that starts and never ends is closed as an error and stored."""
    now = [1_700_000_000 * 10**9]
    obs, url, _ = _sqlite(tmp_path, open_span_ttl_s=60, clock=lambda: now[0])
    handler = obs.langchain_handler()
    orphans = [uuid.uuid4() for _ in range(100)]
    for run_id in orphans:
        handler.on_chain_start({"name": "never-ends"}, {"q": 1}, run_id=run_id, name="never-ends")
    assert obs.stats()["open_spans"] == 100
    now[0] += 61 * 10**9
    assert obs.recorder.evict_expired() == 100
    assert obs.stats()["open_spans"] == 0
    assert obs.flush(timeout=10)
    rows = fetch(url, "spans")
    assert {r["span_id"] for r in rows} == {str(r) for r in orphans}
    assert {(r["status"], r["error_type"]) for r in rows} == {("error", "SpanNotEnded")}
    assert obs.stats()["events"].get("evicted_open_spans") == 100
    obs.shutdown()


def test_feedback_during_an_outage_is_stored_once_it_is_over(tmp_path: Path) -> None:
    obs, url, path = _sqlite(tmp_path)
    ids = run_traces(obs.langchain_handler(), 3)
    assert obs.flush(timeout=10)
    locker = sqlite3.connect(path, timeout=5, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    score_id = obs.feedback(ids[0], score=0.0, comment="too slow")
    assert obs.flush(timeout=1.0) is False  # the score waits in the spool
    assert obs.stats()["spool"]["spooled_scores"] == 1
    locker.execute("COMMIT")
    locker.close()
    assert obs.flush(timeout=30) is True
    (row,) = fetch(url, "scores")
    assert (row["id"], row["trace_id"], row["value"], row["source"]) == (score_id, ids[0], 0.0, "user")
    assert row["label"] == "negative"  # not flagged unknown because the store could not be asked
    assert obs.stats()["spans_dropped"] == {}
    obs.shutdown()
