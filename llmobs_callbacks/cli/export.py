"""``llmobs export-grafana`` / ``export-alerts``: the dashboard and alert rules, with your limits."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from .errors import UserError, os_error
from .stores import DatabaseUrl

# (Thresholds field, flag, help): the threshold flags of both commands.
THRESHOLD_FLAGS = [
    ("p99_latency_s", "--p99-latency", "seconds"),
    ("error_rate", "--error-rate", "fraction"),
    ("hourly_cost_budget_usd", "--hourly-cost-budget", "USD"),
    ("cost_spike_factor", "--cost-spike-factor", "hourly cost vs. its 24 h average"),
    ("token_increase", "--token-increase", "tokens per request over the 24 h baseline, 0.5 = +50%"),
    ("branch_shift", "--branch-shift", "change of a branch's share, 0.2 = 20 points"),
    ("branch_min_decisions", "--branch-min-decisions", "decisions per hour before a shift counts"),
    ("tool_failure_rate", "--tool-failure-rate", "fraction"),
    ("hallucination_rate", "--hallucination-rate", "fraction"),
    ("min_faithfulness", "--min-faithfulness", "1-5 scale"),
    ("min_requests", "--min-requests", "events in a rate rule's window and group before it counts"),
    ("pending", "--for", "alert pending duration"),
    ("selector", "--selector", "extra label matchers for every metric, e.g. 'job=\"support-bot\"'"),
]

METAVARS = {"pending": "DURATION", "selector": "MATCHERS"}  # the others show their type (<float>, <int>)

Output = Annotated[str, typer.Option("-o", "--output", metavar="FILE", help="file to write ('-': stdout)")]


def with_thresholds(command: Callable[..., int]) -> Callable[..., int]:
    """Add the ``THRESHOLD_FLAGS`` options to ``command``, which receives them as ``thresholds``."""
    from ..dashboards import Thresholds

    defaults = Thresholds()
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "thresholds"]
    added = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=getattr(defaults, name),
            annotation=Annotated[
                type(getattr(defaults, name)),
                typer.Option(flag, metavar=METAVARS.get(name), help=help_text),
            ],
        )
        for name, flag, help_text in THRESHOLD_FLAGS
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        values = {name: kwargs.pop(name) for name, _, _ in THRESHOLD_FLAGS}
        return command(*args, thresholds=Thresholds(**values), **kwargs)

    kinds = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    wrapper.__signature__ = inspect.Signature([*kinds, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {}  # the signature above is the truth (Typer reads it)
    return wrapper


def write(text: str, output: str, what: str) -> None:
    if output == "-":
        sys.stdout.write(text)
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise os_error(f"write {output}", exc) from exc
    print(f"wrote {what} to {output}", file=sys.stderr)


def export_grafana(
    database_url: DatabaseUrl = None,
    output: Output = "-",
    title: Annotated[
        str, typer.Option(metavar="TEXT", help="dashboard title")
    ] = "LLM observability (llmobs)",
    ui_url: Annotated[
        str | None,
        typer.Option(
            "--ui-url",
            metavar="URL",
            help="where `llmobs ui` serves (e.g. http://127.0.0.1:8790): exemplars and trace ids link "
            "to its trace pages",
        ),
    ] = None,
    thresholds: Any = None,  # a Thresholds, from the flags with_thresholds adds
) -> int:
    """Write a Grafana dashboard (JSON) over the llmobs_* Prometheus metrics (import it in Grafana:
    Dashboards > New > Import; pick your Prometheus data source). The dashboard reads Prometheus,
    not the store: --database-url is accepted for uniformity and not used. With --ui-url, a
    clicked exemplar (or trace id cell) opens URL/traces/<trace_id>."""
    from ..dashboards import dashboard_json

    try:
        text = dashboard_json(thresholds, title=title, ui_url=ui_url)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    write(text, output, "the Grafana dashboard")
    return 0


def export_alerts(
    database_url: DatabaseUrl = None,
    output: Output = "-",
    thresholds: Any = None,  # a Thresholds, from the flags with_thresholds adds
) -> int:
    """Write Prometheus alerting rules (YAML): p99 latency, error rate, cost budget and spikes,
    tokens per request, branch mix, tool failures, hallucination rate, faithfulness, dropped
    spans, store availability and write failures. Check them with `promtool check rules FILE`.
    The rules read Prometheus, not the store: --database-url is accepted for uniformity and not
    used."""
    from ..dashboards import alerts_yaml

    write(alerts_yaml(thresholds), output, "the Prometheus alerting rules")
    return 0


def register(app: typer.Typer) -> None:
    app.command("export-grafana", short_help="write a Grafana dashboard (JSON)")(
        with_thresholds(export_grafana)
    )
    app.command("export-alerts", short_help="write Prometheus alerting rules (YAML)")(
        with_thresholds(export_alerts)
    )
