"""Counters for what the pipeline skipped, dropped or failed on, and log-once for each kind.

The handler must never raise into the user's code, so every internal failure ends here:
counted by reason (exposed as ``llmobs_handler_errors_total`` / ``llmobs_spans_dropped_total``)
and logged once per reason so a broken integration cannot flood the application's logs.

Handler-error reasons are bounded (no ids or values in them): ``end_of_unknown_run`` (an end
for a run never started here), ``invalid_token_count`` (NaN, negative, non-numeric or absurd
usage counts: stored as NULL), ``redact`` (a redaction callable failed: the span is stored
without its texts), ``<integration>.<entry point>`` (``langchain.on_llm_end``,
``llama_index.span_exit``, ``llama_index_legacy.on_event_start``, ``langchain.llm_result``…:
an argument the adapter could not read; the run is still ended and stored when it was open),
and the worker's ``prepare_span``, ``export:<Exporter>``, ``score_write``, ``judge``….
Benign oddities (a duplicate start or end, as when a handler is both passed and installed
process-wide) are ``events``, not errors.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

logger = logging.getLogger("llmobs_callbacks")


class Diagnostics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handler_errors: Counter[str] = Counter()
        self.spans_dropped: Counter[str] = Counter()
        self.unpriced: Counter[str] = Counter()
        self.events: Counter[str] = Counter()  # benign, expected oddities (duplicate handlers…)
        self.values_sanitized: Counter[str] = Counter()  # characters replaced to make rows storable
        self._logged: set[str] = set()
        # Set by LLMObs when redaction or capture_content=False is on: exception messages may
        # quote prompts and outputs, so logs get the type, a scrubbed message and the frames.
        self.describe_exception: Callable[[BaseException], str] | None = None

    def handler_error(self, reason: str, exc: BaseException | None = None) -> None:
        with self._lock:
            self.handler_errors[reason] += 1
            first = self._first(f"error:{reason}")
        if first:
            describe = self.describe_exception
            if describe is not None and exc is not None:
                logger.warning(
                    "llmobs: internal error (%s); counted in llmobs_handler_errors_total and logged once: %s",
                    reason,
                    describe(exc),
                )
                return
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

    def value_sanitized(self, reason: str, count: int = 1) -> None:
        """``count`` characters no store accepts (``nul_byte``, ``lone_surrogate``…) replaced."""
        with self._lock:
            self.values_sanitized[reason] += count
            first = self._first(f"sanitized:{reason}")
        if first:
            logger.info(
                "llmobs: replaced %d character(s) no store accepts (%s) with U+FFFD; further ones are "
                "only counted (llmobs_values_sanitized_total)",
                count,
                reason,
            )

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
                "values_sanitized": dict(self.values_sanitized),
            }
