"""No loss when the database is down: retry, then a local spool, replayed on recovery.

``DurableSQLExporter`` wraps the ``SQLExporter`` for the span pipeline. A batch that fails to
write with a transient error (connection refused or lost, SQLite "database is locked", disk
full, timeouts) is retried with backoff (``retry_delays_s``); if it still fails, the store is
marked unavailable and the batch's *rows* (what the store would get after the preparer ran:
priced, serialised, truncated and redacted) are appended to a spool file. While unavailable,
new batches go straight to the spool (no retry stalls the worker), and a replay is tried
every ``recovery_interval_s`` (doubling up to ``max_recovery_interval_s``) and whenever
``flush()`` waits. Inserts are ``ON CONFLICT DO NOTHING`` on primary keys and prompt versions
are merged by min/max, so a replayed batch never duplicates rows.

The spool is a directory of append-only JSON-lines segments, one per process, bounded by
``max_bytes`` per process (what does not fit is dropped and counted as
``spool_full``). A process holds an exclusive ``flock`` on its own segment, so a segment
whose lock can be taken belongs to a process that exited: the next process using the same
spool directory replays it (``flush()`` waits for that too) and deletes it. Writes are not
fsync'ed: a spool survives the process (exit, crash, SIGKILL), not a power cut.

Errors that are not transient (a row the database rejects) are not retried: the batch is
counted as dropped (``store_rejected``) so one bad batch cannot block the spool forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..diagnostics import Diagnostics
from ..model import SpanRecord
from . import metric_names as names
from .schema import ensure_schema
from .sql import SQLExporter
from .tables import TABLES

try:  # POSIX: segments are claimed with flock; elsewhere a process replays only its own
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

Rows = dict[str, list[dict[str, Any]]]

SPOOL_DIR_ENV = "LLMOBS_SPOOL_DIR"
_FORMAT = 1
# Datetime columns per table: JSON has no datetime, so the spool stores ISO text for these.
_DATETIME_COLUMNS = {
    t.name: [c.name for c in t.columns if isinstance(getattr(c.type, "impl", c.type), sa.DateTime)]
    for t in TABLES
}


def default_spool_dir(database_url: str) -> Path:
    """``$LLMOBS_SPOOL_DIR`` or ``~/.cache/llmobs-callbacks/spool``, then one subdirectory per
    database (a hash of its URL), so the next process writing there replays what is left."""
    root = os.environ.get(SPOOL_DIR_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(cache) / "llmobs-callbacks" / "spool"
    rendered = sa.engine.make_url(database_url).render_as_string(hide_password=True)
    return base / hashlib.sha256(rendered.encode()).hexdigest()[:16]


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the database may answer later (down, locked, full, timed out)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        sa.exc.OperationalError
        | sa.exc.InterfaceError
        | sa.exc.DisconnectionError
        | sa.exc.TimeoutError
        | OSError,
    )


def _describe(exc: BaseException) -> str:
    """The driver's message (first line), without SQLAlchemy's statement and parameters:
    they may hold captured content."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _encode(rows: Rows) -> bytes:
    def default(value: object) -> object:
        if isinstance(value, datetime):
            return value.isoformat()
        return repr(value)  # rows are prepared already; never fail the spool on an odd value

    count = len(rows.get("spans", ()))
    line = json.dumps({"v": _FORMAT, "n": count, "rows": rows}, default=default, separators=(",", ":"))
    return line.encode() + b"\n"


def _decode(line: bytes) -> tuple[int, Rows]:
    record = json.loads(line)
    rows: Rows = record["rows"]
    for table, table_rows in rows.items():
        for column in _DATETIME_COLUMNS.get(table, ()):
            for row in table_rows:
                value = row.get(column)
                if isinstance(value, str):
                    row[column] = datetime.fromisoformat(value)
    return int(record.get("n", len(rows.get("spans", ())))), rows


class _AssumeKnown(dict):  # type: ignore[type-arg]
    """Every key is present, with value None (the store cannot be asked right now)."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: object) -> None:
        return None


@dataclass
class _Segment:
    path: Path
    fd: int
    spans: int = 0  # spans in it not yet replayed
    lines: int = 0  # batches (of spans or of scores) not yet replayed
    size: int = 0  # bytes written (own segment) or read (claimed one)
    offset: int = 0  # bytes already replayed
    own: bool = False


class Spool:
    """Append-only JSON-lines segments in ``directory``; this process's one plus claimed orphans.

    Not thread-safe: ``DurableSQLExporter`` serialises access with its lock.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._own: _Segment | None = None
        self._claimed: list[_Segment] = []

    # -- writing ----------------------------------------------------------------------------

    def append(self, rows: Rows) -> bool:
        """Append one batch; False when it does not fit under ``max_bytes``."""
        line = _encode(rows)
        own = self._own
        if own is None:
            if len(line) > self.max_bytes:
                return False
            own = self._own = self._create_segment()
        elif own.size + len(line) > self.max_bytes:
            return False
        os.write(own.fd, line)  # O_APPEND: one write per line
        own.size += len(line)
        own.spans += len(rows.get("spans", ()))
        own.lines += 1
        return True

    def _create_segment(self) -> _Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"segment-{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
        # Locked under a temporary name, then renamed: no other process can claim it between
        # creation and lock.
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_APPEND, 0o600)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = self.directory / name
        os.replace(tmp, path)
        return _Segment(path, fd, own=True)

    # -- replaying --------------------------------------------------------------------------

    def claim_orphans(self) -> int:
        """Lock the segments of processes that are gone; returns the spans found in them."""
        if fcntl is None or not self.directory.is_dir():
            return 0
        known = {s.path for s in self._claimed}
        if self._own is not None:
            known.add(self._own.path)
        found = 0
        for path in sorted(self.directory.glob("segment-*.jsonl")):
            if path in known:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # replayed and deleted by another process meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # its process is alive (or another one is replaying it)
                continue
            if not path.exists():  # deleted between open and lock
                os.close(fd)
                continue
            segment = _Segment(path, fd, size=os.fstat(fd).st_size)
            for spans in self._span_counts(segment):
                segment.spans += spans
                segment.lines += 1
            self._claimed.append(segment)
            found += segment.spans
        return found

    def segments(self) -> list[_Segment]:
        """Segments with something left to replay, oldest claim first, own last."""
        pending = [s for s in self._claimed]
        if self._own is not None:
            pending.append(self._own)
        return pending

    def _span_counts(self, segment: _Segment) -> Iterator[int]:
        """The span count of every complete line after the replayed offset."""
        with os.fdopen(os.dup(segment.fd), "rb") as f:
            f.seek(segment.offset)
            for line in f:
                if not line.endswith(b"\n"):
                    return  # a line cut short by a crash: not replayable
                try:
                    yield int(json.loads(line).get("n", 0))
                except (ValueError, AttributeError):
                    yield 0  # corrupt: skipped and counted when replayed

    def replay(self, segment: _Segment, write: Any) -> Iterator[tuple[int, Rows]]:
        """Write each pending batch of ``segment`` with ``write(rows)``; yields (spans, rows) of
        each once it is stored. Stops (raising) at the first failure, keeping its place."""
        with os.fdopen(os.dup(segment.fd), "rb") as f:
            f.seek(segment.offset)
            while True:
                line = f.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):
                    break
                try:
                    spans, rows = _decode(line)
                except (ValueError, KeyError, TypeError, AttributeError):
                    segment.offset += len(line)  # corrupt line: skipped (counted by the caller)
                    segment.lines -= 1
                    yield -1, {}
                    continue
                write(rows)
                segment.offset += len(line)
                segment.spans -= spans
                segment.lines -= 1
                yield spans, rows
        self._finish(segment)

    def _finish(self, segment: _Segment) -> None:
        """Everything replayed: delete the segment (the next spool starts a new one)."""
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        os.close(segment.fd)  # releases the lock after the unlink: nobody claims it again
        if segment is self._own:
            self._own = None
        else:
            self._claimed.remove(segment)

    # -- state ------------------------------------------------------------------------------

    def pending_spans(self) -> int:
        return sum(max(0, s.spans) for s in self.segments())

    def pending_batches(self) -> int:
        """Batches (of spans or scores) not stored yet: 0 means the spool is empty."""
        return sum(max(0, s.lines) for s in self.segments())

    def pending_bytes(self) -> int:
        return sum(s.size - s.offset for s in self.segments())

    def forget(self) -> None:
        """In a forked child: the parent's segments stay the parent's."""
        for segment in self.segments():
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self._own = None
        self._claimed = []


class DurableSQLExporter:
    """A ``SpanExporter`` around ``SQLExporter`` that retries, spools and replays (see module)."""

    def __init__(
        self,
        sql: SQLExporter,
        diagnostics: Diagnostics,
        *,
        spool_dir: Path | str | None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        retry_delays_s: Sequence[float] = (0.05, 0.25, 1.0),
        recovery_interval_s: float = 0.5,
        max_recovery_interval_s: float = 5.0,
        schema_ready: bool = True,
    ) -> None:
        self.sql = sql
        self._diag = diagnostics
        self.spool: Spool | None = Spool(Path(spool_dir), spool_max_bytes) if spool_dir is not None else None
        self._retry_delays = tuple(retry_delays_s)
        self._min_interval = recovery_interval_s
        self._max_interval = max(recovery_interval_s, max_recovery_interval_s)
        self._interval = recovery_interval_s
        self._schema_ready = schema_ready
        self._available = True
        self._next_attempt = 0.0  # monotonic time of the next replay attempt
        self._orphans_checked = False
        self._orphans_due = 0.0
        self._lock = threading.Lock()
        self._attempted = threading.Event()  # set after each maintain() pass
        self._replay_requested = False
        # Set by LLMObs to the processor's wake-up: returns False when no worker runs.
        self.wake: Callable[[], bool] | None = None
        self.counters = {
            "spooled_spans": 0,
            "replayed_spans": 0,
            "spooled_scores": 0,
            "replayed_scores": 0,
            "write_failures": 0,
            "outages": 0,
        }
        self.last_error: str | None = None
        self._metrics: SpoolMetrics | None = None
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: (d := ref()) and d._after_fork())

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._attempted = threading.Event()
        if self.spool is not None:
            self.spool.forget()
        self._orphans_checked = False

    # -- SpanExporter (processor thread) ------------------------------------------------------

    def export(self, spans: Sequence[SpanRecord]) -> None:
        rows = self.sql.batch_rows(spans)
        with self._lock:
            if self._available:
                if self._write_with_retries(rows, len(spans)):
                    return
            elif (
                # No spool to replay from: the next batch itself probes the database.
                self.spool is None
                and time.monotonic() >= self._next_attempt
                and self._write_with_retries(rows, len(spans), delays=())
            ):
                self._available = True
                return
            self._spool(rows, len(spans))
        self.maintain()

    # -- scores (ScoreWriter's thread: judge, feedback, rules) ---------------------------------

    def insert_scores(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store ``scores`` rows like spans: retried, then spooled while the database is down."""
        if not rows:
            return
        batch: Rows = {"scores": list(rows)}
        with self._lock:
            if self._available and self._write_with_retries(batch, len(rows), prefix="score_"):
                return
            self._spool(batch, len(rows), prefix="score_")

    def known_traces(self, trace_ids: Sequence[str]) -> dict[str, str | None]:
        """``SQLExporter.known_traces``; while the database is down every trace counts as
        known (with no prompt version): feedback is never flagged unknown for an outage."""
        if self._available:
            try:
                return self.sql.known_traces(trace_ids)
            except Exception as exc:
                if not is_transient(exc):
                    raise
        return _AssumeKnown()

    def shutdown(self) -> None:
        if self._metrics is not None:
            self._metrics.detach(self)
        self.sql.shutdown()

    def attach_metrics(self, registry: Any) -> None:
        """Expose the spool's counters on a Prometheus registry (``SpoolMetrics``)."""
        self._metrics = SpoolMetrics.for_registry(registry)
        self._metrics.attach(self)

    # -- recovery (processor housekeeping, flush) ---------------------------------------------

    def maintain(self, force: bool = False) -> None:
        """Replay the spool when the next attempt is due (or ``force``); never raises."""
        if self.spool is None:
            return
        with self._lock:
            now = time.monotonic()
            if not self._orphans_checked or now >= self._orphans_due:
                # At start, then every minute: segments of processes that exited meanwhile.
                self._orphans_due = now + 60.0
                try:
                    found = self.spool.claim_orphans()
                except OSError as exc:
                    self._diag.handler_error("spool_claim", exc)
                    found = 0
                # Only now: wait_stored's lock-free shortcut must not answer "nothing spooled"
                # while the claim is still counting an earlier process's spans.
                self._orphans_checked = True
                if found:
                    logger.info("llmobs: replaying %d span(s) spooled by an earlier process", found)
            force = force or self._replay_requested
            self._replay_requested = False
            try:
                if not self.spool.segments():
                    return
                if not force and time.monotonic() < self._next_attempt:
                    return
                self._replay_locked()
            finally:
                self._attempted.set()

    def wait_stored(self, timeout: float | None) -> bool:
        """Block until nothing is spooled (True) or the timeout (False), replaying meanwhile.

        With a worker thread (``wake`` set), the worker replays and this only waits, so the
        timeout holds even when one database attempt takes longer; without one (synchronous
        mode), the caller's thread replays.
        """
        if self.spool is None or (self._orphans_checked and self._pending_unlocked() == 0):
            return True  # the common case: nothing spooled, no worker round trip
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            self._attempted.clear()
            self._replay_requested = True
            if self.wake is not None and self.wake():
                self._attempted.wait(self._max_interval if left is None else max(0.0, left))
            else:
                self.maintain(force=True)
            if self._pending_unlocked() == 0:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # Space forced attempts while the database is down (no reconnect storm).
            time.sleep(self._min_interval if left is None else min(self._min_interval, left))

    def _pending_unlocked(self) -> int:
        # Read without the lock (a sum of ints): waiting must not queue behind a long write.
        spool = self.spool
        return spool.pending_batches() if spool is not None else 0

    def pending_spans(self) -> int:
        with self._lock:
            return self.spool.pending_spans() if self.spool is not None else 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pending = self.spool.pending_spans() if self.spool is not None else 0
            size = self.spool.pending_bytes() if self.spool is not None else 0
            return {
                "store_available": self._available,
                "pending_spans": pending,
                "pending_bytes": size,
                "directory": None if self.spool is None else str(self.spool.directory),
                **self.counters,
                "last_error": self.last_error,
            }

    # -- internals (lock held) ----------------------------------------------------------------

    def _write(self, rows: Rows) -> None:
        if not self._schema_ready:
            ensure_schema(self.sql.engine)
            self._schema_ready = True
        self.sql.write_rows(rows)

    def _write_with_retries(
        self, rows: Rows, count: int, delays: Sequence[float] | None = None, prefix: str = ""
    ) -> bool:
        for delay in (0.0, *(self._retry_delays if delays is None else delays)):
            if delay:
                time.sleep(delay)  # the processor thread only; the caller's chain never waits here
            try:
                self._write(rows)
                return True
            except Exception as exc:  # noqa: BLE001 - classified below, never raised
                self.counters["write_failures"] += 1
                self.last_error = _describe(exc)
                if not is_transient(exc):
                    self._diag.handler_error(f"{prefix}store_rejected", exc)
                    self._diag.dropped(f"{prefix}store_rejected", count)
                    return True  # handled: retrying cannot help
                # Transient: not an internal error; logged once per outage (_mark_unavailable)
                # and visible in stats()["spool"] / the llmobs_spool_* metrics.
        self._mark_unavailable()
        return False

    def _mark_unavailable(self) -> None:
        if self._available:
            self._available = False
            self.counters["outages"] += 1
            logger.warning(
                "llmobs: the database is unavailable (%s); spooling spans to %s until it answers",
                self.last_error,
                None if self.spool is None else self.spool.directory,
            )
        self._interval = self._min_interval
        self._next_attempt = time.monotonic() + self._interval

    def _spool(self, rows: Rows, count: int, prefix: str = "") -> None:
        """Append a batch (``count`` spans, or scores with ``prefix="score_"``) to the spool."""
        if self.spool is None:
            self._diag.dropped(f"{prefix}store_unavailable", count)
            return
        try:
            stored = self.spool.append(rows)
        except OSError as exc:
            self._diag.handler_error("spool_write", exc)
            self._diag.dropped(f"{prefix}spool_write_failed", count)
            return
        if stored:
            self.counters["spooled_scores" if prefix else "spooled_spans"] += count
        else:
            self._diag.dropped(f"{prefix}spool_full", count)

    def _replay_locked(self) -> None:
        assert self.spool is not None
        try:
            for segment in self.spool.segments():
                for spans, rows in self.spool.replay(segment, self._write):
                    if spans < 0:
                        self._diag.handler_error("spool_corrupt_line")
                    else:
                        self.counters["replayed_spans"] += spans
                        self.counters["replayed_scores"] += len(rows.get("scores", ()))
        except Exception as exc:  # noqa: BLE001
            self.counters["write_failures"] += 1
            self.last_error = _describe(exc)
            if is_transient(exc):
                self._available = False
                self._next_attempt = time.monotonic() + self._interval
                self._interval = min(self._interval * 2, self._max_interval)
                return
            # Rejected rows: skip that batch so it cannot block every later one.
            self._diag.handler_error("store_rejected", exc)
            self._skip_current_line()
            return
        if not self._available:
            logger.warning("llmobs: the database answers again; the spool is replayed")
        self._available = True
        self._interval = self._min_interval

    def _skip_current_line(self) -> None:
        assert self.spool is not None
        for segment in self.spool.segments():
            with os.fdopen(os.dup(segment.fd), "rb") as f:
                f.seek(segment.offset)
                line = f.readline()
            if line.endswith(b"\n"):
                spans, rows = _decode(line)
                segment.offset += len(line)
                segment.spans -= spans
                segment.lines -= 1
                if spans:
                    self._diag.dropped("store_rejected", spans)
                if rows.get("scores"):
                    self._diag.dropped("score_store_rejected", len(rows["scores"]))
            return


# -- Prometheus ----------------------------------------------------------------------------------

_COLLECTOR_ATTR = "_llmobs_spool_collector"
_COLLECTOR_LOCK = threading.Lock()


class SpoolMetrics:
    """``llmobs_spool_*`` / ``llmobs_store_*`` for the durable writers using one registry.

    A collector (computed at scrape time, nothing on the hot path): counters keep what writers
    already shut down had counted, so they never go backwards.
    """

    def __init__(self) -> None:
        self._live: weakref.WeakSet[DurableSQLExporter] = weakref.WeakSet()
        self._retired: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_registry(cls, registry: Any) -> SpoolMetrics:
        with _COLLECTOR_LOCK:
            metrics = getattr(registry, _COLLECTOR_ATTR, None)
            if metrics is None:
                metrics = cls()
                registry.register(metrics)
                setattr(registry, _COLLECTOR_ATTR, metrics)
            return metrics

    def attach(self, exporter: DurableSQLExporter) -> None:
        with self._lock:
            self._live.add(exporter)

    def detach(self, exporter: DurableSQLExporter) -> None:
        with self._lock:
            if exporter in self._live:
                self._live.discard(exporter)
                for key, value in exporter.counters.items():
                    self._retired[key] = self._retired.get(key, 0) + value

    def describe(self) -> list[Any]:
        return []  # collected on demand; nothing to check for name clashes up front

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            live = list(self._live)
            totals = dict(self._retired)
        pending, down = 0, 0
        for exporter in live:
            for key, value in exporter.counters.items():
                totals[key] = totals.get(key, 0) + value
            spool = exporter.spool
            # Read without the writer's lock: a scrape must not wait for a long replay.
            pending += spool.pending_spans() if spool is not None else 0
            down += 0 if exporter._available else 1
        for name, key, doc in (
            (
                names.SPOOL_SPANS_WRITTEN,
                "spooled_spans",
                "Spans written to the local spool (database down).",
            ),
            (
                names.SPOOL_SPANS_REPLAYED,
                "replayed_spans",
                "Spooled spans stored after the database came back.",
            ),
            (
                names.STORE_WRITE_FAILURES,
                "write_failures",
                "Failed attempts to write a batch to the database.",
            ),
            (names.STORE_OUTAGES, "outages", "Times the database became unavailable to the writer."),
        ):
            yield CounterMetricFamily(name, doc, value=totals.get(key, 0))
        yield GaugeMetricFamily(
            names.SPOOL_PENDING_SPANS, "Spans in the spool, not yet stored.", value=pending
        )
        yield GaugeMetricFamily(
            names.STORE_AVAILABLE,
            "1 when every writer of this process can reach its database.",
            value=int(not down),
        )
