"""Prometheus metrics from finished spans: an exporter on the processor thread.

``PrometheusExporter`` receives every prepared batch (cost already set) and updates the
metrics of the table in DESIGN.md. Nothing here runs on the caller's thread: the hot path only
appends spans to the processor's queue, and the ``Diagnostics`` counters it bumps are copied
into ``llmobs_spans_dropped_total`` / ``llmobs_handler_errors_total`` at scrape time (and after
every batch, for prometheus-client's multiprocess mode, where scrapes read files instead).

One metric set exists per registry (registering a name twice raises in prometheus-client), so
any number of ``LLMObs`` instances can feed one registry; the first exporter of a registry
decides its label limits.

Conventions (documented in the README):

- Missing label values are ``none`` (no model, no prompt version, …); values beyond a label's
  cap are ``__other__``; model names are normalised (see ``labels.normalize_model_name``).
- ``llmobs_llm_tokens_total{type}``: ``input`` includes ``cached_input`` and ``output``
  includes ``reasoning`` (as LangChain counts), so total tokens are ``type=~"input|output"``.
- ``llmobs_retrieved_documents`` has a ``le="0"`` bucket: the retrieval empty rate is
  ``rate(..._bucket{le="0"}) / rate(..._count)``.
- Exemplars ``{trace_id}`` on LLM and trace durations, cost and quality scores; they appear in
  the OpenMetrics exposition only (Prometheus asks for it by default).
  ``metric_names.EXEMPLAR_SERIES`` lists the series, for the dashboard.
- ``llmobs_info{service, environment}`` is 1 for each ``LLMObs`` of the process: the
  dashboard's service and environment variables select processes (job, instance) through it.

Modules: ``metrics`` (the metric set and its batched updates), ``exporter``, ``labels`` (bounded
label values), ``server`` (``/metrics``); the metric names are in ``sinks/metric_names.py``.
"""

from .exporter import PrometheusExporter
from .metrics import (
    DOCUMENT_BUCKETS,
    DURATION_BUCKETS,
    SCORE_BUCKETS,
    TOKEN_BUCKETS,
    TOKEN_TYPES,
    LLMObsMetrics,
    metrics_for,
    multiprocess_mode,
)
from .server import MetricsServer, exposition_registry, serve_metrics

__all__ = [
    "DOCUMENT_BUCKETS",
    "DURATION_BUCKETS",
    "SCORE_BUCKETS",
    "TOKEN_BUCKETS",
    "TOKEN_TYPES",
    "LLMObsMetrics",
    "MetricsServer",
    "PrometheusExporter",
    "exposition_registry",
    "metrics_for",
    "multiprocess_mode",
    "serve_metrics",
]
