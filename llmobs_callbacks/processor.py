"""Span processors: the only thing the hot path hands finished spans to.

``BatchSpanProcessor`` follows the OpenTelemetry SDK's design: a bounded deque filled by the
caller, one daemon worker that wakes on a timer or when a batch is ready, prepares the batch
(pricing, serialisation) and fans it out to the exporters. The caller never waits for I/O.
When the queue is full the span is dropped and counted (``queue_full="drop"``, the default),
or the caller waits up to ``block_timeout_s`` for room and then drops and counts it
(``queue_full="block"``). ``flush`` enqueues a marker, waits until the worker has exported
everything queued before it, then until exporters that keep a backlog (the durable SQL
writer's spool, ``wait_stored``) have stored it.

Each exporter sees a batch once: retrying a failed write is the exporter's business
(``sinks.durable``), so a database outage never re-counts Prometheus samples or re-judges.

``SynchronousSpanProcessor`` exports on the caller's thread: for scripts and serverless
functions that must not return before their spans are stored.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from .diagnostics import Diagnostics
from .model import SpanRecord

logger = logging.getLogger(__name__)


class SpanExporter(Protocol):
    """Receives prepared spans in batches; knows nothing of any LLM framework."""

    def export(self, spans: Sequence[SpanRecord]) -> None: ...

    def shutdown(self) -> None: ...


Preparer = Callable[[Sequence[SpanRecord]], None]
# A truthy result means "more to do": the task runs again on the worker's next pass.
Housekeeping = Callable[[], object]
QUEUE_FULL_POLICIES = ("drop", "block")
# Fractions of max_queue_size. Past HIGH_WATER the durable writer spills batches to its spool
# instead of waiting on the store, and housekeeping (orphan eviction) adds nothing; the spool is
# replayed only under LOW_WATER.
HIGH_WATER = 0.8
LOW_WATER = 0.5


class _FlushMarker:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Pipeline:
    """Prepare-then-export for one batch; shared by both processors."""

    def __init__(self, preparer: Preparer, exporters: Sequence[SpanExporter], diagnostics: Diagnostics):
        self._prepare = preparer
        self._exporters = list(exporters)
        self._diag = diagnostics

    def export(self, batch: Sequence[SpanRecord]) -> None:
        try:
            self._prepare(batch)
        except Exception as exc:  # noqa: BLE001
            self._diag.handler_error("prepare_batch", exc)
        for exporter in self._exporters:
            try:
                exporter.export(batch)
            except Exception as exc:  # noqa: BLE001 - one failing sink must not starve the others
                self._diag.handler_error(f"export:{type(exporter).__name__}", exc)
                self._diag.dropped(f"export_failed:{type(exporter).__name__}", len(batch))

    def wait_stored(self, timeout: float | None) -> bool:
        """Wait for exporters with a backlog of their own (a spool) to store it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = True
        for exporter in self._exporters:
            wait = getattr(exporter, "wait_stored", None)
            if wait is not None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ok = wait(left) and ok
        return ok

    def shutdown(self) -> None:
        for exporter in self._exporters:
            try:
                exporter.shutdown()
            except Exception as exc:  # noqa: BLE001
                self._diag.handler_error(f"shutdown:{type(exporter).__name__}", exc)


class SynchronousSpanProcessor:
    def __init__(
        self,
        preparer: Preparer,
        exporters: Sequence[SpanExporter],
        diagnostics: Diagnostics,
    ) -> None:
        self._pipeline = _Pipeline(preparer, exporters, diagnostics)
        self._lock = threading.Lock()
        self._closed = False
        self._diag = diagnostics
        self._housekeeping: list[Housekeeping] = []

    def on_end(self, span: SpanRecord) -> None:
        if self._closed:
            self._diag.dropped("after_shutdown")
            return
        with self._lock:
            self._pipeline.export([span])

    def add_housekeeping(self, task: Housekeeping, interval_s: float) -> None:
        """Sync mode has no background thread; housekeeping runs on flush."""
        self._housekeeping.append(task)

    def flush(self, timeout: float | None = None) -> bool:
        for task in self._housekeeping:
            for _ in range(10_000):  # "more to do" (bounded slices): all of it, on this thread
                if not task():
                    break
        return self._pipeline.wait_stored(timeout)

    def room(self) -> int:
        """Spans housekeeping may add now: no queue here, each is exported on the spot."""
        return 1_000_000

    def queue_level(self) -> float:
        return 0.0

    def behind(self) -> bool:
        return False

    def shutdown(self, timeout: float | None = None) -> bool:
        flushed = True
        if not self._closed:
            flushed = self.flush(timeout)
            self._closed = True
            self._pipeline.shutdown()
        return flushed

    def queue_size(self) -> int:
        return 0


class BatchSpanProcessor:
    def __init__(
        self,
        preparer: Preparer,
        exporters: Sequence[SpanExporter],
        diagnostics: Diagnostics,
        *,
        max_queue_size: int = 20_000,
        max_batch_size: int = 512,
        schedule_delay_s: float = 0.5,
        queue_full: str = "drop",
        block_timeout_s: float = 1.0,
    ) -> None:
        if max_queue_size < 1 or max_batch_size < 1:
            raise ValueError("max_queue_size and max_batch_size must be at least 1")
        if queue_full not in QUEUE_FULL_POLICIES:
            raise ValueError(f"queue_full must be one of {QUEUE_FULL_POLICIES}, not {queue_full!r}")
        if not block_timeout_s >= 0:
            raise ValueError(f"block_timeout_s must be >= 0, not {block_timeout_s!r}")
        self._pipeline = _Pipeline(preparer, exporters, diagnostics)
        self._diag = diagnostics
        self._block = queue_full == "block"
        self._block_timeout_s = block_timeout_s
        self._max_queue_size = max_queue_size
        self._max_batch_size = max_batch_size
        self._schedule_delay_s = schedule_delay_s
        self._housekeeping: list[tuple[Housekeeping, float]] = []
        self._closed = False
        self._start_worker()
        if hasattr(os, "register_at_fork"):
            # A forked child (gunicorn --preload) inherits the queue but not the thread.
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: (p := ref()) and p._start_worker())

    def _start_worker(self) -> None:
        self._queue: deque[SpanRecord | _FlushMarker] = deque()
        self._wake = threading.Event()
        self._room = threading.Condition()  # "block" policy: the worker took spans off the queue
        self._blocked = 0
        self._backlog_since: float | None = None  # since when the queue holds over one batch
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name="llmobs-span-processor", daemon=True)
        self._worker.start()

    # -- hot path ---------------------------------------------------------------------------

    def on_end(self, span: SpanRecord) -> None:
        queue = self._queue
        if self._closed:
            self._diag.dropped("after_shutdown")
            return
        if len(queue) >= self._max_queue_size and not self._wait_for_room():
            self._diag.dropped("queue_full")
            return
        queue.append(span)
        if len(queue) >= self._max_batch_size:
            self._wake.set()

    def _wait_for_room(self) -> bool:
        """``queue_full="block"``: wait (bounded) for the worker to make room; False to drop."""
        if not self._block or threading.current_thread() is self._worker:
            return False  # the worker itself (evicting stale runs) must never wait on itself
        self._wake.set()
        with self._room:
            self._blocked += 1
            try:
                return (
                    self._room.wait_for(
                        lambda: len(self._queue) < self._max_queue_size or self._closed, self._block_timeout_s
                    )
                    and not self._closed
                )
            finally:
                self._blocked -= 1

    # -- control ----------------------------------------------------------------------------

    def add_housekeeping(self, task: Housekeeping, interval_s: float) -> None:
        self._housekeeping.append((task, interval_s))

    def wake(self) -> bool:
        """Run the worker's loop (housekeeping included) now; False when no worker runs."""
        self._wake.set()
        return self._worker.is_alive() and not self._stopping

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Block until every span queued before this call is stored (True) or the timeout
        (False: still queued, or spooled while the database is unavailable)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._worker.is_alive():
            self._drain()
        else:
            marker = _FlushMarker()
            self._queue.append(marker)
            self._wake.set()
            if not marker.done.wait(timeout):
                return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._pipeline.wait_stored(left)

    def shutdown(self, timeout: float | None = 10.0) -> bool:
        if self._closed:
            return True
        flushed = self.flush(timeout)
        self._closed = True
        self._stopping = True
        self._wake.set()
        with self._room:
            self._room.notify_all()
        self._worker.join(timeout)
        if self._worker.is_alive():
            left = self.queue_size()  # still queued after the timeout: lost, so counted
            if left:
                self._diag.dropped("shutdown_timeout", left)
        self._pipeline.shutdown()
        return flushed

    def queue_size(self) -> int:
        for _ in range(3):
            try:
                return sum(1 for item in self._queue if not isinstance(item, _FlushMarker))
            except RuntimeError:  # appended to or drained meanwhile (stats() from any thread)
                continue
        return len(self._queue)

    def queue_level(self) -> float:
        """How full the queue is, 0..1 (lock-free: ``len`` of a deque)."""
        return len(self._queue) / self._max_queue_size

    def behind(self) -> bool:
        """The worker is behind: the queue is past its high-water mark, or has not been caught
        up (at most one batch left) for longer than the flush interval. Spans in memory are
        what a ``kill -9`` loses, so then batches should take the cheapest way to disk."""
        if len(self._queue) >= self._max_queue_size * HIGH_WATER:
            return True
        since = self._backlog_since
        return since is not None and time.monotonic() - since > self._schedule_delay_s

    def room(self) -> int:
        """Spans housekeeping may add without taking the queue past its high-water mark."""
        return max(0, int(self._max_queue_size * HIGH_WATER) - len(self._queue))

    # -- worker -----------------------------------------------------------------------------

    def _run(self) -> None:
        last_run = {id(task): time.monotonic() for task, _ in self._housekeeping}
        while not self._stopping:
            self._wake.wait(self._schedule_delay_s)
            self._wake.clear()
            self._drain(bounded=True)
            if len(self._queue) >= self._max_batch_size:
                self._wake.set()  # a full batch came in meanwhile: the next pass right away
            now = time.monotonic()
            for task, interval in self._housekeeping:
                if now - last_run.get(id(task), 0.0) >= interval:
                    last_run[id(task)] = now
                    try:
                        more = task()
                    except Exception as exc:  # noqa: BLE001
                        self._diag.handler_error("housekeeping", exc)
                        continue
                    if more:  # a bounded slice was done: the next one after the next drain
                        last_run[id(task)] = 0.0
                        self._wake.set()
        self._drain()

    def _drain(self, bounded: bool = False) -> None:
        """Export what is queued. ``bounded`` (the worker's loop): only what was queued on entry,
        so housekeeping (the spool's replay, eviction) runs between passes even when the app
        refills the queue as fast as it is written."""
        queue = self._queue
        left = len(queue) if bounded else -1
        while True:
            if len(queue) <= self._max_batch_size:
                self._backlog_since = None
            elif self._backlog_since is None:
                self._backlog_since = time.monotonic()
            if not queue or left == 0:
                break
            batch: list[SpanRecord] = []
            markers: list[_FlushMarker] = []
            while queue and len(batch) < self._max_batch_size:
                item = queue.popleft()
                if isinstance(item, _FlushMarker):
                    markers.append(item)
                    break  # everything before the marker is in this batch
                batch.append(item)
            if self._blocked:
                with self._room:
                    self._room.notify_all()
            if left > 0:
                left = max(0, left - len(batch) - len(markers))
            if batch:
                self._pipeline.export(batch)
            for marker in markers:
                marker.done.set()


def register_atexit_shutdown(shutdown: Callable[[], object]) -> Callable[[], None]:
    """Run ``shutdown`` at interpreter exit; returns a function that cancels it."""
    atexit.register(shutdown)
    return lambda: atexit.unregister(shutdown)
