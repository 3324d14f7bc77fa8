"""A Grafana dashboard and Prometheus alerting rules for the ``llmobs_*`` metrics, as code.

Both are generated from :class:`Thresholds`, so budgets and limits are configurable
(``llmobs export-grafana`` / ``llmobs export-alerts``); the files generated with the defaults
ship in the package (``llmobs_callbacks/assets/``, see :func:`asset_path`). Regenerate them
after changing this module: ``python -m llmobs_callbacks.dashboards``.

Every PromQL expression here is checked against a real Prometheus by the test-suite
(``tests/test_prometheus_integration.py``) and every alert by ``promtool test rules``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

DASHBOARD_FILE = "grafana-dashboard.json"
ALERTS_FILE = "prometheus-alerts.yml"
DASHBOARD_UID = "llmobs-overview"

# Metric names (DESIGN.md, "Prometheus metrics"); sample names as Prometheus stores them.
REQUESTS = "llmobs_llm_requests_total"
TOKENS = "llmobs_llm_tokens_total"
TOKEN_USAGE = "llmobs_llm_token_usage"
COST = "llmobs_llm_cost_usd_total"
UNPRICED = "llmobs_llm_unpriced_requests_total"
DURATION = "llmobs_llm_duration_seconds"
TTFT = "llmobs_llm_time_to_first_token_seconds"
TOOL_CALLS = "llmobs_tool_calls_total"
TOOL_DURATION = "llmobs_tool_duration_seconds"
RETRIEVALS = "llmobs_retrievals_total"
RETRIEVED_DOCS = "llmobs_retrieved_documents"
BRANCHES = "llmobs_branch_decisions_total"
TRACES = "llmobs_traces_total"
TRACE_DURATION = "llmobs_trace_duration_seconds"
QUALITY = "llmobs_quality_score"
JUDGE = "llmobs_judge_evaluations_total"
FEEDBACK = "llmobs_feedback_total"
DROPPED = "llmobs_spans_dropped_total"
HANDLER_ERRORS = "llmobs_handler_errors_total"

# The le="0" bucket of the documents histogram, as Prometheus 2 ("0.0") and 3 ("0") store it.
EMPTY_BUCKET = 'le=~"0|0.0"'
ERROR = 'status="error"'
IN_OUT = 'type=~"input|output"'
HALLUCINATION = 'metric="hallucination"'
FAITHFULNESS = 'metric="faithfulness"'


@dataclass(frozen=True)
class Thresholds:
    """Limits used by the alert rules (and drawn as thresholds on the dashboard)."""

    p99_latency_s: float = 10.0
    error_rate: float = 0.02
    hourly_cost_budget_usd: float = 10.0
    cost_spike_factor: float = 2.0  # hourly cost > factor × its 24 h average
    token_increase: float = 0.5  # average tokens per request +50 % over the 24 h baseline
    branch_shift: float = 0.20  # a branch's share moves by 20 percentage points
    branch_min_decisions: int = 20  # per hour and (graph, from_node), before the share counts
    tool_failure_rate: float = 0.10
    hallucination_rate: float = 0.05  # hallucination scores are 0/1, 1 = hallucinated
    min_faithfulness: float = 3.5  # faithfulness scores on a 1-5 scale
    pending: str = "10m"  # how long a condition must hold before the alert fires
    selector: str = ""  # extra label matchers for every metric, e.g. 'job="support-bot"'
    extra_labels: dict[str, str] = field(default_factory=dict)  # added to every alert


def _sel(metric: str, *matchers: str, selector: str = "") -> str:
    parts = [m for m in (*matchers, selector) if m]
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def _fmt(value: float) -> str:
    return f"{value:g}"


def _pct(value: float) -> str:
    return f"{value * 100:g} %"


# -- alert rules ----------------------------------------------------------------------------------


def alert_rules(t: Thresholds | None = None) -> dict[str, Any]:
    """Prometheus alerting rules (the structure of a rules file) for thresholds ``t``."""
    t = t or Thresholds()

    def s(metric: str, *matchers: str) -> str:
        return _sel(metric, *matchers, selector=t.selector)

    def rule(name: str, expr: str, severity: str, summary: str, description: str, pending: str | None = None):
        return {
            "alert": name,
            "expr": expr,
            "for": t.pending if pending is None else pending,
            "labels": {"severity": severity, **t.extra_labels},
            "annotations": {"summary": summary, "description": description},
        }

    def ratio(metric: str, by: str, window: str, num: str = "", den: str = "") -> str:
        return (
            f"sum by ({by}) (rate({s(metric, num) if num else s(metric)}[{window}]))\n"
            f"  / sum by ({by}) (rate({s(metric, den) if den else s(metric)}[{window}]))"
        )

    def mean(metric: str, by: str, window: str, matcher: str = "") -> str:
        return (
            f"sum by ({by}) (rate({s(metric + '_sum', matcher)}[{window}]))\n"
            f"  / sum by ({by}) (rate({s(metric + '_count', matcher)}[{window}]))"
        )

    def share(window: str) -> str:
        return (
            f"sum by (graph, from_node, to_node) (increase({s(BRANCHES)}[{window}]))\n"
            f"    / on (graph, from_node) group_left\n"
            f"  sum by (graph, from_node) (increase({s(BRANCHES)}[{window}]))"
        )

    rules = [
        rule(
            "LLMObsHighLatencyP99",
            f"histogram_quantile(0.99, sum by (model, le) (rate({s(DURATION + '_bucket')}[5m])))\n"
            f"  > {_fmt(t.p99_latency_s)}",
            "warning",
            f"p99 latency of {{{{ $labels.model }}}} above {_fmt(t.p99_latency_s)} s",
            f"The 99th percentile of LLM call duration for model {{{{ $labels.model }}}} has been above "
            f"{_fmt(t.p99_latency_s)} s for {t.pending} (llmobs_llm_duration_seconds, 5 min rate).",
        ),
        rule(
            "LLMObsHighErrorRate",
            f"(\n{ratio(REQUESTS, 'model', '5m', num=ERROR)}\n) > {_fmt(t.error_rate)}",
            "critical",
            f"LLM error rate of {{{{ $labels.model }}}} above {_pct(t.error_rate)}",
            f"More than {_pct(t.error_rate)} of the LLM calls to {{{{ $labels.model }}}} failed over the "
            f'last 5 min, for {t.pending} (llmobs_llm_requests_total{{status="error"}}).',
        ),
        rule(
            "LLMObsHourlyCostOverBudget",
            f"sum(increase({s(COST)}[1h])) > {_fmt(t.hourly_cost_budget_usd)}",
            "critical",
            f"LLM cost over the last hour above ${_fmt(t.hourly_cost_budget_usd)}",
            f"LLM spend in the last hour exceeds the hourly budget of ${_fmt(t.hourly_cost_budget_usd)} "
            "(llmobs_llm_cost_usd_total).",
        ),
        rule(
            "LLMObsHourlyCostSpike",
            f"sum(increase({s(COST)}[1h]))\n"
            f"  > {_fmt(t.cost_spike_factor)} * sum(increase({s(COST)}[1d])) / 24\n"
            f"and on () count({s(COST)} offset 23h) > 0",
            "warning",
            f"LLM cost in the last hour above {_fmt(t.cost_spike_factor)}x its 24 h average",
            f"The last hour's LLM spend is more than {_fmt(t.cost_spike_factor)} times the hourly average "
            "of the last 24 h (llmobs_llm_cost_usd_total; needs 24 h of history).",
        ),
        rule(
            "LLMObsTokensPerRequestIncrease",
            f"(\n{mean(TOKEN_USAGE, 'model, type', '1h')}\n)\n"
            f"  > {_fmt(1 + t.token_increase)} * (\n{mean(TOKEN_USAGE, 'model, type', '1d')}\n)\n"
            f"and on (model, type) sum by (model, type) ({s(TOKEN_USAGE + '_count')} offset 23h) > 0",
            "warning",
            f"{{{{ $labels.type }}}} tokens per request of {{{{ $labels.model }}}} up "
            f"{_pct(t.token_increase)} over the 24 h baseline",
            f"Average {{{{ $labels.type }}}} tokens per LLM call of {{{{ $labels.model }}}} in the last hour "
            f"are more than {_pct(t.token_increase)} above their 24 h average (llmobs_llm_token_usage).",
        ),
        rule(
            "LLMObsBranchMixShift",
            f"abs(\n  ({share('1h')})\n  -\n  ({share('1d')})\n) > {_fmt(t.branch_shift)}\n"
            f"and on (graph, from_node)\n"
            f"  sum by (graph, from_node) (increase({s(BRANCHES)}[1h])) >= {t.branch_min_decisions}",
            "warning",
            "Routing {{ $labels.graph }}: {{ $labels.from_node }} -> {{ $labels.to_node }} share moved "
            f"more than {_fmt(t.branch_shift * 100)} points",
            "The share of LangGraph routing decisions from {{ $labels.from_node }} to {{ $labels.to_node }} "
            f"in graph {{{{ $labels.graph }}}} over the last hour differs by more than "
            f"{_fmt(t.branch_shift * 100)} percentage points from its 24 h share "
            "(llmobs_branch_decisions_total).",
        ),
        rule(
            "LLMObsToolFailureRate",
            f"(\n{ratio(TOOL_CALLS, 'tool', '15m', num=ERROR)}\n) > {_fmt(t.tool_failure_rate)}",
            "warning",
            f"Tool {{{{ $labels.tool }}}} fails more than {_pct(t.tool_failure_rate)} of its calls",
            f"More than {_pct(t.tool_failure_rate)} of the calls to tool {{{{ $labels.tool }}}} failed over "
            "the last 15 min (llmobs_tool_calls_total).",
        ),
        rule(
            "LLMObsHallucinationRate",
            f"(\n{mean(QUALITY, 'prompt_version', '1h', HALLUCINATION)}\n) > {_fmt(t.hallucination_rate)}",
            "warning",
            f"Hallucination rate of prompt version {{{{ $labels.prompt_version }}}} above "
            f"{_pct(t.hallucination_rate)}",
            f"More than {_pct(t.hallucination_rate)} of the judged answers of prompt version "
            "{{ $labels.prompt_version }} were hallucinations over the last hour "
            '(llmobs_quality_score{metric="hallucination"}, 1 = hallucinated).',
        ),
        rule(
            "LLMObsLowFaithfulness",
            f"(\n{mean(QUALITY, 'prompt_version', '1h', FAITHFULNESS)}\n) < {_fmt(t.min_faithfulness)}",
            "warning",
            f"Average faithfulness of prompt version {{{{ $labels.prompt_version }}}} below "
            f"{_fmt(t.min_faithfulness)}",
            "The average judged faithfulness (1-5) of prompt version {{ $labels.prompt_version }} over "
            f"the last hour is below {_fmt(t.min_faithfulness)} "
            '(llmobs_quality_score{metric="faithfulness"}).',
        ),
        rule(
            "LLMObsSpansDropped",
            f"sum by (reason) (increase({s(DROPPED)}[10m])) > 0",
            "warning",
            "llmobs dropped spans ({{ $labels.reason }})",
            "The observability pipeline dropped spans in the last 10 min (reason {{ $labels.reason }}): "
            "traces and metrics are incomplete. queue_full means the store cannot keep up.",
            pending="0m",
        ),
    ]
    return {"groups": [{"name": "llmobs", "rules": rules}]}


# -- Grafana dashboard ----------------------------------------------------------------------------

_DS = {"type": "prometheus", "uid": "${datasource}"}
_LLM_FILTER = 'model=~"$model", prompt_version=~"$prompt_version"'
_MODEL_FILTER = 'model=~"$model"'
_PV_FILTER = 'prompt_version=~"$prompt_version"'
_RATE = "[$__rate_interval]"


def grafana_dashboard(
    t: Thresholds | None = None, *, title: str = "LLM observability (llmobs)"
) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) over the ``llmobs_*`` metrics, with a data-source variable."""
    t = t or Thresholds()

    def s(metric: str, *matchers: str) -> str:
        return _sel(metric, *matchers, selector=t.selector)

    def quantiles(metric: str, matchers: str, by: str = "") -> list[tuple[str, str]]:
        group = f"{by}, le" if by else "le"
        legend = f"{{{{{by}}}}} " if by else ""
        return [
            (
                f"histogram_quantile({q}, sum by ({group}) (rate({s(metric + '_bucket', matchers)}{_RATE})))",
                f"{legend}p{int(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ]

    def mean(metric: str, by: str, matchers: str = "") -> str:
        return (
            f"sum by ({by}) (rate({s(metric + '_sum', matchers)}{_RATE}))"
            f" / sum by ({by}) (rate({s(metric + '_count', matchers)}{_RATE}))"
        )

    requests = s(REQUESTS, _LLM_FILTER)
    errors = s(REQUESTS, ERROR, _LLM_FILTER)
    tools, tool_errors = s(TOOL_CALLS), s(TOOL_CALLS, ERROR)
    cost = s(COST, _LLM_FILTER)
    spec: list[dict[str, Any]] = [
        {"row": "Requests and errors"},
        _panel(
            "LLM requests per second",
            [(f"sum by (model, status) (rate({requests}{_RATE}))", "{{model}} {{status}}")],
            unit="reqps",
        ),
        _panel(
            "LLM error rate",
            [(f"(sum(rate({errors}{_RATE})) or vector(0)) / sum(rate({requests}{_RATE}))", "error rate")],
            unit="percentunit",
            threshold=t.error_rate,
        ),
        _panel(
            "Traces per second by root",
            [(f"sum by (root, status) (rate({s(TRACES)}{_RATE}))", "{{root}} {{status}}")],
            unit="reqps",
        ),
        {"row": "Latency"},
        _panel(
            "LLM latency p50 / p95 / p99",
            quantiles(DURATION, _LLM_FILTER),
            unit="s",
            threshold=t.p99_latency_s,
            exemplars=True,
        ),
        _panel("Time to first token p50 / p95 / p99", quantiles(TTFT, _MODEL_FILTER), unit="s"),
        _panel(
            "Trace duration p95 by root",
            [
                (
                    f"histogram_quantile(0.95, sum by (root, le) "
                    f"(rate({s(TRACE_DURATION + '_bucket')}{_RATE})))",
                    "{{root}}",
                )
            ],
            unit="s",
            exemplars=True,
        ),
        {"row": "Tokens and cost"},
        _panel(
            "Tokens per hour by type",
            [(f"sum by (type) (increase({s(TOKENS, _LLM_FILTER)}[1h]))", "{{type}}")],
            unit="short",
        ),
        _panel(
            "Tokens per hour by prompt version",
            [
                (
                    f"sum by (prompt_version) (increase({s(TOKENS, IN_OUT, _LLM_FILTER)}[1h]))",
                    "{{prompt_version}}",
                )
            ],
            unit="short",
        ),
        _panel(
            "Average tokens per request",
            [(mean(TOKEN_USAGE, "type", _MODEL_FILTER), "{{type}}")],
            unit="short",
        ),
        _panel(
            "Cost per hour by model (USD)",
            [(f"sum by (model) (increase({cost}[1h]))", "{{model}}")],
            unit="currencyUSD",
            threshold=t.hourly_cost_budget_usd,
            exemplars=True,
        ),
        _panel(
            "Cost per hour by prompt version (USD)",
            [(f"sum by (prompt_version) (increase({cost}[1h]))", "{{prompt_version}}")],
            unit="currencyUSD",
        ),
        _panel(
            "Cost forecast for the month (USD, at the last 24 h rate)",
            [(f"sum(rate({cost}[1d])) * 86400 * days_in_month()", "forecast")],
            unit="currencyUSD",
            kind="stat",
        ),
        _panel(
            "Unpriced LLM calls per hour",
            [(f"sum by (model) (increase({s(UNPRICED, _MODEL_FILTER)}[1h]))", "{{model}}")],
            unit="short",
        ),
        {"row": "Tools, retrieval and routing"},
        _panel(
            "Tool failure rate",
            [
                (
                    f"(sum by (tool) (rate({tool_errors}{_RATE}))"
                    f" or sum by (tool) (rate({tools}{_RATE})) * 0)"
                    f" / sum by (tool) (rate({tools}{_RATE}))",
                    "{{tool}}",
                )
            ],
            unit="percentunit",
            threshold=t.tool_failure_rate,
        ),
        _panel(
            "Tool duration p95",
            [
                (
                    f"histogram_quantile(0.95, sum by (tool, le) "
                    f"(rate({s(TOOL_DURATION + '_bucket')}{_RATE})))",
                    "{{tool}}",
                )
            ],
            unit="s",
        ),
        _panel(
            "Retrieval empty rate",
            [
                (
                    f"sum by (retriever) (rate({s(RETRIEVED_DOCS + '_bucket', EMPTY_BUCKET)}{_RATE}))"
                    f" / sum by (retriever) (rate({s(RETRIEVED_DOCS + '_count')}{_RATE}))",
                    "{{retriever}}",
                )
            ],
            unit="percentunit",
        ),
        _panel(
            "Documents per retrieval (average)",
            [(mean(RETRIEVED_DOCS, "retriever"), "{{retriever}}")],
            unit="short",
        ),
        _panel(
            "Branch mix (share of routing decisions)",
            [
                (
                    f"sum by (graph, from_node, to_node) (rate({s(BRANCHES)}{_RATE}))"
                    f" / on (graph, from_node) group_left"
                    f" sum by (graph, from_node) (rate({s(BRANCHES)}{_RATE}))",
                    "{{graph}}: {{from_node}} -> {{to_node}}",
                )
            ],
            unit="percentunit",
            stacked=True,
        ),
        {"row": "Quality"},
        _panel(
            "Quality score (average) by metric and prompt version",
            [(mean(QUALITY, "metric, prompt_version", _PV_FILTER), "{{metric}} {{prompt_version}}")],
            unit="short",
            exemplars=True,
        ),
        _panel(
            "Judge evaluations and user feedback per second",
            [
                (f"sum by (status) (rate({s(JUDGE)}{_RATE}))", "judge {{status}}"),
                (f"sum by (rating) (rate({s(FEEDBACK)}{_RATE}))", "feedback {{rating}}"),
            ],
            unit="reqps",
        ),
        {"row": "Pipeline health"},
        _panel(
            "Dropped spans and internal errors per second",
            [
                (f"sum by (reason) (rate({s(DROPPED)}{_RATE}))", "dropped {{reason}}"),
                (f"sum by (reason) (rate({s(HANDLER_ERRORS)}{_RATE}))", "error {{reason}}"),
            ],
            unit="reqps",
        ),
    ]
    panels, y, x = [], 0, 0
    for panel_id, item in enumerate(spec, start=1):
        if "row" in item:
            y += 0 if x == 0 else 8
            x = 0
            panels.append(
                {"type": "row", "title": item["row"], "id": panel_id, "collapsed": False, "panels": [],
                 "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}
            )  # fmt: skip
            y += 1
            continue
        item["id"] = panel_id
        item["gridPos"] = {"h": 8, "w": 8, "x": x, "y": y}
        panels.append(item)
        x += 8
        if x >= 24:
            x, y = 0, y + 8

    def variable(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": _DS,
            "query": {"query": query, "refId": f"{name}-values"},
            "definition": query,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    return {
        "title": title,
        "uid": DASHBOARD_UID,
        "description": "LLM latency, tokens, cost, errors, tools, retrieval, routing and quality "
        "from llmobs-callbacks' Prometheus metrics.",
        "tags": ["llmobs", "llm"],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "refresh": 1,
                    "regex": "",
                    "current": {},
                },
                variable("model", "Model", f"label_values({REQUESTS}, model)"),
                variable("prompt_version", "Prompt version", f"label_values({REQUESTS}, prompt_version)"),
            ]
        },
        "panels": panels,
    }


def _panel(
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str,
    threshold: float | None = None,
    exemplars: bool = False,
    kind: str = "timeseries",
    stacked: bool = False,
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if threshold is not None:
        steps.append({"color": "red", "value": threshold})
    custom: dict[str, Any] = {}
    if kind == "timeseries":
        custom = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if stacked else 10,
            "showPoints": "never",
            "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if threshold is not None else "off"},
        }
    return {
        "type": kind,
        "title": title,
        "datasource": _DS,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": custom, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [
            {
                "datasource": _DS,
                "expr": expr,
                "legendFormat": legend,
                "refId": chr(ord("A") + i),
                "exemplar": exemplars,
                "range": True,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


# Grafana variables as the integration test (or a plain Prometheus query) resolves them.
DEFAULT_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$model": ".*",
    "$prompt_version": ".*",
}


def dashboard_queries(
    dashboard: dict[str, Any], variables: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every target of ``dashboard``, Grafana variables resolved."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    pattern = re.compile("|".join(re.escape(k) for k in sorted(values, key=len, reverse=True)))
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            out.append((panel["title"], pattern.sub(lambda m: values[m.group(0)], target["expr"])))
    return out


# -- files ---------------------------------------------------------------------------------------


def dashboard_json(t: Thresholds | None = None, **kwargs: Any) -> str:
    return json.dumps(grafana_dashboard(t, **kwargs), indent=2) + "\n"


def alerts_yaml(t: Thresholds | None = None) -> str:
    header = (
        "# Prometheus alerting rules for llmobs-callbacks metrics (generated by\n"
        "# llmobs_callbacks.dashboards; `llmobs export-alerts --help` for the thresholds).\n"
    )
    return header + to_yaml(alert_rules(t))


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter for rule files (mappings, lists, strings, numbers); no dependency."""
    return "\n".join(_yaml_lines(value, indent)) + "\n"


_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_NUMBER = re.compile(r"[-+]?(\d[\d_]*\.?\d*([eE][-+]?\d+)?|\.\d+|0x[0-9a-fA-F]+|0o[0-7]+)")


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and not _NUMBER.fullmatch(text) and text.lower() not in (
        "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~",
    ):  # fmt: skip
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _yaml_lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            k = _yaml_scalar(key)
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{k}:")
                lines.extend(_yaml_lines(item, indent + 2))
            elif isinstance(item, str) and "\n" in item:
                lines.append(f"{pad}{k}: |-")
                lines.extend(f"{pad}  {line}" if line else "" for line in item.split("\n"))
            else:
                lines.append(f"{pad}{k}: {_yaml_scalar(item) if item != {} and item != [] else '{}'}")
    elif isinstance(value, list):
        for item in value:
            sub = _yaml_lines(item, indent + 2)
            first = sub[0].lstrip(" ") if sub else ""
            lines.append(f"{pad}- {first}")
            lines.extend(sub[1:])
    else:
        lines.append(f"{pad}{_yaml_scalar(value)}")
    return lines


def asset_path(name: str) -> Path:
    """Path of a shipped asset (``grafana-dashboard.json``, ``prometheus-alerts.yml``)."""
    return Path(str(resources.files("llmobs_callbacks") / "assets" / name))


def write_default_assets(directory: Path | None = None) -> list[Path]:
    """(Re)generate the shipped files with the default thresholds."""
    directory = directory or asset_path(DASHBOARD_FILE).parent
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in ((DASHBOARD_FILE, dashboard_json()), (ALERTS_FILE, alerts_yaml())):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover
    for p in write_default_assets():
        print(f"wrote {p}")
