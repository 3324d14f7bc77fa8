"""No loss when the database is down, locked, slow or behind: bounded writes, a spool, replay.

``DurableSQLExporter`` wraps the ``SQLExporter`` for the span pipeline. The writer never waits
on the store: each write is bounded (``write_timeout_s``: SQLite's busy timeout, PostgreSQL's
``lock_timeout``, ``statement_timeout`` 4× it, at least 1 s), and a batch whose write fails
with a transient error (connection refused or lost, "database is locked", disk full, timeouts)
goes to the spool at once: the *rows* the store would get (priced, serialised, truncated,
redacted, made storable). A circuit breaker then keeps the worker off the store:

- ``up``: batches are written; a transient failure opens the breaker (``down``).
- ``down``: batches go straight to the spool. A probe thread (never the worker: a connect to a
  host that does not answer waits out the connect timeout) tries the store after 0.5 s,
  doubling up to ``max_recovery_interval_s``, and whenever ``flush()`` waits; once it gets
  through, the breaker closes (``degraded``, or ``up`` with nothing spooled).
- ``degraded``: the store answers and the spool is replayed oldest first, in slices of at most
  ``replay_slice_s`` between batches; new batches are written directly.

Past the high-water mark of the processor's queue (``HIGH_WATER``), batches spill to the spool
without trying the store (the writer is behind: the queue must not overflow), and the spool is
replayed only while the queue is under ``LOW_WATER``. Inserts are ``ON CONFLICT DO NOTHING``
on primary keys and prompt versions are merged by min/max, so a replayed batch never
duplicates rows.

Rows are made storable first (``storable``: NUL bytes, lone surrogates → U+FFFD, counted). A
batch the store still rejects permanently is bisected until the rejected rows are found: only
they are dropped (``store_rejected``, logged once with the reason), the rest are stored.

The spool is a directory of append-only JSON-lines segments, rotated so replayed bytes are
freed; at most ``max_bytes`` not yet replayed per process (beyond it ``spool_full`` drops; a
full disk, ``disk_full``). A process holds an exclusive ``flock`` on its own segments, so a
segment whose lock can be taken belongs to a process that exited: the next process using the
same spool directory replays it (``flush()`` waits for that too) and deletes it. Writes are not
fsync'ed: a spool survives the process (exit, crash, SIGKILL), not a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..diagnostics import Diagnostics
from ..model import SpanRecord
from ..processor import HIGH_WATER, LOW_WATER
from . import metric_names as names
from .schema import ensure_schema
from .sql import SQLExporter
from .storable import REASONS, clean_rows
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


def _encode(rows: Rows, count: int, spooled_at: float) -> bytes:
    def default(value: object) -> object:
        if isinstance(value, datetime):
            return value.isoformat()
        return repr(value)  # rows are prepared already; never fail the spool on an odd value

    record = {"v": _FORMAT, "n": count, "t": round(spooled_at, 3), "rows": rows}
    return json.dumps(record, default=default, separators=(",", ":")).encode() + b"\n"


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
    # When each pending batch was spooled (epoch seconds), oldest first: the age of the oldest.
    times: deque[float] = field(default_factory=deque)


class Spool:
    """Append-only JSON-lines segments in ``directory``: claimed orphans, then this process's own
    (rotated every ``segment_bytes``, so replayed bytes are freed while spooling goes on).

    ``max_bytes`` bounds the bytes not yet replayed. Not thread-safe: ``DurableSQLExporter``
    serialises access with its lock.
    """

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int | None = None) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(64 * 1024, min(32 * 1024 * 1024, max_bytes // 8))
        self._own: _Segment | None = None
        self._sealed: list[_Segment] = []  # own segments full to segment_bytes, oldest first
        self._claimed: list[_Segment] = []

    # -- writing ----------------------------------------------------------------------------

    def append(self, rows: Rows, count: int) -> bool:
        """Append one batch; False when it does not fit under ``max_bytes``. Raises OSError
        (``ENOSPC`` on a full disk) with nothing half-written left behind."""
        now = time.time()
        line = _encode(rows, count, now)
        if self.pending_bytes() + len(line) > self.max_bytes:
            return False
        own = self._own
        if own is not None and own.size >= self.segment_bytes:
            self._sealed.append(own)
            own = self._own = None
        if own is None:
            own = self._own = self._create_segment()
        try:
            written = os.write(own.fd, line)  # O_APPEND: one write per line
            if written != len(line):  # short write: the disk filled up mid-line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(own.fd, own.size)  # no torn line for the replay to stop at
            raise
        own.size += len(line)
        own.spans += count
        own.lines += 1
        own.times.append(now)
        return True

    def _create_segment(self) -> _Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"segment-{os.getpid()}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
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
        known = {s.path for s in self.segments()}
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
            stat = os.fstat(fd)
            segment = _Segment(path, fd, size=stat.st_size)
            for spans, spooled_at in self._line_heads(segment):
                segment.spans += spans
                segment.lines += 1
                segment.times.append(spooled_at or stat.st_mtime)
            self._claimed.append(segment)
            found += segment.spans
        return found

    def segments(self) -> list[_Segment]:
        """Segments with something left to replay: claimed orphans, then own (oldest first)."""
        pending = [*self._claimed, *self._sealed]
        if self._own is not None:
            pending.append(self._own)
        return pending

    def _line_heads(self, segment: _Segment) -> Iterator[tuple[int, float | None]]:
        """(span count, spool time) of every complete line after the replayed offset."""
        with os.fdopen(os.dup(segment.fd), "rb") as f:
            f.seek(segment.offset)
            for line in f:
                if not line.endswith(b"\n"):
                    return  # a line cut short by a crash: not replayable
                try:
                    record = json.loads(line)
                    yield int(record.get("n", 0)), record.get("t")
                except (ValueError, AttributeError, TypeError):
                    yield 0, None  # corrupt: skipped and counted when replayed

    def replay(self, segment: _Segment, write: Any) -> Iterator[tuple[int, Rows]]:
        """Write each pending batch of ``segment`` with ``write(rows)``; yields (spans, rows) of
        each once it is stored. Stops (raising) at the first failure, keeping its place; the
        caller may stop early (closing the generator) and resume later from the same place."""
        with os.fdopen(os.dup(segment.fd), "rb") as f:
            f.seek(segment.offset)
            while True:
                line = f.readline()
                if not line or not line.endswith(b"\n"):
                    break
                try:
                    spans, rows = _decode(line)
                except (ValueError, KeyError, TypeError, AttributeError):
                    self._consumed(segment, len(line), 0)  # corrupt line: skipped (counted by the caller)
                    yield -1, {}
                    continue
                write(rows)
                self._consumed(segment, len(line), spans)
                yield spans, rows
        self._finish(segment)

    @staticmethod
    def _consumed(segment: _Segment, size: int, spans: int) -> None:
        segment.offset += size
        segment.spans -= spans
        segment.lines -= 1
        if segment.times:
            segment.times.popleft()

    def _finish(self, segment: _Segment) -> None:
        """Everything replayed: delete the segment (the next spool starts a new one)."""
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        os.close(segment.fd)  # releases the lock after the unlink: nobody claims it again
        if segment is self._own:
            self._own = None
        elif segment in self._sealed:
            self._sealed.remove(segment)
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

    def oldest_age_s(self) -> float:
        """Seconds since the oldest batch still spooled was spooled; 0 when empty."""
        oldest = min((s.times[0] for s in self.segments() if s.times), default=None)
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def forget(self) -> None:
        """In a forked child: the parent's segments stay the parent's."""
        for segment in self.segments():
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self._own = None
        self._sealed = []
        self._claimed = []


UP, DEGRADED, DOWN = "up", "degraded", "down"
STATES = (UP, DEGRADED, DOWN)
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_TABLE_ORDER = ("spans", "retrieved_documents", "branch_decisions", "prompt_versions", "scores")


class DurableSQLExporter:
    """A ``SpanExporter`` around ``SQLExporter``: bounded writes, a circuit breaker, the spool
    and its replay (see the module docstring)."""

    def __init__(
        self,
        sql: SQLExporter,
        diagnostics: Diagnostics,
        *,
        spool_dir: Path | str | None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        recovery_interval_s: float = 0.5,
        max_recovery_interval_s: float = 5.0,
        write_timeout_s: float = 0.25,
        replay_slice_s: float = 0.25,
        schema_ready: bool = True,
    ) -> None:
        self.sql = sql
        self._diag = diagnostics
        self.spool: Spool | None = Spool(Path(spool_dir), spool_max_bytes) if spool_dir is not None else None
        # Accepted for compatibility; a failed batch is no longer retried on the writer's thread.
        self._min_interval = recovery_interval_s
        self._max_interval = max(recovery_interval_s, max_recovery_interval_s)
        self._interval = recovery_interval_s
        self._write_timeout_s = write_timeout_s
        self._replay_slice_s = replay_slice_s
        self._schema_ready = schema_ready
        self.state = UP
        self._next_attempt = 0.0  # monotonic time of the next probe while down
        self._probing = False  # a probe thread is trying the store
        self._orphans_checked = False
        self._orphans_due = 0.0
        self._lock = threading.Lock()
        self._attempted = threading.Event()  # set after each maintain() pass
        self._replay_requested = False
        # Set by LLMObs to the processor's: wake() returns False when no worker runs;
        # queue_level() is how full its queue is (0..1); behind() whether the worker lags.
        self.wake: Callable[[], bool] | None = None
        self.queue_level: Callable[[], float] | None = None
        self.behind: Callable[[], bool] | None = None
        self.counters = {
            "spooled_spans": 0,
            "replayed_spans": 0,
            "spooled_scores": 0,
            "replayed_scores": 0,
            "spilled_spans": 0,
            "write_failures": 0,
            "outages": 0,
        }
        self.sanitized: Counter[str] = Counter()
        self.last_error: str | None = None
        self._metrics: SpoolMetrics | None = None
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: (d := ref()) and d._after_fork())

    @property
    def _available(self) -> bool:
        return self.state != DOWN

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._probing = False
        self._attempted = threading.Event()
        if self.spool is not None:
            self.spool.forget()
        self._orphans_checked = False

    # -- SpanExporter (processor thread) ------------------------------------------------------

    def export(self, spans: Sequence[SpanRecord]) -> None:
        rows = self.sql.batch_rows(spans)
        self._make_storable(rows)
        count = len(spans)
        with self._lock:
            # The writer is behind: appending to the spool (one write, no statements, each of
            # which gives the GIL up to a busy app thread for up to 5 ms) is cheaper than the
            # store, and the queue must neither overflow nor hold what a kill -9 would lose.
            # Replayed once the worker has caught up. A full spool: the store then.
            if self.spool is not None and self._behind() and self._spool(rows, count, drop=False):
                self.counters["spilled_spans"] += count
                return
            if self.state != DOWN:
                if self._attempt(rows, count):
                    return
            elif (
                # No spool to replay from: the next batch itself probes the database.
                self.spool is None and time.monotonic() >= self._next_attempt and self._attempt(rows, count)
            ):
                return
            self._spool(rows, count)

    # -- scores (ScoreWriter's thread: judge, feedback, rules) ---------------------------------

    def insert_scores(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store ``scores`` rows like spans: one bounded attempt, else spooled."""
        if not rows:
            return
        batch: Rows = {"scores": [dict(r) for r in rows]}
        self._make_storable(batch)
        with self._lock:
            if self.state != DOWN and self._attempt(batch, len(rows), prefix="score_"):
                return
            self._spool(batch, len(rows), prefix="score_")

    def known_traces(self, trace_ids: Sequence[str]) -> dict[str, str | None]:
        """``SQLExporter.known_traces``; while the database is down every trace counts as
        known (with no prompt version): feedback is never flagged unknown for an outage."""
        if self.state != DOWN:
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
        """Replay a bounded slice of the spool when due (or ``force``); never raises."""
        if self.spool is None:
            return
        more = False
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
                if self.state == DOWN:
                    # The worker never connects to a store that is down (a connect to a host
                    # that does not answer waits out the connect timeout): a probe thread does,
                    # and closes the breaker once it got through.
                    if (force or now >= self._next_attempt) and not self._probing:
                        self._start_probe()
                    return
                if not self.spool.segments():
                    self.state = UP
                    return
                if self._level() >= LOW_WATER or self._behind():
                    return  # live spans first; the spool waits on disk
                more = self._replay_locked()
            finally:
                self._attempted.set()
        if more and self.wake is not None:
            self.wake()  # the store answers and a backlog is left: the next slice right after

    def _start_probe(self) -> None:
        self._probing = True
        self._next_attempt = time.monotonic() + self._interval
        threading.Thread(target=self._probe, name="llmobs-store-probe", daemon=True).start()

    def _probe(self) -> None:
        """Off the worker: can the store take a write? (SQLite: take the write lock and give it
        back; PostgreSQL: connect and ``SELECT 1``.) Backs off while it cannot."""
        error: BaseException | None = None
        try:
            engine = self.sql.engine
            if engine.dialect.name == "sqlite":
                raw = engine.raw_connection()
                try:
                    cursor = raw.cursor()
                    cursor.execute("BEGIN IMMEDIATE")
                    cursor.execute("ROLLBACK")
                finally:
                    raw.close()
            else:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means "still down"
            error = exc
        with self._lock:
            self._probing = False
            if error is None:
                if self.state == DOWN:
                    self._recovered()  # degraded until the spool is replayed
            else:
                self.counters["write_failures"] += 1
                self.last_error = _describe(error)
                self._interval = min(self._interval * 2, self._max_interval)
                self._next_attempt = time.monotonic() + self._interval
        if error is None and self.wake is not None:
            self.wake()  # the worker replays now

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
            if self.state == DOWN:
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
            spool = self.spool
            return {
                "state": self.state,
                "store_available": self.state != DOWN,
                "pending_spans": spool.pending_spans() if spool is not None else 0,
                "pending_bytes": spool.pending_bytes() if spool is not None else 0,
                "oldest_spooled_age_s": round(spool.oldest_age_s(), 3) if spool is not None else 0.0,
                "max_bytes": spool.max_bytes if spool is not None else 0,
                "directory": None if spool is None else str(spool.directory),
                **self.counters,
                "values_sanitized": dict(self.sanitized),
                "last_error": self.last_error,
            }

    # -- internals (lock held) ----------------------------------------------------------------

    def _level(self) -> float:
        level = self.queue_level
        if level is None:
            return 0.0
        try:
            return level()
        except Exception:  # noqa: BLE001 - a gauge must not break the writer
            return 0.0

    def _behind(self) -> bool:
        behind = self.behind
        if behind is None:
            return self._level() >= HIGH_WATER
        try:
            return behind()
        except Exception:  # noqa: BLE001
            return False

    def _make_storable(self, rows: Rows) -> None:
        counts: Counter[str] = Counter()
        clean_rows(rows, counts)
        if counts:
            with self._lock:
                self.sanitized.update(counts)
            for reason, n in counts.items():
                self._diag.value_sanitized(reason, n)

    def _write(self, rows: Rows) -> None:
        if not self._schema_ready:
            ensure_schema(self.sql.engine)
            self._schema_ready = True
        self.sql.write_rows(rows, timeout_s=self._write_timeout_s)

    def _attempt(self, rows: Rows, count: int, prefix: str = "") -> bool:
        """One bounded write; False (the store marked down) on a transient failure. A batch the
        store rejects is split until the rejected rows are found (``_isolate``)."""
        try:
            self._write_or_isolate(rows)
        except Exception as exc:  # noqa: BLE001 - transient only (see _write_or_isolate)
            self._failed(exc)
            return False
        if self.state == DOWN:  # spool-less probe succeeded
            self._recovered()
        return True

    def _write_or_isolate(self, rows: Rows) -> None:
        """Write ``rows``; a permanent rejection bisects them. Raises only transient errors."""
        try:
            self._write(rows)
        except Exception as exc:
            if is_transient(exc):
                raise
            self.counters["write_failures"] += 1
            self.last_error = _describe(exc)
            items = [(t, r) for t in _ordered_tables(rows) for r in rows[t]]
            if not _row_error(exc):
                # Not the database refusing a value (a bug of ours): bisecting would only
                # repeat it 2n times. The batch is dropped, counted, logged once.
                self._diag.handler_error("store_rejected", exc)
                for table, _row in items:
                    self._count_rejected(table)
                return
            self._isolate(items, exc)

    def _isolate(self, items: list[tuple[str, dict[str, Any]]], exc: BaseException) -> None:
        """``items`` failed together: store each half; a single failing row is dropped,
        counted and logged once with the reason. ~2·log2(n) writes per bad row."""
        if len(items) == 1:
            self._diag.handler_error("store_rejected", exc)  # logged once, without values
            self._count_rejected(items[0][0])
            return
        mid = len(items) // 2
        for half in (items[:mid], items[mid:]):
            rows: Rows = {}
            for table, row in half:
                rows.setdefault(table, []).append(row)
            try:
                self._write(rows)
            except Exception as half_exc:
                if is_transient(half_exc):
                    raise
                self._isolate(half, half_exc)

    def _count_rejected(self, table: str) -> None:
        if table == "spans":
            self._diag.dropped("store_rejected")
        elif table == "scores":
            self._diag.dropped("score_store_rejected")
        else:
            self._diag.event(f"store_rejected_{table}")

    def _failed(self, exc: BaseException) -> None:
        """A transient failure: the breaker opens; probes back off up to the replay interval."""
        self.counters["write_failures"] += 1
        self.last_error = _describe(exc)
        now = time.monotonic()
        if self.state != DOWN:
            self.state = DOWN
            self.counters["outages"] += 1
            self._interval = self._min_interval
            logger.warning(
                "llmobs: the database is unavailable (%s); spooling spans to %s until it answers",
                self.last_error,
                None if self.spool is None else self.spool.directory,
            )
        else:
            self._interval = min(self._interval * 2, self._max_interval)
        self._next_attempt = now + self._interval

    def _recovered(self) -> None:
        if self.state == DOWN:
            logger.warning("llmobs: the database answers again; the spool is replayed")
        self._interval = self._min_interval
        spool = self.spool
        self.state = DEGRADED if spool is not None and spool.pending_batches() else UP

    def _spool(self, rows: Rows, count: int, prefix: str = "", drop: bool = True) -> bool:
        """Append a batch (``count`` spans, or scores with ``prefix="score_"``) to the spool;
        False when it could not be (dropped and counted by reason, unless ``drop`` is False
        and the spool is merely full)."""
        if self.spool is None:
            if drop:
                self._diag.dropped(f"{prefix}store_unavailable", count)
            return False
        try:
            stored = self.spool.append(rows, count if not prefix else 0)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                self._diag.dropped(f"{prefix}disk_full", count)
            else:
                self._diag.handler_error("spool_write", exc)
                self._diag.dropped(f"{prefix}spool_write_failed", count)
            return False
        if stored:
            self.counters["spooled_scores" if prefix else "spooled_spans"] += count
        elif drop:
            self._diag.dropped(f"{prefix}spool_full", count)
        return stored

    def _replay_locked(self) -> bool:
        """Replay oldest first for at most ``replay_slice_s`` (each write bounded too), while
        the queue stays under LOW_WATER. True when a backlog is left and the store answers."""
        assert self.spool is not None
        deadline = time.monotonic() + self._replay_slice_s
        try:
            for segment in list(self.spool.segments()):
                batches = self.spool.replay(segment, self._write_or_isolate)
                for spans, rows in batches:
                    if self.state == DOWN:
                        self._recovered()
                    if spans < 0:
                        self._diag.handler_error("spool_corrupt_line")
                    else:
                        self.counters["replayed_spans"] += spans
                        self.counters["replayed_scores"] += len(rows.get("scores", ()))
                    if time.monotonic() >= deadline or self._level() >= LOW_WATER or self._behind():
                        batches.close()  # keeps its place: the next slice resumes there
                        return self.spool.pending_batches() > 0
        except Exception as exc:  # noqa: BLE001 - transient (rejections were isolated)
            self._failed(exc)
            return False
        self._recovered()
        return False


def _row_error(exc: BaseException) -> bool:
    """The database (or its driver) refused a value: worth bisecting to find the row."""
    return isinstance(exc, sa.exc.StatementError | UnicodeError | ValueError | OverflowError)


def _ordered_tables(rows: Rows) -> list[str]:
    """Tables in write order (spans before the rows that refer to them), unknown ones last."""
    return [t for t in _TABLE_ORDER if rows.get(t)] + [t for t in rows if t not in _TABLE_ORDER and rows[t]]


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
        self._retired_sanitized: dict[str, int] = {}
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
                for reason, value in exporter.sanitized.items():
                    self._retired_sanitized[reason] = self._retired_sanitized.get(reason, 0) + value

    def describe(self) -> list[Any]:
        return []  # collected on demand; nothing to check for name clashes up front

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            live = list(self._live)
            totals = dict(self._retired)
            sanitized = dict(self._retired_sanitized)
        pending = size = 0
        oldest = 0.0
        states = dict.fromkeys(STATES, 0)
        for exporter in live:
            for key, value in exporter.counters.items():
                totals[key] = totals.get(key, 0) + value
            for reason, value in list(exporter.sanitized.items()):
                sanitized[reason] = sanitized.get(reason, 0) + value
            spool = exporter.spool
            # Read without the writer's lock: a scrape must not wait for a long replay.
            if spool is not None:
                with contextlib.suppress(RuntimeError, IndexError):  # lists changing under us
                    pending += spool.pending_spans()
                    size += spool.pending_bytes()
                    oldest = max(oldest, spool.oldest_age_s())
            states[exporter.state] += 1
        for name, key, doc in (
            (
                names.SPOOL_SPANS_WRITTEN,
                "spooled_spans",
                "Spans written to the local spool (database down, or the queue past its high-water mark).",
            ),
            (
                names.SPOOL_SPANS_REPLAYED,
                "replayed_spans",
                "Spooled spans stored after the database came back.",
            ),
            (
                names.SPOOL_SPANS_SPILLED,
                "spilled_spans",
                "Spans spooled because the queue passed its high-water mark (the writer was behind).",
            ),
            (
                names.STORE_WRITE_FAILURES,
                "write_failures",
                "Failed attempts to write a batch to the database.",
            ),
            (names.STORE_OUTAGES, "outages", "Times the database became unavailable to the writer."),
        ):
            yield CounterMetricFamily(name, doc, value=totals.get(key, 0))
        family = CounterMetricFamily(
            names.VALUES_SANITIZED,
            "Characters no store accepts (NUL bytes, lone surrogates…) replaced before writing, by reason.",
            labels=["reason"],
        )
        for reason in REASONS:  # the known reasons from the start, at 0: rate() needs a series
            sanitized.setdefault(reason, 0)
        for reason, value in sorted(sanitized.items()):
            family.add_metric([reason], value)
        yield family
        yield GaugeMetricFamily(
            names.SPOOL_PENDING_SPANS, "Spans in the spool, not yet stored.", value=pending
        )
        yield GaugeMetricFamily(names.SPOOL_BYTES, "Bytes in the spool, not yet stored.", value=size)
        yield GaugeMetricFamily(
            names.SPOOL_OLDEST_AGE,
            "Seconds since the oldest batch still in the spool was spooled (0 when empty).",
            value=oldest,
        )
        yield GaugeMetricFamily(
            names.STORE_AVAILABLE,
            "1 when every writer of this process can reach its database.",
            value=int(not states[DOWN]),
        )
        state = GaugeMetricFamily(
            names.STORE_STATE,
            "Writers of this process in each state: up, degraded (replaying the spool), down (spooling).",
            labels=["state"],
        )
        for name in STATES:
            state.add_metric([name], states[name])
        yield state
