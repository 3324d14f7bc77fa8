"""Chaos (issue 17): a locked or unreachable store, a slow store, hostile values, a flood of
orphans, thousands of prompt versions, kill -9. Each test reproduces a loss the writer had
(562c0b0) and checks that nothing is lost now: exact row counts, no drops.

The lock and the outage last ``LLMOBS_TEST_LOCK_S`` (15 s) and ``LLMOBS_TEST_CHAOS_OUTAGE_S``
(10 s) while spans are offered at more than 5,000/s through the real recorder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import _PG_SKIP_REASON, POSTGRES_URL, fetch
from fixtures.chaos import HangingProxy, Producer, SQLiteLock, span_counts, stored_ids, wait_for
from prometheus_client import CollectorRegistry

from llmobs_callbacks import LLMObs
from llmobs_callbacks.model import RetrievedDocument, SpanKind

LOCK_S = float(os.environ.get("LLMOBS_TEST_LOCK_S", "15"))
OUTAGE_S = float(os.environ.get("LLMOBS_TEST_CHAOS_OUTAGE_S", "10"))
RATE = 6_000  # spans/s offered; the bar is 5,000

needs_postgres = pytest.mark.skipif(bool(_PG_SKIP_REASON), reason=_PG_SKIP_REASON or "")


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _assert_everything_stored(obs: LLMObs, url: str, producer: Producer) -> None:
    assert obs.flush(timeout=90), obs.stats()["spool"]
    rows, distinct = span_counts(url)
    assert obs.stats()["spans_dropped"] == {}
    assert rows == distinct == len(producer.span_ids)
    assert stored_ids(url) == set(producer.span_ids)


# -- finding 1: a locked or unreachable store never stalls the writer ------------------------------


def test_a_15s_sqlite_lock_at_5000_spans_per_s_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    registry = CollectorRegistry()
    obs = LLMObs(url, prometheus_registry=registry, spool_dir=tmp_path / "spool")
    producer = Producer(obs.recorder, RATE).start()
    time.sleep(1.0)
    lock = SQLiteLock(path)  # another connection holds BEGIN IMMEDIATE
    locked_at = time.monotonic()
    wait_for(lambda: obs.stats()["spool"].get("state") == "down", timeout=3)
    time.sleep(max(0.0, LOCK_S - 1.0 - (time.monotonic() - locked_at)))
    during = obs.stats()["spool"]  # a second before the lock is released
    gauges = {
        name: _sample(registry, name, **labels)
        for name, labels in (
            ("llmobs_store_available", {}),
            ("llmobs_store_state", {"state": "down"}),
            ("llmobs_spool_bytes", {}),
            ("llmobs_spool_oldest_span_age_seconds", {}),
        )
    }
    time.sleep(max(0.0, LOCK_S - (time.monotonic() - locked_at)))
    lock.release()
    time.sleep(1.0)
    producer.stop()
    assert producer.offered_rate >= 5_000
    _assert_everything_stored(obs, url, producer)
    # It spooled at once instead of waiting on the lock, and said so.
    assert during["state"] == "down"
    assert during["pending_spans"] > 0.5 * RATE * (LOCK_S - 2)
    assert during["oldest_spooled_age_s"] > LOCK_S - 3
    assert gauges["llmobs_store_available"] == 0 and gauges["llmobs_store_state"] == 1
    assert gauges["llmobs_spool_bytes"] > 0 and gauges["llmobs_spool_oldest_span_age_seconds"] > LOCK_S - 3
    # The breaker: the store is probed with backoff, not tried by every batch.
    assert during["write_failures"] <= 12, during
    spool = obs.stats()["spool"]
    assert spool["state"] == "up" and spool["pending_spans"] == 0 and spool["replayed_spans"] > 0
    obs.shutdown()


@needs_postgres
def test_a_postgres_outage_at_5000_spans_per_s_loses_nothing(tmp_path: Path) -> None:
    schema = f"t_chaos_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    direct = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    target = sa.engine.make_url(POSTGRES_URL)
    # Open connections die and new ones hang: each connect waits out the connect timeout.
    proxy = HangingProxy((target.host or "127.0.0.1", target.port or 5432))
    via = direct.replace(f"127.0.0.1:{target.port}", f"127.0.0.1:{proxy.port}")
    try:
        obs = LLMObs(via, prometheus_registry=None, spool_dir=tmp_path / "spool", database_timeout_s=3.0)
        producer = Producer(obs.recorder, RATE).start()
        time.sleep(1.0)
        proxy.down()
        time.sleep(OUTAGE_S)
        during = obs.stats()["spool"]
        proxy.up()
        time.sleep(1.0)
        producer.stop()
        assert producer.offered_rate >= 5_000
        _assert_everything_stored(obs, direct, producer)
        assert during["state"] == "down" and during["pending_spans"] > 0.5 * RATE * (OUTAGE_S - 2)
        assert during["write_failures"] <= 12, during
        obs.shutdown()
    finally:
        proxy.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        admin.dispose()


# -- overflow spills to disk before it drops ----------------------------------------------------


def test_a_slow_store_spills_to_the_spool_instead_of_dropping(tmp_path: Path) -> None:
    """Every statement takes 30 ms (a slow disk): the writer falls behind, the queue passes
    its high-water mark, and batches go to the spool instead of being dropped."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    obs = LLMObs(url, prometheus_registry=None, spool_dir=tmp_path / "spool", max_queue_size=6_000)

    slow_disk = [True]

    def slow(*_args) -> None:
        if slow_disk[0]:
            time.sleep(0.03)

    sa.event.listen(obs.sql.engine, "before_cursor_execute", slow)
    producer = Producer(obs.recorder, RATE).start()
    time.sleep(5.0)  # at ~3,400 spans/s stored, a 6,000-span queue overflows within ~2.5 s
    producer.stop()
    slow_disk[0] = False
    _assert_everything_stored(obs, url, producer)
    assert obs.stats()["spool"]["spilled_spans"] > 0
    obs.shutdown()


# -- finding 2: one bad value never takes its batch -----------------------------------------------

NUL = "nul\x00byte"
SURROGATE = "lone\ud800surrogate"


def test_nul_bytes_and_lone_surrogates_drop_nothing(db_url: str, tmp_path: Path) -> None:
    obs = LLMObs(db_url, prometheus_registry=None, spool_dir=tmp_path / "spool", max_batch_size=4096)
    rec = obs.recorder
    good, bad = [], []
    for i in range(100):  # batch-mates from unrelated traces
        run = uuid.uuid4()
        rec.start(run, None, SpanKind.CHAIN, "fine", "chaos", input=f"fine {i}")
        rec.end(run, output="fine")
        good.append(str(run))
    for text in (NUL, SURROGATE):
        root, retriever = uuid.uuid4(), uuid.uuid4()
        rec.start(root, None, SpanKind.CHAIN, "bad", "chaos", input=text, metadata={text: text, "k": [text]})
        rec.start(retriever, root, SpanKind.RETRIEVER, "search", "chaos", input=text)
        doc = RetrievedDocument(rank=0, document_id=text, content=text, score=0.5, metadata={text: text})
        rec.end(retriever, output=None, documents=[doc])
        rec.end(root, output=text)
        bad += [str(root), str(retriever)]
    assert obs.flush(timeout=30)
    for trace_id in bad[::2]:
        obs.feedback(trace_id, score=0.0, comment=f"{NUL} {SURROGATE}", name=SURROGATE)
    assert obs.flush(timeout=30)
    stats = obs.stats()
    assert stats["spans_dropped"] == {} and stats["handler_errors"] == {}
    assert stats["values_sanitized"]["nul_byte"] > 0 and stats["values_sanitized"]["lone_surrogate"] > 0

    rows = {r["span_id"]: r for r in fetch(db_url, "spans")}
    assert set(rows) == set(good) | set(bad)
    fixed = {NUL: "nul\ufffdbyte", SURROGATE: "lone\ufffdsurrogate"}
    for root, text in zip(bad[::2], (NUL, SURROGATE), strict=True):
        row = rows[root]
        assert row["input"] == fixed[text] and row["output"] == fixed[text]
        attributes = row["attributes"]
        attributes = attributes if isinstance(attributes, dict) else json.loads(attributes)
        assert attributes[fixed[text]] == fixed[text] and attributes["k"] == [fixed[text]]
    docs = fetch(db_url, "retrieved_documents")
    assert sorted(d["content"] for d in docs) == sorted(fixed.values())
    scores = fetch(db_url, "scores")
    assert len(scores) == 2
    assert {s["comment"] for s in scores} == {"nul\ufffdbyte lone\ufffdsurrogate"}
    assert {s["name"] for s in scores} == {fixed[SURROGATE]}
    obs.shutdown()


def _poison_trigger(url: str) -> None:
    """The store rejects spans named 'poison' (a constraint the writer cannot know about)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                sa.text(
                    "CREATE TRIGGER poison BEFORE INSERT ON spans WHEN NEW.name = 'poison' "
                    "BEGIN SELECT RAISE(ABORT, 'poison row'); END"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN IF NEW.name = 'poison' THEN "
                    "RAISE EXCEPTION 'poison row'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                sa.text("CREATE TRIGGER poison BEFORE INSERT ON spans FOR EACH ROW EXECUTE FUNCTION poison()")
            )
    engine.dispose()


def test_a_rejected_row_is_isolated_and_its_batch_mates_stored(db_url: str, tmp_path: Path) -> None:
    obs = LLMObs(db_url, prometheus_registry=None, spool_dir=tmp_path / "spool", max_batch_size=4096)
    _poison_trigger(db_url)
    rec, ids = obs.recorder, []
    for i in range(300):
        run = uuid.uuid4()
        rec.start(run, None, SpanKind.CHAIN, "poison" if i in (7, 211) else "fine", "chaos", input=str(i))
        rec.end(run, output="ok")
        ids.append(str(run))
    assert obs.flush(timeout=30)
    assert span_counts(db_url) == (298, 298)
    assert stored_ids(db_url) == set(ids) - {ids[7], ids[211]}
    assert obs.stats()["spans_dropped"] == {"store_rejected": 2}
    obs.shutdown()


# -- finding 4: orphans are evicted in slices that never overflow the queue ------------------------


def test_20000_orphans_are_evicted_without_a_drop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    obs = LLMObs(
        url, prometheus_registry=None, spool_dir=tmp_path / "spool", open_span_ttl_s=1.0, max_queue_size=5_000
    )
    handler = obs.langchain_handler()
    orphans = [uuid.uuid4() for _ in range(20_000)]
    for run_id in orphans:  # the real handler: chains that start and never end
        handler.on_chain_start({"name": "never-ends"}, {"q": 1}, run_id=run_id, name="never-ends")
    producer = Producer(obs.recorder, 3_000).start()  # the app keeps tracing beside them
    assert wait_for(lambda: obs.stats()["events"].get("evicted_open_spans", 0) == 20_000, timeout=40)
    producer.stop()
    assert obs.flush(timeout=60)
    assert obs.stats()["spans_dropped"] == {}
    assert obs.stats()["open_spans"] == 0
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        query = "select status || '/' || error_type, count(*) from spans where name = 'never-ends' group by 1"
        evicted = dict(conn.execute(sa.text(query)).all())
        app = conn.execute(sa.text("select count(*) from spans where name != 'never-ends'")).scalar()
    engine.dispose()
    assert evicted == {"error/SpanNotEnded": 20_000}
    assert app == len(producer.span_ids)
    obs.shutdown()


# -- finding 6: one prompt-version statement per batch --------------------------------------------


def test_thousands_of_prompt_versions_are_one_statement(db_url: str, tmp_path: Path) -> None:
    # One batch: the worker wakes only at flush() (a busy machine otherwise splits the 3,000).
    obs = LLMObs(
        db_url,
        prometheus_registry=None,
        spool_dir=tmp_path / "spool",
        max_batch_size=4096,
        flush_interval_s=3600,
    )
    statements: Counter[str] = Counter()

    def count(_conn, _cursor, statement: str, _params, _context, executemany: bool) -> None:
        if "prompt_versions" in statement and statement.lstrip().upper().startswith("INSERT"):
            statements["insert"] += 1

    sa.event.listen(obs.sql.engine, "before_cursor_execute", count)
    rec = obs.recorder
    for i in range(3_000):
        run = uuid.uuid4()
        meta = {"prompt_name": "support", "prompt_version": f"v{i}"}
        rec.start(run, None, SpanKind.LLM, "llm", "chaos", input="hi", metadata=meta, model="gpt-4o-mini")
        rec.end(run, output="ok")
    assert obs.flush(timeout=60)
    sa.event.remove(obs.sql.engine, "before_cursor_execute", count)
    assert statements["insert"] == 1
    versions = fetch(db_url, "prompt_versions")
    assert len(versions) == 3_000
    assert {v["prompt_version"] for v in versions} == {f"v{i}" for i in range(3_000)}
    obs.shutdown()


# -- kill -9 at full speed: only the last flush interval and the batch in flight are lost ----------

FLUSH_INTERVAL_S = 0.5
_CHILD = "import sys; from fixtures.chaos_child import main; main(*sys.argv[1:])"


def test_kill_9_at_full_speed_loses_only_the_last_flush_interval(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    spool = tmp_path / "spool"
    progress = tmp_path / "progress"
    tests_dir = Path(__file__).parent
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, str(spool), str(progress), str(FLUSH_INTERVAL_S)],
        cwd=tests_dir,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir.parent), str(tests_dir)])},
    )
    try:
        assert wait_for(lambda: progress.exists() and len(progress.read_bytes().splitlines()) > 150, 30)
        time.sleep(2.0)
        os.kill(child.pid, signal.SIGKILL)
        killed_at = time.time()
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    # Progress lines: "<traces finished> <epoch time>", every 20 traces.
    lines = progress.read_text().splitlines()
    marks = [tuple(map(float, line.split())) for line in lines if line.count(" ") == 1]
    # The next process replays what the killed one spooled.
    obs = LLMObs(url, prometheus_registry=None, spool_dir=spool)
    assert obs.flush(timeout=60)
    obs.shutdown()
    from fixtures.chaos_child import trace_ids

    finished = int(marks[-1][0])
    stored = {r for r in stored_ids(url)}
    lost = [i for i, trace in enumerate(trace_ids(finished)) if trace not in stored]
    assert finished > 1_000
    if lost:
        # A lost trace i ended after the last mark before it: its age at the kill is at most this.
        before = {int(n): t for n, t in marks}
        ages = [killed_at - max((t for n, t in before.items() if n <= i), default=0.0) for i in lost]
        oldest = max(ages)
    else:
        oldest = 0.0
    print(f"kill -9: {finished} traces finished, {len(lost)} lost, oldest lost {oldest:.3f} s")
    # Lost: what ended in the last flush interval, plus the batch being written (~0.1 s).
    assert oldest <= FLUSH_INTERVAL_S + 0.5, (len(lost), oldest)


# -- a full disk: the spool drops what it cannot write, counted as disk_full ----------------------


def test_a_full_disk_under_the_spool_is_counted_as_disk_full(tmp_path: Path, monkeypatch) -> None:
    """The spool's segment sits on a device with no space left (``/dev/full``: every write
    fails with ENOSPC): the batches are dropped and counted as ``disk_full``, nothing torn is
    left behind, and the store takes what comes after the lock."""
    from llmobs_callbacks.sinks import durable

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    obs = LLMObs(url, prometheus_registry=None, spool_dir=tmp_path / "spool", max_batch_size=100)

    def full_segment(self):
        fd = os.open("/dev/full", os.O_WRONLY)
        return durable._Segment(tmp_path / "spool" / "segment-full.jsonl", fd, own=True)

    monkeypatch.setattr(durable.Spool, "_create_segment", full_segment)
    lock = SQLiteLock(path)
    rec = obs.recorder
    for i in range(300):
        run = uuid.uuid4()
        rec.start(run, None, SpanKind.CHAIN, "during", "chaos", input=str(i))
        rec.end(run, output="ok")
    assert obs.flush(timeout=2.0)  # nothing could be spooled: nothing is pending either
    lock.release()
    assert obs.stats()["spans_dropped"] == {"disk_full": 300}
    assert obs.stats()["spool"]["pending_spans"] == 0 and obs.stats()["spool"]["spooled_spans"] == 0
    # The probe finds the store writable again: what comes next is stored.
    assert wait_for(lambda: obs.flush(0.2) and obs.stats()["spool"]["state"] == "up", timeout=10)
    for _ in range(10):
        run = uuid.uuid4()
        rec.start(run, None, SpanKind.CHAIN, "after", "chaos")
        rec.end(run, output="ok")
    assert obs.flush(timeout=10)
    assert span_counts(url) == (10, 10)
    obs.shutdown()
