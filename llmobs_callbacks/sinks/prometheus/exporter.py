"""``PrometheusExporter``: finished spans → the registry's metric set, on the processor thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry

from ...diagnostics import Diagnostics
from ...model import SpanRecord
from .labels import DEFAULT_LABEL_LIMIT, normalize_model_name
from .metrics import metrics_for, multiprocess_mode


class PrometheusExporter:
    """A ``SpanExporter`` that turns finished spans into Prometheus metrics.

    >>> from prometheus_client import CollectorRegistry
    >>> exporter = PrometheusExporter(CollectorRegistry(), label_limit={"*": 100, "model": 50})

    ``LLMObs(prometheus_registry=...)`` creates one per instance; use it directly with
    ``LLMObs(exporters=[...], prometheus_registry=None)`` for full control. ``diagnostics``
    (an LLMObs's counters of drops and internal errors) is exported as
    ``llmobs_spans_dropped_total`` and ``llmobs_handler_errors_total``; ``service`` and
    ``environment`` are the labels of its ``llmobs_info`` series.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        label_limit: int | Mapping[str, int] = DEFAULT_LABEL_LIMIT,
        model_normalizer: Callable[[str], str] | None = normalize_model_name,
        diagnostics: Diagnostics | None = None,
        service: str | None = None,
        environment: str | None = None,
    ) -> None:
        self.metrics = metrics_for(registry, label_limit=label_limit, model_normalizer=model_normalizer)
        self.registry = self.metrics.registry
        self.metrics.announce(service, environment)
        self._diag = diagnostics
        self._synced: dict[str, dict[str, int]] = {"spans_dropped": {}, "handler_errors": {}}
        self._sync_lock = threading.Lock()
        if diagnostics is not None:
            self.metrics._attach(self)

    # -- SpanExporter ----------------------------------------------------------------------------

    def export(self, spans: Sequence[SpanRecord]) -> None:
        self.metrics.record_batch(spans, self._span_error)
        if multiprocess_mode():  # scrapes read the files, not this registry: sync here instead
            self.sync_diagnostics()

    def shutdown(self) -> None:
        self.sync_diagnostics()
        self.metrics._detach(self)

    def _span_error(self, exc: Exception) -> None:
        if self._diag is None:
            raise exc
        self._diag.handler_error("prometheus_span", exc)

    # -- scores, judge, feedback -----------------------------------------------------------------

    def observe_score(
        self, metric: str, value: float, prompt_version: str | None = None, *, trace_id: object = None
    ) -> None:
        """A quality score (``faithfulness`` 1-5, ``hallucination`` 0/1 with 1 = hallucinated, …)."""
        self.metrics.observe_score(metric, value, prompt_version, trace_id=trace_id)

    def count_judge_evaluation(self, status: str = "ok") -> None:
        """One LLM-as-judge evaluation: ``ok``, ``error``, ``skipped``, …"""
        self.metrics.count_judge_evaluation(status)

    def count_feedback(self, rating: str) -> None:
        """One piece of user feedback: ``positive``, ``negative``, ``neutral``, …"""
        self.metrics.count_feedback(rating)

    # -- diagnostics -----------------------------------------------------------------------------

    def sync_diagnostics(self) -> None:
        """Add what the Diagnostics counted since the last sync to the Prometheus counters."""
        if self._diag is None:
            return
        snapshot = self._diag.snapshot()
        metrics = self.metrics
        with self._sync_lock:
            for family, counter in (
                ("spans_dropped", metrics.spans_dropped),
                ("handler_errors", metrics.handler_errors),
            ):
                synced = self._synced[family]
                for reason, count in snapshot[family].items():
                    delta = count - synced.get(reason, 0)
                    if delta > 0:
                        counter.labels(metrics.labels("reason", reason)).inc(delta)
                        synced[reason] = count
