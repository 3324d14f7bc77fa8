"""A Grafana dashboard (JSON model) over the ``llmobs_*`` metrics, from :class:`Thresholds`.

Written as plain JSON rather than with a builder library: grafana-foundation-sdk needs
Python >= 3.11 (this package supports 3.10), is marked alpha and is installed by an exact
per-Grafana-version build pin; grafanalib has had no release since January 2024.

Variables: a data source, then job → service → environment → instance (a chain over
``llmobs_info``: service and environment are per process, so they select the processes whose
series a panel shows), model, prompt version and LangGraph graph; each honours
``Thresholds.selector``. Every panel query is scoped to ``job`` and ``instance``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from ..sinks import metric_names as m
from .promql import EMPTY_BUCKET, ERROR, IN_OUT, Thresholds, branch_share, one_of, series

DASHBOARD_UID = "llmobs-overview"

_DS = {"type": "prometheus", "uid": "${datasource}"}
_SCOPE = 'job=~"$job", instance=~"$instance"'
_MODEL = 'model=~"$model"'
_PV = 'prompt_version=~"$prompt_version"'
_RATE = "[$__rate_interval]"
# A series name as a whole word of a PromQL expression (not a prefix of a longer name).
_EXEMPLAR_SERIES = re.compile(
    "|".join(rf"(?<![A-Za-z0-9_:]){re.escape(name)}(?![A-Za-z0-9_:])" for name in m.EXEMPLAR_SERIES)
)


def grafana_dashboard(
    t: Thresholds | None = None, *, title: str = "LLM observability (llmobs)", ui_url: str | None = None
) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) over the ``llmobs_*`` metrics, with a data-source variable.

    ``ui_url`` (where ``llmobs ui`` serves, e.g. ``http://127.0.0.1:8790``): every ``trace_id``
    field (the exemplars' label, a table's column) links to ``{ui_url}/traces/<trace_id>``, and
    the dashboard links to the UI. Raises ``ValueError`` for a URL that is not http(s)."""
    t = t or Thresholds()
    dashboard = _dashboard(t, title)
    if ui_url is not None:
        add_trace_links(dashboard, ui_url)
    return dashboard


def ui_base_url(url: str) -> str:
    """``url`` without a trailing slash, checked: an absolute http(s) URL with a host."""
    parsed = urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise ValueError(f"--ui-url {url!r}: expected an http(s) URL such as http://127.0.0.1:8790")
    return url.strip().rstrip("/")


TRACE_FIELD = "trace_id"  # the exemplars' label (sinks.metric_names) and a trace table's column


def add_trace_links(dashboard: dict[str, Any], ui_url: str) -> dict[str, Any]:
    """Make ``trace_id`` values open the trace page of the UI at ``ui_url`` (in place): a field
    override on every panel (Grafana applies it to the exemplars' fields and to table cells;
    ``${__value.raw}`` is the clicked trace id), and a dashboard link to the UI."""
    base = ui_base_url(ui_url)
    link = {"title": "Open the trace in llmobs", "url": base + "/traces/${__value.raw}", "targetBlank": True}
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":  # a section header: no fields
            continue
        overrides = panel.setdefault("fieldConfig", {"defaults": {}, "overrides": []}).setdefault(
            "overrides", []
        )
        overrides.append(
            {
                "matcher": {"id": "byName", "options": TRACE_FIELD},
                "properties": [{"id": "links", "value": [link]}],
            }
        )
    dashboard.setdefault("links", []).append(
        {
            "title": "llmobs UI",
            "type": "link",
            "url": base + "/",
            "icon": "external link",
            "targetBlank": True,
        }
    )
    return dashboard


def _dashboard(t: Thresholds, title: str) -> dict[str, Any]:

    def s(metric: str, *matchers: str) -> str:
        return series(metric, *matchers, _SCOPE, t.selector)

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

    def p95(metric: str, by: str) -> str:
        return f"histogram_quantile(0.95, sum by ({by}, le) (rate({s(metric + '_bucket')}{_RATE})))"

    def mean(metric: str, by: str, *matchers: str) -> str:
        return (
            f"sum by ({by}) (rate({s(metric + '_sum', *matchers)}{_RATE}))"
            f" / sum by ({by}) (rate({s(metric + '_count', *matchers)}{_RATE}))"
        )

    def failure_rate(metric: str, by: str, *matchers: str) -> str:
        """Failed / all per group; 0 (not no data) for a group without failures."""
        failed, every = s(metric, ERROR, *matchers), s(metric, *matchers)
        return (
            f"(sum by ({by}) (rate({failed}{_RATE})) or sum by ({by}) (rate({every}{_RATE})) * 0)"
            f" / sum by ({by}) (rate({every}{_RATE}))"
        )

    def per_second(metric: str, by: str, legend: str) -> tuple[str, str]:
        return f"sum by ({by}) (rate({s(metric)}{_RATE}))", legend

    llm = f"{_MODEL}, {_PV}"
    cost = s(m.LLM_COST, llm)
    ratings = f'metric=~"{one_of(t.rating_metrics)}"' if t.rating_metrics else 'metric="__none__"'
    flags = f'metric!~"{one_of(t.rating_metrics)}"' if t.rating_metrics else ""
    branches = s(m.BRANCH_DECISIONS, 'graph=~"$graph"')
    spec: list[dict[str, Any]] = [
        {"row": "Requests and errors"},
        _panel(
            "LLM requests per second",
            [(f"sum by (model, status) (rate({s(m.LLM_REQUESTS, llm)}{_RATE}))", "{{model}} {{status}}")],
            unit="reqps",
        ),
        _panel(
            "LLM error rate by model",
            [(failure_rate(m.LLM_REQUESTS, "model", llm), "{{model}}")],
            unit="percentunit",
            threshold=t.error_rate,
        ),
        _panel(
            "Traces per second by root",
            [(f"sum by (root, status) (rate({s(m.TRACES)}{_RATE}))", "{{root}} {{status}}")],
            unit="reqps",
        ),
        {"row": "Latency"},
        _panel(
            "LLM latency p50 / p95 / p99", quantiles(m.LLM_DURATION, llm), unit="s", threshold=t.p99_latency_s
        ),
        _panel("Time to first token p50 / p95 / p99", quantiles(m.LLM_TTFT, _MODEL), unit="s"),
        _panel(
            "Trace duration p95 by root",
            [(p95(m.TRACE_DURATION, "root"), "{{root}}")],
            unit="s",
        ),
        {"row": "Tokens, cost and budgets"},
        _panel(
            "Tokens per hour by type",
            [(f"sum by (type) (increase({s(m.LLM_TOKENS, llm)}[1h]))", "{{type}}")],
            unit="short",
        ),
        _panel(
            "Tokens per hour by prompt version",
            [
                (
                    f"sum by (prompt_version) (increase({s(m.LLM_TOKENS, IN_OUT, llm)}[1h]))",
                    "{{prompt_version}}",
                )
            ],
            unit="short",
        ),
        _panel(
            "Average tokens per request",
            [(mean(m.LLM_TOKEN_USAGE, "type", _MODEL), "{{type}}")],
            unit="short",
        ),
        _panel(
            "Cost per hour by model (USD)",
            [(f"sum by (model) (increase({cost}[1h]))", "{{model}}")],
            unit="currencyUSD",
            threshold=t.hourly_cost_budget_usd,
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
            [(f"sum by (model) (increase({s(m.LLM_UNPRICED, _MODEL)}[1h]))", "{{model}}")],
            unit="short",
        ),
        _panel(
            "Budget spend vs budget (USD, LLMObs(budget_usd=...))",
            [
                (f"max by (period) ({s(m.BUDGET_SPEND)})", "spent this {{period}}"),
                (f"max by (period) ({s(m.BUDGET)})", "{{period}} budget"),
            ],
            unit="currencyUSD",
        ),
        _panel(
            "Budget used",
            [(f"max by (period) ({s(m.BUDGET_SPEND)}) / max by (period) ({s(m.BUDGET)})", "{{period}}")],
            unit="percentunit",
            kind="stat",
            steps=[(None, "green"), (0.8, "orange"), (1.0, "red")],
        ),
        {"row": "Tools and retrieval"},
        _panel(
            "Tool failure rate",
            [(failure_rate(m.TOOL_CALLS, "tool"), "{{tool}}")],
            unit="percentunit",
            threshold=t.tool_failure_rate,
        ),
        _panel(
            "Tool duration p95",
            [(p95(m.TOOL_DURATION, "tool"), "{{tool}}")],
            unit="s",
        ),
        _panel(
            "Retrieval empty rate",
            [
                (
                    f"sum by (retriever) (rate({s(m.RETRIEVED_DOCUMENTS + '_bucket', EMPTY_BUCKET)}{_RATE}))"
                    f" / sum by (retriever) (rate({s(m.RETRIEVED_DOCUMENTS + '_count')}{_RATE}))",
                    "{{retriever}}",
                )
            ],
            unit="percentunit",
        ),
        _panel(
            "Documents per retrieval (average)",
            [(mean(m.RETRIEVED_DOCUMENTS, "retriever"), "{{retriever}}")],
            unit="short",
        ),
        {"row": "Routing (one panel per LangGraph graph)"},
        _panel(
            "Branch mix: $graph (share of each node's routing decisions)",
            [(branch_share(branches, _RATE.strip("[]")), "{{from_node}} -> {{to_node}}")],
            unit="percentunit",
            min_max=(0, 1),
            repeat="graph",
        ),
        {"row": "Quality"},
        _panel(
            "Quality flags and rates (0-1) by metric and prompt version",
            [(mean(m.QUALITY_SCORE, "metric, prompt_version", _PV, flags), "{{metric}} {{prompt_version}}")],
            unit="percentunit",
            min_max=(0, 1),
        ),
        _panel(
            "Quality ratings (1-5) by metric and prompt version",
            [
                (
                    mean(m.QUALITY_SCORE, "metric, prompt_version", _PV, ratings),
                    "{{metric}} {{prompt_version}}",
                )
            ],
            unit="short",
            min_max=(1, 5),
            steps=[(None, "red"), (t.min_faithfulness, "green")],
        ),
        _panel(
            "Judge evaluations and user feedback per second",
            [
                per_second(m.JUDGE_EVALUATIONS, "status", "judge {{status}}"),
                per_second(m.FEEDBACK, "rating", "feedback {{rating}}"),
            ],
            unit="cps",
        ),
        {"row": "Pipeline health"},
        _panel(
            "Spans dropped per second by reason",
            [per_second(m.SPANS_DROPPED, "reason", "{{reason}}")],
            unit="cps",
        ),
        _panel(
            "Handler errors per second by reason",
            [per_second(m.HANDLER_ERRORS, "reason", "{{reason}}")],
            unit="cps",
        ),
        _panel(
            "Store available (1 = every writer reaches its database)",
            [(f"min by (instance) ({s(m.STORE_AVAILABLE)})", "{{instance}}")],
            unit="short",
            min_max=(0, 1),
            steps=[(None, "red"), (1, "green")],
        ),
        _panel(
            "Store write failures and outages per second",
            [
                per_second(m.STORE_WRITE_FAILURES, "instance", "write failures {{instance}}"),
                per_second(m.STORE_OUTAGES, "instance", "outages {{instance}}"),
            ],
            unit="cps",
        ),
        _panel(
            "Spool: spans waiting to be stored",
            [(f"sum by (instance) ({s(m.SPOOL_PENDING_SPANS)})", "{{instance}}")],
            unit="short",
        ),
        _panel(
            "Spool: spans spooled and replayed per second",
            [
                per_second(m.SPOOL_SPANS_WRITTEN, "instance", "spooled {{instance}}"),
                per_second(m.SPOOL_SPANS_REPLAYED, "instance", "replayed {{instance}}"),
            ],
            unit="cps",
        ),
    ]
    return {
        "title": title,
        "uid": DASHBOARD_UID,
        "description": "LLM latency, tokens, cost, budgets, errors, tools, retrieval, routing, quality and "
        "pipeline health from llmobs-callbacks' Prometheus metrics.",
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
        "templating": {"list": _variables(t)},
        "panels": _layout(spec),
    }


def _variables(t: Thresholds) -> list[dict[str, Any]]:
    def variable(name: str, label: str, query: str, all_value: str | None = ".*") -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": _DS,
            "query": {"query": query, "refId": f"{name}-values"},
            "definition": query,
            "refresh": 2,  # on time range change: new processes, models and versions appear
            "includeAll": True,
            "multi": True,
            "allValue": all_value,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    def values_of(metric: str, label: str, *matchers: str) -> str:
        return f"label_values({series(metric, *matchers, t.selector)}, {label})"

    job, service, env = 'job=~"$job"', 'service=~"$service"', 'environment=~"$environment"'
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "current": {},
        },
        variable("job", "Job", values_of(m.INFO, "job")),
        variable("service", "Service", values_of(m.INFO, "service", job)),
        variable("environment", "Environment", values_of(m.INFO, "environment", job, service)),
        # "All" is the list of the instances found, not ".*": that is what narrows every panel
        # to the processes of the chosen service and environment.
        variable("instance", "Instance", values_of(m.INFO, "instance", job, service, env), all_value=None),
        variable("model", "Model", values_of(m.LLM_REQUESTS, "model", _SCOPE)),
        variable("prompt_version", "Prompt version", values_of(m.LLM_REQUESTS, "prompt_version", _SCOPE)),
        variable("graph", "LangGraph graph", values_of(m.BRANCH_DECISIONS, "graph", _SCOPE)),
    ]


def _layout(spec: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of 8-wide panels on Grafana's 24-column grid; ids in order."""
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
    return panels


def _panel(
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str,
    threshold: float | None = None,
    steps: list[tuple[float | None, str]] | None = None,
    min_max: tuple[float, float] | None = None,
    kind: str = "timeseries",
    repeat: str | None = None,
) -> dict[str, Any]:
    """One panel. ``threshold``: a red line above which the value is bad (``steps`` for others).
    Exemplars are asked for on time series whose query reads a series that carries them, by the
    first such query only (p50/p95/p99 of one histogram would draw the same exemplars thrice)."""
    if steps is None:
        steps = [(None, "green")] + ([(threshold, "red")] if threshold is not None else [])
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]},
    }
    if min_max is not None:
        defaults["min"], defaults["max"] = min_max
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "stacking": {"mode": "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if len(steps) > 1 else "off"},
        }
        options: dict[str, Any] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}
        }
    else:
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    carries = [kind == "timeseries" and _EXEMPLAR_SERIES.search(expr) is not None for expr, _ in targets]
    asks = [c and not any(carries[:i]) for i, c in enumerate(carries)]
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "datasource": _DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "datasource": _DS,
                "expr": expr,
                "legendFormat": legend,
                "refId": chr(ord("A") + i),
                "exemplar": asks[i],
                "range": True,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if repeat is not None:
        panel.update({"repeat": repeat, "repeatDirection": "h", "maxPerRow": 3})
    return panel


# Grafana variables as the tests (or a plain Prometheus query) resolve them by default.
DEFAULT_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$job": ".*",
    "$service": ".*",
    "$environment": ".*",
    "$instance": ".*",
    "$model": ".*",
    "$prompt_version": ".*",
    "$graph": ".*",
}


def resolve(expr: str, variables: dict[str, str] | None = None) -> str:
    """``expr`` with Grafana variables replaced (``DEFAULT_VARIABLES``, then ``variables``)."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    pattern = re.compile("|".join(re.escape(k) for k in sorted(values, key=len, reverse=True)))
    return pattern.sub(lambda found: values[found.group(0)], expr)


def dashboard_queries(
    dashboard: dict[str, Any], variables: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every target of ``dashboard``, Grafana variables resolved."""
    return [
        (panel["title"], resolve(target["expr"], variables))
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
    ]


def variable_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """``{variable name: its label_values(...) query}`` for the dashboard's query variables."""
    return {v["name"]: v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"}
