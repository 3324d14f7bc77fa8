"""Reliability under chaos: spans/s held through a SQLite lock and a PostgreSQL outage, and the
spool's write and replay rates.

    python benchmarks/chaos.py [--rates 3000,6000] [--lock-s 15] [--outage-s 10] [--postgres URL]
                               [--spool-spans 100000] [--sections lock,outage,spool]

- ``lock``: spans offered at each rate (traces of three spans through the real recorder, paced
  in 10 ms bursts) by an app thread; after 2 s another connection holds ``BEGIN IMMEDIATE`` for
  ``--lock-s``; 2 s after its release the app stops and ``flush`` waits until everything is
  stored. Reports the rate held, spans stored / dropped / spooled, the peak queue, and how long
  the replay took after the release.
- ``outage``: the same through a TCP proxy to PostgreSQL whose connections die and whose new
  connections hang (an unresponsive host) for ``--outage-s``.
- ``spool``: prepared rows of 512-span batches appended to a spool (spans/s, MB/s), then
  replayed into SQLite and PostgreSQL (spans/s).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's package, the test fixtures

import sqlalchemy as sa  # noqa: E402
from fixtures.chaos import HangingProxy, Producer, SQLiteLock, span_counts  # noqa: E402

from llmobs_callbacks import LLMObs  # noqa: E402
from llmobs_callbacks.diagnostics import Diagnostics  # noqa: E402
from llmobs_callbacks.sinks.durable import DurableSQLExporter, Spool  # noqa: E402
from llmobs_callbacks.sinks.sql import SQLExporter  # noqa: E402

DEFAULT_PG = os.environ.get("LLMOBS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class QueueWatch:
    """Samples the processor's queue length every 10 ms: its peak."""

    def __init__(self, obs: LLMObs) -> None:
        self.peak = 0
        self._obs = obs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, len(self._obs.processor._queue))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _run_chaos(obs: LLMObs, url: str, rate: float, fault_s: float, start_fault, end_fault) -> dict:
    watch = QueueWatch(obs)
    producer = Producer(obs.recorder, rate).start()
    time.sleep(2.0)
    start_fault()
    time.sleep(fault_s)
    during = obs.stats()["spool"]
    end_fault()
    released = time.monotonic()
    # Replay while the app keeps tracing: when is the spool empty again?
    replayed_at = None
    while time.monotonic() - released < 2.0 or replayed_at is None:
        if replayed_at is None and obs.stats()["spool"]["pending_spans"] == 0:
            replayed_at = time.monotonic()
        if time.monotonic() - released > 120:
            break
        time.sleep(0.05)
    producer.stop()
    flushed = obs.flush(timeout=120)
    peak = watch.stop()
    rows, distinct = span_counts(url)
    stats = obs.stats()
    return {
        "rate_offered": round(producer.offered_rate),
        "spans": len(producer.span_ids),
        "stored": rows,
        "distinct": distinct,
        "dropped": stats["spans_dropped"],
        "spooled_during_fault": during["pending_spans"],
        "spool_mb_during_fault": round(during["pending_bytes"] / 1e6, 1),
        "write_failures_during_fault": during["write_failures"],
        "peak_queue": peak,
        "replay_s_after_fault": None if replayed_at is None else round(replayed_at - released, 2),
        "flushed": flushed,
    }


def bench_lock(rates: list[float], lock_s: float) -> None:
    for rate in rates:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "store.db"
            url = f"sqlite:///{path}"
            obs = LLMObs(url, prometheus_registry=None, spool_dir=Path(tmp) / "spool")
            holder: list[SQLiteLock] = []
            result = _run_chaos(
                obs,
                url,
                rate,
                lock_s,
                lambda: holder.append(SQLiteLock(path)),  # noqa: B023
                lambda: holder.pop().release(),  # noqa: B023
            )
            obs.shutdown()
        print(f"sqlite lock {lock_s:.0f}s at {rate:.0f} spans/s offered: {result}", flush=True)


def bench_outage(rates: list[float], outage_s: float, pg_url: str) -> None:
    target = sa.engine.make_url(pg_url)
    admin = sa.create_engine(pg_url)
    for rate in rates:
        schema = f"bench_chaos_{uuid.uuid4().hex[:8]}"
        with admin.begin() as conn:
            conn.execute(sa.text(f'create schema "{schema}"'))
        direct = f"{pg_url}?options=-csearch_path%3D{schema}"
        proxy = HangingProxy((target.host or "127.0.0.1", target.port or 5432))
        via = direct.replace(f"{target.host}:{target.port}", f"127.0.0.1:{proxy.port}")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                obs = LLMObs(
                    via, prometheus_registry=None, spool_dir=Path(tmp) / "spool", database_timeout_s=3.0
                )
                result = _run_chaos(obs, direct, rate, outage_s, proxy.down, proxy.up)
                obs.shutdown()
        finally:
            proxy.close()
            with admin.begin() as conn:
                conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        print(f"postgres outage {outage_s:.0f}s at {rate:.0f} spans/s offered: {result}", flush=True)
    admin.dispose()


def _prepared_batches(n_spans: int) -> tuple[list[dict], int]:
    """Rows of 512-span batches as the writer spools them (the Producer's traces, prepared)."""
    spans: list = []

    class Capture:
        def export(self, batch) -> None:
            spans.extend(batch)

        def shutdown(self) -> None:
            pass

    with tempfile.TemporaryDirectory() as tmp:
        obs = LLMObs(
            f"sqlite:///{tmp}/s.db", prometheus_registry=None, spool_dir=False, exporters=[Capture()]
        )
        producer = Producer(obs.recorder, 30_000).start()
        while len(producer.span_ids) < n_spans:
            time.sleep(0.05)
        producer.stop()
        obs.flush(120)
        batches = [obs.sql.batch_rows(spans[i : i + 512]) for i in range(0, len(spans), 512)]
        obs.shutdown()
    return batches, len(spans)


def bench_spool(n_spans: int, pg_url: str | None) -> None:
    batches, total = _prepared_batches(n_spans)
    for name, url in (("sqlite", None), ("postgresql", pg_url)):
        if name == "postgresql" and not url:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            schema = None
            if url is None:
                url = f"sqlite:///{tmp}/replay.db"
            else:
                schema = f"bench_spool_{uuid.uuid4().hex[:8]}"
                admin = sa.create_engine(pg_url)
                with admin.begin() as conn:
                    conn.execute(sa.text(f'create schema "{schema}"'))
                url = f"{pg_url}?options=-csearch_path%3D{schema}"
            sql = SQLExporter(url)
            durable = DurableSQLExporter(
                sql, Diagnostics(), spool_dir=Path(tmp) / "spool", replay_slice_s=3600
            )
            spool: Spool = durable.spool
            start = time.perf_counter()
            for rows in batches:
                spool.append(rows, len(rows["spans"]))
            write_s = time.perf_counter() - start
            size = spool.pending_bytes()
            durable.state = "degraded"
            start = time.perf_counter()
            while spool.pending_batches():
                durable.maintain(force=True)
            replay_s = time.perf_counter() - start
            stored = span_counts(url)[0]
            sql.shutdown()
            if schema:
                with admin.begin() as conn:
                    conn.execute(sa.text(f'drop schema "{schema}" cascade'))
                admin.dispose()
        print(
            f"spool ({name} replay): {total} spans, {size / 1e6:.1f} MB; "
            f"write {total / write_s:,.0f} spans/s "
            f"({size / 1e6 / write_s:.0f} MB/s); replay {total / replay_s:,.0f} spans/s; stored {stored}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="3000,6000")
    parser.add_argument("--lock-s", type=float, default=15.0)
    parser.add_argument("--outage-s", type=float, default=10.0)
    parser.add_argument("--postgres", default=DEFAULT_PG, help="'' skips PostgreSQL")
    parser.add_argument("--spool-spans", type=int, default=100_000)
    parser.add_argument("--sections", default="lock,outage,spool")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    sections = set(args.sections.split(","))
    print(f"load average at start: {os.getloadavg()}", flush=True)
    if "lock" in sections:
        bench_lock(rates, args.lock_s)
    if "outage" in sections and args.postgres:
        bench_outage(rates, args.outage_s, args.postgres)
    if "spool" in sections:
        bench_spool(args.spool_spans, args.postgres or None)
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
