"""The metric set of one registry (``LLMObsMetrics``, see the package docstring) and its batched
updates: one ``inc``/``observe`` per series and batch, one update per histogram bucket."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import values as _prom_values
from prometheus_client.samples import Exemplar

from ...model import STATUS_ERROR, SpanKind, SpanRecord
from .. import metric_names as names
from .labels import DEFAULT_LABEL_LIMIT, OTHER, LabelLimiter, normalize_model_name

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    from .exporter import PrometheusExporter


# OpenTelemetry GenAI semantic conventions, ExplicitBucketBoundaries.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
# Documents per retrieval: the le="0" bucket counts empty retrievals.
DOCUMENT_BUCKETS = (0, 1, 2, 3, 4, 5, 10, 20, 50, 100)
# Quality scores: 0..1 (relevance, hallucination as 0/1) and 1..5 rubrics (faithfulness).
SCORE_BUCKETS = (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5)

TOKEN_TYPES = ("input", "output", "cached_input", "reasoning")
_EXEMPLAR_MAX_VALUE = 120  # prometheus-client caps an exemplar's label names + values at 128 chars


def multiprocess_mode() -> bool:
    """True when prometheus-client writes values to ``$PROMETHEUS_MULTIPROC_DIR`` files."""
    value_class = getattr(_prom_values, "ValueClass", None)
    mutex_value = getattr(_prom_values, "MutexValue", None)
    if value_class is None or mutex_value is None:  # not public API: fall back on the documented switch
        return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    return value_class is not mutex_value


def _exemplar(trace_id: object) -> dict[str, str] | None:
    if trace_id is None:
        return None
    return {"trace_id": str(trace_id)[:_EXEMPLAR_MAX_VALUE]}


class LLMObsMetrics:
    """The metric set of one registry (get it with :func:`metrics_for`)."""

    def __init__(self, registry: CollectorRegistry, limiter: LabelLimiter) -> None:
        self.registry = registry
        self.labels = limiter
        self._live: weakref.WeakSet[PrometheusExporter] = weakref.WeakSet()
        self._live_lock = threading.Lock()
        # Registered first so a scrape copies Diagnostics into the counters before reading them.
        registry.register(_DiagnosticsSync(self))

        def counter(name: str, doc: str, labelnames: Sequence[str]) -> Counter:
            return Counter(name, doc, labelnames, registry=registry)

        def histogram(name: str, doc: str, labelnames: Sequence[str], buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, labelnames, registry=registry, buckets=buckets)

        llm = ("model", "provider", "prompt_version")
        self.llm_requests = counter(names.LLM_REQUESTS, "LLM calls.", (*llm, "status"))
        self.llm_tokens = counter(
            names.LLM_TOKENS,
            "Tokens of LLM calls; input includes cached_input, output includes reasoning.",
            (*llm, "type"),
        )
        self.llm_token_usage = histogram(
            names.LLM_TOKEN_USAGE,
            "Input and output tokens per LLM call (OpenTelemetry gen_ai.client.token.usage).",
            ("model", "provider", "type"),
            TOKEN_BUCKETS,
        )
        self.llm_cost = counter(names.LLM_COST, "Cost of LLM calls in USD.", llm)
        self.llm_unpriced = counter(
            names.LLM_UNPRICED, "LLM calls with usage but no known price (cost NULL).", ("model",)
        )
        self.llm_duration = histogram(names.LLM_DURATION, "Duration of LLM calls.", llm, DURATION_BUCKETS)
        self.llm_ttft = histogram(
            names.LLM_TTFT,
            "Time to the first streamed token of LLM calls.",
            ("model", "provider"),
            DURATION_BUCKETS,
        )
        self.tool_calls = counter(names.TOOL_CALLS, "Tool calls.", ("tool", "status"))
        self.tool_duration = histogram(
            names.TOOL_DURATION, "Duration of tool calls.", ("tool", "status"), DURATION_BUCKETS
        )
        self.retrievals = counter(names.RETRIEVALS, "Retriever calls.", ("retriever", "status"))
        self.retrieved_documents = histogram(
            names.RETRIEVED_DOCUMENTS,
            "Documents returned per retrieval (le=0: empty retrievals).",
            ("retriever", "status"),
            DOCUMENT_BUCKETS,
        )
        self.branch_decisions = counter(
            names.BRANCH_DECISIONS, "LangGraph routing decisions.", ("graph", "from_node", "to_node")
        )
        self.traces = counter(names.TRACES, "Traces (root runs).", ("root", "status"))
        self.trace_duration = histogram(
            names.TRACE_DURATION, "Duration of traces (root runs).", ("root", "status"), DURATION_BUCKETS
        )
        self.quality_score = histogram(
            names.QUALITY_SCORE,
            "Quality scores (judge, rules, feedback).",
            ("metric", "prompt_version"),
            SCORE_BUCKETS,
        )
        self.judge_evaluations = counter(names.JUDGE_EVALUATIONS, "LLM-as-judge evaluations.", ("status",))
        self.feedback = counter(names.FEEDBACK, "User feedback.", ("rating",))
        self.spans_dropped = counter(names.SPANS_DROPPED, "Spans dropped, by reason.", ("reason",))
        self.handler_errors = counter(
            names.HANDLER_ERRORS, "Internal errors of the instrumentation, by reason.", ("reason",)
        )
        self.spans_dropped.labels(reason="queue_full")  # a series from the start: rate() works
        # Who is reporting: service and environment are per process (LLMObs(service=...)), so
        # they are not labels of every series; dashboards select job/instance through this one.
        # multiprocess: "max" aggregates the workers' 1s without a mark_process_dead hook.
        self.info = Gauge(
            names.INFO,
            "1 for each service and environment of the LLMObs instances of this process.",
            ("service", "environment"),
            registry=registry,
            multiprocess_mode="max",
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # (model, provider, prompt_version, status) as the span has them -> the LLM metrics'
        # children for those labels: one lookup per LLM span instead of four label bounds and
        # up to ten child lookups. Only combinations whose labels were all admitted are kept,
        # so every value that overflows to __other__ is still counted once per span.
        self._llm_series: dict[tuple[Any, ...], _LLMSeries] = {}

    def _child(self, metric: Counter | Histogram, *values: str) -> Any:
        """``metric.labels(*values)``, cached: label values are bounded, and this is the hot part."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # -- spans -----------------------------------------------------------------------------------

    def record(self, span: SpanRecord, updates: _BatchUpdates | None = None) -> None:
        """Update the metrics for one prepared span (into ``updates`` when given: the caller
        applies them, once per series, after the whole batch)."""
        now = updates is None
        if now:
            updates = _BatchUpdates()
        kind = span.kind
        if kind == SpanKind.LLM:
            self._record_llm(span, updates)
        elif kind == SpanKind.TOOL:
            self._record_tool(span, updates)
        elif kind == SpanKind.RETRIEVER:
            self._record_retrieval(span, updates)
        lab = self.labels
        for d in span.branch_decisions or ():
            updates.inc(
                self._child(
                    self.branch_decisions,
                    lab("graph", d.graph),
                    lab("from_node", d.from_node),
                    lab("to_node", d.to_node),
                )
            )
        if span.parent_span_id is None and not span.internal:  # requests: the judge's are not
            root, status = lab("root", span.name), _status(span)
            updates.inc(self._child(self.traces, root, status))
            latency = span.latency_ms
            if latency is not None:
                updates.observe(self._child(self.trace_duration, root, status), latency / 1e3, span.trace_id)
        if now:
            updates.apply()

    def record_batch(self, spans: Sequence[SpanRecord], on_error: Callable[[Exception], None]) -> None:
        """``record`` for every span, the updates applied once per series at the end."""
        updates = _BatchUpdates()
        record = self.record
        try:
            for span in spans:
                try:
                    record(span, updates)
                except Exception as exc:  # noqa: BLE001 - one odd span must not cost the batch its metrics
                    on_error(exc)
        finally:
            updates.apply()  # what was recorded before an error re-raised by on_error counts

    def count_branch_decision(self, graph: str, from_node: str, to_node: str) -> None:
        lab = self.labels
        self._child(
            self.branch_decisions, lab("graph", graph), lab("from_node", from_node), lab("to_node", to_node)
        ).inc()

    def _record_llm(self, span: SpanRecord, updates: _BatchUpdates) -> None:
        status = _status(span)
        key = (span.model, span.provider, span.prompt_version, status)
        series = self._llm_series.get(key)
        if series is None:
            series = self._new_llm_series(span, status)
            if series.cacheable and len(self._llm_series) < _LLM_SERIES_CACHE_MAX:
                self._llm_series[key] = series
        child, trace_id = series.child, span.trace_id
        updates.inc(child("requests"))
        latency = span.latency_ms
        if latency is not None:
            updates.observe(child("duration"), latency / 1e3, trace_id)
        ttft = span.ttft_ms
        if ttft is not None:
            updates.observe(child("ttft"), max(ttft, 0.0) / 1e3)
        usage = span.usage
        if usage is not None:
            for token_type, value in (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cached_input", usage.cached_input_tokens),
                ("reasoning", usage.reasoning_tokens),
            ):
                if value is not None and value >= 0:
                    updates.inc(child(token_type), value)
                    if token_type in ("input", "output"):
                        updates.observe(child(_TOKEN_USAGE[token_type]), value)
        cost = span.cost_usd
        if cost is not None:
            if cost >= 0:
                updates.inc(child("cost"), cost, trace_id)
        elif usage is not None and span.model:
            # The preparer's rule for "unpriced" (Diagnostics.unpriced counts the same spans).
            updates.inc(child("unpriced"))

    def _new_llm_series(self, span: SpanRecord, status: str) -> _LLMSeries:
        lab = self.labels
        model, provider = lab.model(span.model), lab("provider", _lower(span.provider))
        version = lab("prompt_version", span.prompt_version)
        return _LLMSeries(self, model, provider, version, status)

    def _record_tool(self, span: SpanRecord, updates: _BatchUpdates) -> None:
        labels = (self.labels("tool", span.name), _status(span))
        updates.inc(self._child(self.tool_calls, *labels))
        latency = span.latency_ms
        if latency is not None:
            updates.observe(self._child(self.tool_duration, *labels), latency / 1e3)

    def _record_retrieval(self, span: SpanRecord, updates: _BatchUpdates) -> None:
        labels = (self.labels("retriever", span.name), _status(span))
        updates.inc(self._child(self.retrievals, *labels))
        if span.documents is not None:  # the retrieval returned (failed ones return no list)
            updates.observe(self._child(self.retrieved_documents, *labels), len(span.documents))

    def announce(self, service: str | None, environment: str | None) -> None:
        """Set ``llmobs_info{service, environment}`` (``none`` when not given) to 1."""
        self.info.labels(self.labels("service", service), self.labels("environment", environment)).set(1)

    # -- scores, judge, feedback (called by the judge and feedback code) ---------------------------

    def observe_score(
        self, metric: str, value: float, prompt_version: str | None = None, *, trace_id: object = None
    ) -> None:
        labels = (self.labels("metric", metric), self.labels("prompt_version", prompt_version))
        self._child(self.quality_score, *labels).observe(float(value), _exemplar(trace_id))

    def count_judge_evaluation(self, status: str = "ok") -> None:
        self._child(self.judge_evaluations, self.labels("status", status)).inc()

    def count_feedback(self, rating: str) -> None:
        self._child(self.feedback, self.labels("rating", rating)).inc()

    # -- diagnostics -----------------------------------------------------------------------------

    def _attach(self, exporter: PrometheusExporter) -> None:
        with self._live_lock:
            self._live.add(exporter)

    def _detach(self, exporter: PrometheusExporter) -> None:
        with self._live_lock:
            self._live.discard(exporter)

    def sync_diagnostics(self) -> None:
        """Copy every live exporter's Diagnostics counters into the Prometheus counters."""
        with self._live_lock:
            exporters = list(self._live)
        for exporter in exporters:
            exporter.sync_diagnostics()


class _DiagnosticsSync:
    """A collector with no metrics of its own: a scrape first brings the counters up to date."""

    def __init__(self, metrics: LLMObsMetrics) -> None:
        self._metrics = weakref.ref(metrics)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        metrics = self._metrics()
        if metrics is not None:
            try:
                metrics.sync_diagnostics()
            except Exception:  # a scrape must still answer
                logger.debug("llmobs: diagnostics sync failed", exc_info=True)
        return []


# The metric set lives on its registry (an attribute), so it goes away with the registry.
_METRICS_ATTR = "_llmobs_metrics"
_BY_REGISTRY_LOCK = threading.Lock()


def metrics_for(
    registry: CollectorRegistry | None = None,
    *,
    label_limit: int | Mapping[str, int] = DEFAULT_LABEL_LIMIT,
    model_normalizer: Callable[[str], str] | None = normalize_model_name,
) -> LLMObsMetrics:
    """The metric set of ``registry`` (default: prometheus-client's global one), created once.

    Label settings apply when the set is created; later calls get the existing set.
    """
    registry = REGISTRY if registry is None else registry
    with _BY_REGISTRY_LOCK:
        metrics: LLMObsMetrics | None = getattr(registry, _METRICS_ATTR, None)
        if metrics is None:
            limiter = LabelLimiter(label_limit, model_normalizer=model_normalizer)
            metrics = LLMObsMetrics(registry, limiter)
            setattr(registry, _METRICS_ATTR, metrics)
        return metrics


_LLM_SERIES_CACHE_MAX = 4096
_TOKEN_USAGE = {"input": "input_usage", "output": "output_usage"}


class _LLMSeries:
    """The LLM metrics' children for one (model, provider, prompt_version, status), each made
    on first use: a series appears in the exposition only once something was counted in it."""

    __slots__ = ("_metrics", "_labels", "_children", "cacheable")

    def __init__(self, metrics: LLMObsMetrics, model: str, provider: str, version: str, status: str) -> None:
        self._metrics = metrics
        self._labels = (model, provider, version, status)
        self._children: dict[str, Any] = {}
        self.cacheable = OTHER not in self._labels

    def child(self, name: str) -> Any:
        found = self._children.get(name)
        if found is None:
            found = self._children[name] = self._make(name)
        return found

    def _make(self, name: str) -> Any:
        m, (model, provider, version, status) = self._metrics, self._labels
        if name == "requests":
            return m._child(m.llm_requests, model, provider, version, status)
        if name == "duration":
            return m._child(m.llm_duration, model, provider, version)
        if name == "ttft":
            return m._child(m.llm_ttft, model, provider)
        if name in ("input_usage", "output_usage"):
            return m._child(m.llm_token_usage, model, provider, name.removesuffix("_usage"))
        if name == "cost":
            return m._child(m.llm_cost, model, provider, version)
        if name == "unpriced":
            return m._child(m.llm_unpriced, model)
        return m._child(m.llm_tokens, model, provider, version, name)  # a token type


class _BatchUpdates:
    """One batch's metric updates, applied once per series by ``apply``.

    prometheus-client takes a lock (and validates an exemplar) on every ``inc``/``observe``:
    ~4 µs each, ten per LLM span, the largest cost of ingesting LLM spans. Summed per series
    over a batch, a scrape sees the same counts, sums and bucket counts (float sums may differ
    in the last bit: addition order), and each series keeps the batch's last exemplar, as
    sequential calls would leave it. Exemplars are given as trace ids and built only for the
    values that keep one.
    """

    __slots__ = ("counts", "observations")

    def __init__(self) -> None:
        # child -> [amount without exemplar, last exemplar's amount, last exemplar's trace id]
        self.counts: dict[Any, list[Any]] = {}
        self.observations: dict[Any, list[tuple[float, object]]] = {}

    def inc(self, child: Any, amount: float = 1, exemplar: object = None) -> None:
        entry = self.counts.get(child)
        if entry is None:
            entry = self.counts[child] = [0, 0, None]
        if exemplar is None:
            entry[0] += amount
        else:
            entry[0] += entry[1]
            entry[1], entry[2] = amount, exemplar

    def observe(self, child: Any, value: float, exemplar: object = None) -> None:
        values = self.observations.get(child)
        if values is None:
            self.observations[child] = [(value, exemplar)]
        else:
            values.append((value, exemplar))

    def apply(self) -> None:
        for child, (amount, exemplar_amount, exemplar) in self.counts.items():
            if amount:
                child.inc(amount)
            if exemplar is not None:
                child.inc(exemplar_amount, _exemplar(exemplar))
        for child, values in self.observations.items():
            _observe_many(child, values)
        self.counts, self.observations = {}, {}


def _observe_many(child: Any, values: list[tuple[float, object]]) -> None:
    """``child.observe(v, exemplar)`` for every value, with one update per bucket.

    Uses the histogram child's value cells (``_upper_bounds``, ``_buckets``, ``_sum``, stable
    since prometheus-client 0.4; not public API): falls back to ``observe`` unless they are there
    in the shape used here (``_value_cells``).
    """
    cells = _value_cells(child)
    if cells is None:
        for value, exemplar in values:
            child.observe(value, _exemplar(exemplar))
        return
    bounds, buckets, total_cell = cells
    counts = [0] * len(bounds)
    exemplars: dict[int, tuple[object, float]] = {}
    total = 0.0
    for value, exemplar in values:
        if value != value:  # NaN lands in no bucket: observe() knows what to do with it
            child.observe(value, _exemplar(exemplar))
            continue
        i = bisect_left(bounds, value)  # observe(): the first bucket with value <= bound
        counts[i] += 1
        total += value
        if exemplar is not None:
            exemplars[i] = (exemplar, value)
    total_cell.inc(total)
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)
    now = time.time()
    for i, (exemplar, value) in exemplars.items():
        buckets[i].set_exemplar(Exemplar(_exemplar(exemplar), value, now))


def _value_cells(child: Any) -> tuple[Sequence[float], Sequence[Any], Any] | None:
    """The histogram child's (bounds, per-bucket value cells, sum cell) when prometheus-client
    keeps them as ``observe`` updates them — one non-cumulative cell per bound, the last bound
    +Inf, cells with ``inc`` and ``set_exemplar`` — else None (a release that changed them)."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total_cell = getattr(child, "_sum", None)
    try:
        if not bounds or bounds[-1] != math.inf or len(bounds) != len(buckets):
            return None
        first = buckets[0]
    except (TypeError, IndexError, KeyError):
        return None
    usable = callable(getattr(total_cell, "inc", None)) and callable(getattr(first, "inc", None))
    if not usable or not callable(getattr(first, "set_exemplar", None)):
        return None
    return bounds, buckets, total_cell


def _status(span: SpanRecord) -> str:
    return "error" if span.status == STATUS_ERROR else "ok"


def _lower(value: str | None) -> str | None:
    return value.lower() if value else value
