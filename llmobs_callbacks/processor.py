"""Span processors: the only thing the hot path hands finished spans to.

``BatchSpanProcessor`` follows the OpenTelemetry SDK's design: a bounded deque filled by the
caller, one daemon worker that wakes on a timer or when a batch is ready, prepares the batch
(pricing, serialisation) and fans it out to the exporters. The caller never waits for I/O;
when the queue is full the span is dropped and counted. ``flush`` enqueues a marker and waits
until the worker has exported everything queued before it.

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
Housekeeping = Callable[[], None]


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
            task()
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        if not self._closed:
            self.flush()
            self._closed = True
            self._pipeline.shutdown()
        return True

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
    ) -> None:
        if max_queue_size < 1 or max_batch_size < 1:
            raise ValueError("max_queue_size and max_batch_size must be at least 1")
        self._pipeline = _Pipeline(preparer, exporters, diagnostics)
        self._diag = diagnostics
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
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name="llmobs-span-processor", daemon=True)
        self._worker.start()

    # -- hot path ---------------------------------------------------------------------------

    def on_end(self, span: SpanRecord) -> None:
        queue = self._queue
        if self._closed:
            self._diag.dropped("after_shutdown")
            return
        if len(queue) >= self._max_queue_size:
            self._diag.dropped("queue_full")
            return
        queue.append(span)
        if len(queue) >= self._max_batch_size:
            self._wake.set()

    # -- control ----------------------------------------------------------------------------

    def add_housekeeping(self, task: Housekeeping, interval_s: float) -> None:
        self._housekeeping.append((task, interval_s))

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Block until every span queued before this call is exported (or the timeout)."""
        if not self._worker.is_alive():
            self._drain()
            return True
        marker = _FlushMarker()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def shutdown(self, timeout: float | None = 10.0) -> bool:
        if self._closed:
            return True
        flushed = self.flush(timeout)
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._worker.join(timeout)
        self._pipeline.shutdown()
        return flushed

    def queue_size(self) -> int:
        return sum(1 for item in self._queue if not isinstance(item, _FlushMarker))

    # -- worker -----------------------------------------------------------------------------

    def _run(self) -> None:
        last_run = {id(task): time.monotonic() for task, _ in self._housekeeping}
        while not self._stopping:
            self._wake.wait(self._schedule_delay_s)
            self._wake.clear()
            self._drain()
            now = time.monotonic()
            for task, interval in self._housekeeping:
                if now - last_run.get(id(task), 0.0) >= interval:
                    last_run[id(task)] = now
                    try:
                        task()
                    except Exception as exc:  # noqa: BLE001
                        self._diag.handler_error("housekeeping", exc)
        self._drain()

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            batch: list[SpanRecord] = []
            markers: list[_FlushMarker] = []
            while queue and len(batch) < self._max_batch_size:
                item = queue.popleft()
                if isinstance(item, _FlushMarker):
                    markers.append(item)
                    break  # everything before the marker is in this batch
                batch.append(item)
            if batch:
                self._pipeline.export(batch)
            for marker in markers:
                marker.done.set()


def register_atexit_shutdown(shutdown: Callable[[], object]) -> Callable[[], None]:
    """Run ``shutdown`` at interpreter exit; returns a function that cancels it."""
    atexit.register(shutdown)
    return lambda: atexit.unregister(shutdown)
