"""Prometheus metrics from a store, for ``llmobs serve-metrics``.

For apps that cannot serve ``/metrics`` themselves (batch jobs, serverless functions, several
hosts writing one PostgreSQL store): a separate process polls the store for spans and routing
decisions stored since it started (or ``since``) and feeds them to a ``PrometheusExporter``,
so the counters and histograms are the same ones an in-process exporter would produce. Use
either this or in-process metrics for a given app, not both, or every call is counted twice.

The spans table has no insertion sequence, so each poll re-reads spans that *started* in the
last ``overlap_s`` seconds before the newest one seen (an index range on ``start_time``) and
skips those already counted: a span stored more than ``overlap_s`` after it started (a very
long agent run, a writer far behind) is not counted. Drops and internal errors of the writing
process are not in the store, so ``llmobs_spans_dropped_total`` stays at 0 here.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..model import SpanRecord, TokenUsage
from .prometheus import PrometheusExporter
from .tables import TABLES

_T = {t.name: t for t in TABLES}
_SPANS, _DOCS, _BRANCHES = _T["spans"], _T["retrieved_documents"], _T["branch_decisions"]
_SPAN_COLUMNS = [
    _SPANS.c[name]
    for name in (
        "span_id",
        "trace_id",
        "parent_span_id",
        "kind",
        "name",
        "status",
        "start_time",
        "latency_ms",
        "ttft_ms",
        "model",
        "provider",
        "prompt_version",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "total_tokens",
        "cost_usd",
    )
]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class StoreMetricsFeed:
    """Polls a store and feeds new spans and routing decisions to ``exporter``."""

    def __init__(
        self,
        engine: Engine,
        exporter: PrometheusExporter,
        *,
        since: datetime | None = None,
        overlap_s: float = 600.0,
        chunk_size: int = 2000,
    ) -> None:
        self._engine = engine
        self._exporter = exporter
        self._overlap = timedelta(seconds=overlap_s)
        self._chunk = chunk_size
        start = _aware(since) if since is not None else datetime.now(timezone.utc)
        # Spans and decisions stored from ``start`` on count; the overlap only re-reads.
        self._floor = start
        self._span_mark = start
        self._branch_mark = start
        self._seen_spans: dict[str, datetime] = {}
        self._seen_branches: dict[str, datetime] = {}

    def poll(self) -> int:
        """Export what was stored since the last poll; returns the number of spans exported."""
        with self._engine.connect() as conn:
            exported = self._poll_spans(conn)
            self._poll_branches(conn)
        return exported

    def _poll_spans(self, conn: sa.Connection) -> int:
        lower = max(self._floor, self._span_mark - self._overlap)
        query = sa.select(*_SPAN_COLUMNS).where(_SPANS.c.start_time >= lower).order_by(_SPANS.c.start_time)
        exported = 0
        result = conn.execution_options(stream_results=True).execute(query)
        for rows in result.partitions(self._chunk):
            fresh = []
            for row in rows:
                start = _aware(row.start_time)
                if row.span_id in self._seen_spans:
                    continue
                self._seen_spans[row.span_id] = start
                self._span_mark = max(self._span_mark, start)
                fresh.append(row)
            if fresh:
                spans = self._spans(conn, fresh)
                self._exporter.export(spans)
                exported += len(spans)
        self._prune(self._seen_spans, self._span_mark - self._overlap)
        return exported

    def _spans(self, conn: sa.Connection, rows: list[sa.Row]) -> list[SpanRecord]:
        retrievers = [r.span_id for r in rows if r.kind == "retriever" and r.status == "ok"]
        doc_counts: dict[str, int] = {}
        if retrievers:
            query = (
                sa.select(_DOCS.c.span_id, sa.func.count())
                .where(_DOCS.c.span_id.in_(retrievers))
                .group_by(_DOCS.c.span_id)
            )
            doc_counts = {span_id: n for span_id, n in conn.execute(query)}
        spans = []
        for r in rows:
            start_ns = int(_aware(r.start_time).timestamp() * 1e9)
            span = SpanRecord(r.span_id, r.trace_id, r.parent_span_id, r.kind, r.name, "store", start_ns)
            span.status = r.status
            if r.latency_ms is not None:
                span.end_ns = start_ns + int(r.latency_ms * 1e6)
            if r.ttft_ms is not None:
                span.first_token_ns = start_ns + int(r.ttft_ms * 1e6)
            # the stored model is already the grouping key (pricing.model_key), as in-process
            span.model, span.provider, span.prompt_version = r.model, r.provider, r.prompt_version
            usage = TokenUsage(
                r.input_tokens,
                r.output_tokens,
                r.cached_input_tokens,
                r.cache_write_tokens,
                r.reasoning_tokens,
                r.total_tokens,
            )
            span.usage = None if usage.is_empty() else usage
            span.cost_usd = r.cost_usd
            if r.kind == "retriever" and r.status == "ok":
                span.documents = [None] * doc_counts.get(r.span_id, 0)  # only the count is used
            spans.append(span)
        return spans

    def _poll_branches(self, conn: sa.Connection) -> None:
        lower = max(self._floor, self._branch_mark - self._overlap)
        query = sa.select(
            _BRANCHES.c.id,
            _BRANCHES.c.graph,
            _BRANCHES.c.from_node,
            _BRANCHES.c.to_node,
            _BRANCHES.c.created_at,
        ).where(_BRANCHES.c.created_at >= lower)
        metrics = self._exporter.metrics
        for row in conn.execute(query):
            if row.id in self._seen_branches:
                continue
            created = _aware(row.created_at)
            self._seen_branches[row.id] = created
            self._branch_mark = max(self._branch_mark, created)
            metrics.count_branch_decision(row.graph, row.from_node, row.to_node)
        self._prune(self._seen_branches, self._branch_mark - self._overlap)

    @staticmethod
    def _prune(seen: dict[str, datetime], before: datetime) -> None:
        for key in [k for k, t in seen.items() if t < before]:
            del seen[key]
