"""Score rows (judge, user feedback, rules) → the ``scores`` table and Prometheus.

``ScoreWriter`` is a small bounded queue with one daemon thread: ``LLMObs.feedback`` and the
judge's workers only enqueue, so the caller never waits on the database. Rows are inserted
idempotently on ``id``; the Prometheus samples (``llmobs_quality_score``,
``llmobs_feedback_total``) are updated once the rows are stored.

User feedback is accepted for any trace id. When the trace is neither open nor recently
ended in this process (``in flight``) nor stored, the row is still written, with
``label = 'unknown_trace'`` (the rating stays readable from ``value``).

A user's feedback carries ``user_id``: the SQL writer keeps one current score per (trace, user,
name) and marks the earlier ones ``superseded_at`` (see ``sinks.sql``). Feedback without a
user cannot be told apart from another user's: every such row counts.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .diagnostics import Diagnostics

if TYPE_CHECKING:
    from .prepare.redaction import PrivacyFilter
    from .recorder import Recorder
    from .sinks.prometheus import PrometheusExporter
    from .sinks.sql import SQLExporter

UNKNOWN_TRACE_LABEL = "unknown_trace"
SOURCE_JUDGE, SOURCE_USER, SOURCE_RULE = "judge", "user", "rule"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def feedback_rating(score: float) -> str:
    """The ``rating`` label of ``llmobs_feedback_total``: thumbs and 0..1 scores map to
    ``positive`` (> 0.5), ``negative`` (< 0.5) or ``neutral`` (0.5); values outside 0..1
    (a 1-5 star rating, …) are ``rating`` unless the caller names one."""
    if 0.0 <= score <= 1.0:
        return "positive" if score > 0.5 else "negative" if score < 0.5 else "neutral"
    return "rating"


@dataclass
class PendingScore:
    row: dict[str, Any]
    prompt_version: str | None = None
    feedback_rating: str | None = None  # set for user feedback: counted in llmobs_feedback_total
    check_trace: bool = False  # look the trace up in the store (prompt_version, existence)
    in_flight: bool = False  # known to this process: never flagged as unknown


@dataclass
class _Marker:
    done: threading.Event = field(default_factory=threading.Event)


class ScoreWriter:
    def __init__(
        self,
        sql: SQLExporter,
        metrics: PrometheusExporter | None,
        diagnostics: Diagnostics,
        *,
        max_queue_size: int = 10_000,
        max_batch_size: int = 500,
        privacy: PrivacyFilter | None = None,
    ) -> None:
        self._sql = sql
        self._privacy = privacy  # comments are redacted (or dropped) on this thread
        self._metrics = metrics
        self._diag = diagnostics
        self._max_queue = max_queue_size
        self._max_batch = max_batch_size
        self._queue: deque[PendingScore | _Marker] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, item: PendingScore) -> bool:
        """Enqueue one score (never blocks); False (counted) when full or closed."""
        with self._cond:
            if self._closed:
                self._diag.dropped("score_after_shutdown")
                return False
            if len(self._queue) >= self._max_queue:
                self._diag.dropped("score_queue_full")
                return False
            self._queue.append(item)
            self._ensure_thread()
            self._cond.notify()
        return True

    def flush(self, timeout: float | None = 10.0) -> bool:
        with self._cond:
            if self._thread is None:
                return True
            marker = _Marker()
            self._queue.append(marker)
            self._cond.notify()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        return flushed

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="llmobs-score-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                batch: list[PendingScore] = []
                markers: list[_Marker] = []
                while self._queue and len(batch) < self._max_batch:
                    item = self._queue.popleft()
                    if isinstance(item, _Marker):
                        markers.append(item)
                        break
                    batch.append(item)
            if batch:
                self._write(batch)
            for marker in markers:
                marker.done.set()

    def _write(self, batch: list[PendingScore]) -> None:
        if self._privacy is not None:
            for p in batch:
                self._privacy.score_row(p.row)
        try:
            unchecked = [p for p in batch if p.check_trace]
            if unchecked:
                known = self._sql.known_traces([p.row["trace_id"] for p in unchecked])
                for p in unchecked:
                    if p.row["trace_id"] in known:
                        p.prompt_version = p.prompt_version or known[p.row["trace_id"]]
                    elif not p.in_flight:
                        p.row["label"] = UNKNOWN_TRACE_LABEL
            self._sql.insert_scores([p.row for p in batch])
        except Exception as exc:  # noqa: BLE001 - never raise on a background thread
            self._diag.handler_error("score_write", exc)
            self._diag.dropped("score_write_failed", len(batch))
            return
        metrics = self._metrics
        if metrics is None:
            return
        for p in batch:
            try:
                row = p.row
                if row.get("value") is not None:
                    metrics.observe_score(
                        row["name"], row["value"], p.prompt_version, trace_id=row["trace_id"]
                    )
                if p.feedback_rating is not None:
                    metrics.count_feedback(p.feedback_rating)
            except Exception as exc:  # noqa: BLE001
                self._diag.handler_error("score_metrics", exc)


def in_flight(recorder: Recorder, trace_id: object) -> tuple[bool, str | None]:
    """(known to this process, prompt_version) for a trace still open or recently ended."""
    keys: list[object] = [trace_id]
    with contextlib.suppress(ValueError):
        keys.append(uuid.UUID(str(trace_id)))
    for key in keys:
        span = recorder.get(key)
        if span is not None:
            return True, span.prompt_version
        if recorder.recently_ended(key):
            return True, None
    return False, None


def feedback_row(
    trace_id: object,
    score: float,
    comment: str,
    name: str,
    label: str | None,
    span_id: object = None,
    created_at: datetime | None = None,
    user_id: object = None,
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "trace_id": str(trace_id),
        "span_id": None if span_id is None else str(span_id),
        "name": name,
        "value": float(score),
        "label": label,
        "source": SOURCE_USER,
        "comment": comment or None,
        "judge_model": None,
        "cost_usd": None,
        "created_at": created_at or utcnow(),
        "user_id": None if user_id is None else str(user_id),
        "superseded_at": None,
    }


def monotonic_deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
