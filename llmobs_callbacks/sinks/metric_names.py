"""Every Prometheus metric name of llmobs-callbacks, in one place.

The names are a public contract (the README's metrics table, DESIGN.md): the exporter
(``sinks/prometheus.py``), the spool and store collector (``sinks/durable.py``), the budget
gauges (``budget.py``), the Grafana dashboard and the alert rules (``dashboards/``) all take
them from here. They are written as PromQL sees them: counters end in ``_total`` (prometheus-client
registers a counter family without the suffix, see :func:`family`); a histogram's series are
``<name>_bucket``, ``_sum`` and ``_count``.
"""

from __future__ import annotations

PREFIX = "llmobs_"

# -- spans (PrometheusExporter) -------------------------------------------------------------------
LLM_REQUESTS = "llmobs_llm_requests_total"
LLM_TOKENS = "llmobs_llm_tokens_total"
LLM_TOKEN_USAGE = "llmobs_llm_token_usage"  # histogram: tokens per call (OTel gen_ai.client.token.usage)
LLM_COST = "llmobs_llm_cost_usd_total"
LLM_UNPRICED = "llmobs_llm_unpriced_requests_total"
LLM_DURATION = "llmobs_llm_duration_seconds"
LLM_TTFT = "llmobs_llm_time_to_first_token_seconds"
TOOL_CALLS = "llmobs_tool_calls_total"
TOOL_DURATION = "llmobs_tool_duration_seconds"
RETRIEVALS = "llmobs_retrievals_total"
RETRIEVED_DOCUMENTS = "llmobs_retrieved_documents"
BRANCH_DECISIONS = "llmobs_branch_decisions_total"
TRACES = "llmobs_traces_total"
TRACE_DURATION = "llmobs_trace_duration_seconds"
# -- scores, judge, feedback ----------------------------------------------------------------------
QUALITY_SCORE = "llmobs_quality_score"
JUDGE_EVALUATIONS = "llmobs_judge_evaluations_total"
FEEDBACK = "llmobs_feedback_total"
# -- pipeline health -------------------------------------------------------------------------------
SPANS_DROPPED = "llmobs_spans_dropped_total"
HANDLER_ERRORS = "llmobs_handler_errors_total"
INFO = "llmobs_info"  # gauge, 1 per (service, environment) of the process's LLMObs instances
# -- the writer's spool and store (DurableSQLExporter; computed at scrape time) --------------------
SPOOL_SPANS_WRITTEN = "llmobs_spool_spans_written_total"
SPOOL_SPANS_REPLAYED = "llmobs_spool_spans_replayed_total"
SPOOL_PENDING_SPANS = "llmobs_spool_pending_spans"
STORE_WRITE_FAILURES = "llmobs_store_write_failures_total"
STORE_OUTAGES = "llmobs_store_outages_total"
STORE_AVAILABLE = "llmobs_store_available"
STORE_STATE = "llmobs_store_state"  # gauge {state}: 1 for the writer's breaker state (up/degraded/down)
SPOOL_BYTES = "llmobs_spool_bytes"
SPOOL_OLDEST_AGE = "llmobs_spool_oldest_span_age_seconds"
SPOOL_SPANS_SPILLED = "llmobs_spool_spans_spilled_total"  # queue past its high-water mark
VALUES_SANITIZED = "llmobs_values_sanitized_total"  # {reason}: NUL bytes, lone surrogates… replaced
# -- budgets (BudgetTracker; only with LLMObs(budget_usd=...)) ------------------------------------
BUDGET = "llmobs_budget_usd"
BUDGET_SPEND = "llmobs_budget_spend_usd"

COUNTERS = (
    LLM_REQUESTS,
    LLM_TOKENS,
    LLM_COST,
    LLM_UNPRICED,
    TOOL_CALLS,
    RETRIEVALS,
    BRANCH_DECISIONS,
    TRACES,
    JUDGE_EVALUATIONS,
    FEEDBACK,
    SPANS_DROPPED,
    HANDLER_ERRORS,
    SPOOL_SPANS_WRITTEN,
    SPOOL_SPANS_REPLAYED,
    STORE_WRITE_FAILURES,
    STORE_OUTAGES,
    SPOOL_SPANS_SPILLED,
    VALUES_SANITIZED,
)
HISTOGRAMS = (
    LLM_TOKEN_USAGE,
    LLM_DURATION,
    LLM_TTFT,
    TOOL_DURATION,
    RETRIEVED_DOCUMENTS,
    TRACE_DURATION,
    QUALITY_SCORE,
)
GAUGES = (
    INFO,
    SPOOL_PENDING_SPANS,
    STORE_AVAILABLE,
    STORE_STATE,
    SPOOL_BYTES,
    SPOOL_OLDEST_AGE,
    BUDGET,
    BUDGET_SPEND,
)
ALL = (*COUNTERS, *HISTOGRAMS, *GAUGES)

# The series the exporter attaches ``{trace_id}`` exemplars to (OpenMetrics scrapes only): the
# dashboard asks Grafana for exemplars on exactly the panels that query one of these.
EXEMPLAR_SERIES = (
    f"{LLM_DURATION}_bucket",
    f"{TRACE_DURATION}_bucket",
    LLM_COST,
    f"{QUALITY_SCORE}_bucket",
)


def family(name: str) -> str:
    """The family name prometheus-client reports for ``name`` (``registry.collect()``): a
    counter's without its ``_total``."""
    return name.removesuffix("_total") if name in COUNTERS else name
