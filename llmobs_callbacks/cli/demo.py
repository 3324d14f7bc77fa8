"""``llmobs demo``: replay a simulated day of a support bot, print what the tools say about it."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from ..sinks.schema import DATABASE_URL_ENV, resolve_database_url
from .errors import UserError, mask_url
from .output import blank, console, progress_bar, table
from .report import print_report, summarize
from .stores import DatabaseUrl, require_extra, store_url, translated

if TYPE_CHECKING:
    from ..demo import ReplayResult, Scenario


def demo(
    database_url: DatabaseUrl = None,
    hours: Annotated[float, typer.Option(help="simulated hours")] = 24.0,
    requests_per_hour: Annotated[float, typer.Option(help="mean arrival rate")] = 40.0,
    traces: Annotated[
        int | None, typer.Option(help="total requests instead of a rate (spread over --hours)")
    ] = None,
    switch_at_hour: Annotated[float, typer.Option(help="hour at which prompt v2 ships; -1 for never")] = 20.0,
    control: Annotated[bool, typer.Option("--control", help="v2 behaves like v1 (a control run)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the simulated traffic")] = 7,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
) -> int:
    """Replay a simulated day of a support bot (prompt v1, then a costly v2) into the store, then
    print the report, the v1 → v2 comparison, the anomalies and the commands to try next."""
    require_extra("langchain-core and langgraph", ("langchain_core", "langgraph"), "demo")
    from ..demo import Scenario, simulate

    if hours <= 0 or requests_per_hour <= 0 or (traces is not None and traces < 1):
        raise UserError("--hours, --requests-per-hour and --traces must be positive")
    rate = requests_per_hour if traces is None else traces / hours
    scenario = Scenario(
        hours=hours,
        requests_per_hour=rate,
        switch_at_hour=None if switch_at_hour < 0 else switch_at_hour,
        v2_regresses=not control,
        seed=seed,
    )
    url = store_url(database_url)
    try:
        with progress_bar("replaying a day", "req", disabled=no_progress) as advance:
            result = simulate(url, scenario, progress=advance)
    except Exception as exc:
        cause = exc.__cause__ if type(exc).__name__ == "ConfigurationError" and exc.__cause__ else exc
        raise translated(cause, url) from exc
    out = console()
    fmt = "%Y-%m-%d %H:%M"
    out.print(
        f"replayed {result.requests} demo requests over a simulated {scenario.hours:g} h "
        f"({result.start:{fmt}} → {result.end:{fmt}} UTC) into {mask_url(url)}"
    )
    if result.switch is not None:
        out.print(
            f"prompt v1 until {result.switch:%H:%M}, then v2 "
            f"({'twice the context' if scenario.v2_regresses else 'control: behaves like v1'}); "
            f"{result.failures} failed order lookups (by design)"
        )
    out.print()
    print_report(summarize(url, "prompt_version", result.start.isoformat(), None, False), "prompt_version")
    if "v1" in result.by_version and "v2" in result.by_version:
        print_comparison(url, result)
    print_anomalies(url, result)
    print_next_steps(url, result, scenario)
    return 0


COMPARED = [
    ("requests", "requests", "{:.0f}"),
    ("error_rate", "error rate", "{:.1%}"),
    ("input_tokens_per_request", "input tokens / request", "{:.0f}"),
    ("output_tokens_per_request", "output tokens / request", "{:.0f}"),
    ("cost_per_request", "cost / request (USD)", "{:.6f}"),
    ("p95_latency_ms", "p95 latency (ms)", "{:.0f}"),
    ("p95_ttft_ms", "p95 time to first token (ms)", "{:.0f}"),
    ("branch_human_review", "human-review share", "{:.1%}"),
]


def print_comparison(url: str, result: ReplayResult) -> None:
    out = console()
    try:
        require_extra("pandas", ("pandas",), "analysis")
    except UserError:
        out.print("(v1 → v2 comparison: pip install 'llmobs-callbacks[analysis]')")
        return
    from ..analysis.store import TraceStore

    with TraceStore(url, read_only=True) as store:
        compared = store.compare("v1", "v2", since=result.start)
    out.print("\nv1 → v2")
    t = table("metric", "v1", "v2", "change", right=("v1", "v2", "change"))
    for key, label, fmt in COMPARED:
        if key not in compared.index:
            continue
        row = compared.loc[key]
        cells = ["—" if row[v] != row[v] else fmt.format(row[v]) for v in ("v1", "v2")]
        change = "" if row["relative"] != row["relative"] else f"{row['relative']:+.0%}"
        t.add_row(label, *cells, change)
    out.print(t)


def print_anomalies(url: str, result: ReplayResult) -> None:
    """What ``llmobs anomalies`` says an hour after v2 shipped, and at the end of the day."""
    out = console()
    try:
        require_extra("pandas and scipy", ("pandas", "scipy"), "analysis")
    except UserError:
        out.print("(anomalies: pip install 'llmobs-callbacks[analysis]')")
        return
    from ..analysis.anomalies import format_anomalies
    from ..analysis.store import TraceStore

    moments = [("at the end of the day", result.end)]
    if result.switch is not None and result.switch + timedelta(hours=1) < result.end:
        moments.insert(0, ("an hour after v2 shipped", result.switch + timedelta(hours=1)))
    with TraceStore(url, read_only=True) as store:
        for label, now in moments:
            out.print(f"\nanomalies {label} (llmobs anomalies --now {now:%Y-%m-%dT%H:%M}Z)")
            out.print(Text(format_anomalies(store.anomalies(now=now), now=now)))


def print_next_steps(url: str, result: ReplayResult, scenario: Scenario) -> None:
    """The commands to try next, on this store, with a real trace id and session."""
    out = console()
    steps: list[tuple[str, str]] = []
    if url != resolve_database_url(None):
        steps.append(
            (f"export {DATABASE_URL_ENV}='{mask_url(url)}'", "so the commands below read this store")
        )
    costliest = example_trace(url)
    steps += [
        ("llmobs report --by model", "the same summary per model"),
        (
            "llmobs traces --limit 10",
            "the latest requests (also --status error, --search TEXT, --format json)",
        ),
    ]
    if costliest is not None:
        prefix, session_id = costliest
        steps.append(
            (f"llmobs trace {prefix}", "the costliest request, span by span with inputs and outputs")
        )
        if session_id:
            steps.append(("llmobs sessions", f"conversations; `llmobs session {session_id}` prints one"))
    steps.append(
        (f"llmobs anomalies --now {result.end:%Y-%m-%dT%H:%M}Z", "what changed in the last hour of the day")
    )
    if result.switch is not None:
        verdict = "v2 regressed: exit 1" if scenario.v2_regresses else "a control run: v2 behaves like v1"
        steps.append(("llmobs gate --baseline v1 --candidate v2", f"the release gate ({verdict})"))
    if importlib.util.find_spec("starlette") is None:
        steps.append(("llmobs ui", "the web UI (pip install 'llmobs-callbacks[ui]')"))
    else:
        page = f"/traces/{costliest[0]}" if costliest is not None else "/"
        steps.append(("llmobs ui", f"the web UI at http://127.0.0.1:8790/ (this request: {page})"))
    if Path("notebooks").is_dir():
        steps.append(("notebooks/*.ipynb", "pandas and plots on this store, in Jupyter or VS Code"))
    out.print("\nnext, try:")
    width = max(len(command) for command, _ in steps)
    for command, why in steps:
        line = Text(f"  {command:<{width}}", style="bold")
        line.append(f"  {why}", style="dim")
        out.print(line)


def example_trace(url: str) -> tuple[str, str | None] | None:
    """A unique id prefix of the demo's costliest request, and its session."""
    try:
        require_extra("pandas", ("pandas",), "analysis")
    except UserError:
        return None
    from ..analysis.store import TraceStore

    with TraceStore(url, read_only=True) as store:
        found = store.find_traces(sort="cost", limit=1)
        if found.empty:
            return None
        trace_id = str(found["trace_id"].iloc[0])
        session_id = found["session_id"].iloc[0]
        for length in range(8, len(trace_id) + 1):
            try:
                if store.resolve_trace_id(trace_id[:length]) == trace_id:
                    return trace_id[:length], None if blank(session_id) else str(session_id)
            except ValueError:  # ambiguous: a longer prefix
                continue
    return trace_id, None


def register(app: typer.Typer) -> None:
    app.command("demo", short_help="replay a simulated day of a support bot into the store")(demo)
