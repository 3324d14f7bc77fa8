"""Counters for what the pipeline skipped, dropped or failed on, and log-once for each kind.

The handler must never raise into the user's code, so every internal failure ends here:
counted by reason (exposed as ``llmobs_handler_errors_total`` / ``llmobs_spans_dropped_total``)
and logged once per reason so a broken integration cannot flood the application's logs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

logger = logging.getLogger("llmobs_callbacks")


class Diagnostics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handler_errors: Counter[str] = Counter()
        self.spans_dropped: Counter[str] = Counter()
        self.unpriced: Counter[str] = Counter()
        self.events: Counter[str] = Counter()  # benign, expected oddities (duplicate handlers…)
        self._logged: set[str] = set()

    def handler_error(self, reason: str, exc: BaseException | None = None) -> None:
        with self._lock:
            self.handler_errors[reason] += 1
            first = self._first(f"error:{reason}")
        if first:
            logger.warning(
                "llmobs: internal error (%s); counted in llmobs_handler_errors_total and logged once",
                reason,
                exc_info=exc,
            )

    def dropped(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.spans_dropped[reason] += count
            first = self._first(f"drop:{reason}")
        if first:
            logger.warning("llmobs: dropped %d span(s) (%s); further drops are only counted", count, reason)

    def unpriced_model(self, model: str) -> None:
        with self._lock:
            self.unpriced[model] += 1
            first = self._first(f"unpriced:{model}")
        if first:
            logger.info("llmobs: no price known for model %r; cost_usd stays NULL", model)

    def _first(self, key: str) -> bool:
        """True the first time ``key`` is seen (caller holds the lock); bounded memory."""
        if key in self._logged or len(self._logged) >= 10_000:
            return False
        self._logged.add(key)
        return True

    def event(self, name: str, count: int = 1) -> None:
        with self._lock:
            self.events[name] += count

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                "handler_errors": dict(self.handler_errors),
                "spans_dropped": dict(self.spans_dropped),
                "unpriced": dict(self.unpriced),
                "events": dict(self.events),
            }
