"""``llmobs report``: requests, errors, tokens, cost and latency per prompt version, model or root."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from .errors import UserError
from .output import Format, console, table, text, write_rows
from .stores import DatabaseUrl, reader_engine

if TYPE_CHECKING:
    from ..analysis.report import GroupSummary


class By(str, Enum):
    prompt_version = "prompt_version"
    model = "model"
    root = "root"


Since = Annotated[
    str | None, typer.Option(metavar="TIME", help="start of the window: 24h, 7d, or an ISO time")
]
Until = Annotated[
    str | None, typer.Option(metavar="TIME", help="end of the window: an ISO time (default: now)")
]
IncludeInternal = Annotated[
    bool,
    typer.Option(
        "--include-internal",
        help="also count internal traces (the judge's evaluations, index building) as requests",
    ),
]


def report(
    database_url: DatabaseUrl = None,
    since: Since = None,
    until: Until = None,
    include_internal: IncludeInternal = False,
    by: Annotated[By, typer.Option(help="what a row is")] = By.prompt_version,
    format: Annotated[Format, typer.Option("--format", help="table, json or csv")] = Format.table,
) -> int:
    """Summary per prompt version, model or root run: requests, errors, tokens, cost, latency."""
    rows = summarize(database_url, by.value, since, until, include_internal)
    if format is Format.table:
        print_report(rows, by.value)
    elif rows or format is Format.json:
        fields = list(rows[0].as_dict()) if rows else []
        write_rows((r.as_dict() for r in rows), format, fields)
    return 0


def summarize(
    database_url: str | None, by: str, since: str | None, until: str | None, include_internal: bool
) -> list[GroupSummary]:
    from ..analysis.report import summarize as summarize_store

    engine = reader_engine(database_url)
    try:
        return summarize_store(engine, by=by, since=since, until=until, include_internal=include_internal)
    except ValueError as exc:  # a bad --since / --until
        raise UserError(str(exc)) from exc
    finally:
        engine.dispose()


def print_report(rows: list[GroupSummary], by: str) -> None:
    """The report as a table; a cost marked ``*`` is incomplete (calls without a price)."""
    out = console()
    if not rows:
        out.print("no traces in the store for this window")
        return
    numbers = ("requests", "errors", "llm calls", "tokens in", "tokens out", "cost $", "$/request")
    t = table(by, *numbers, "p50 ms", "p95 ms", right=(*numbers, "p50 ms", "p95 ms"))

    def cost(value: float | None, unpriced: int) -> str:
        shown = "—" if value is None else f"{value:.6f}"
        return f"{shown}*" if unpriced else shown

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    for r in rows:
        t.add_row(
            text(r.group),
            str(r.requests),
            f"{r.errors} ({r.error_rate:.0%})",
            str(r.llm_calls),
            str(r.input_tokens),
            str(r.output_tokens),
            cost(r.cost_usd, r.unpriced_calls),
            cost(r.cost_per_request, r.unpriced_calls),
            ms(r.p50_latency_ms),
            ms(r.p95_latency_ms),
        )
    out.print(t)
    unpriced = sum(r.unpriced_calls for r in rows)
    if unpriced:
        out.print(f"* cost incomplete: {unpriced} LLM call(s) reported tokens but have no price")


def register(app: typer.Typer) -> None:
    app.command("report", short_help="requests, errors, tokens, cost, latency per version")(report)
