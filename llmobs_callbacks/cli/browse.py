"""``llmobs traces`` / ``trace`` / ``sessions`` / ``session``: find and read what was recorded.

Everything is read through ``TraceStore`` (``find_traces``, ``resolve_trace_id``, ``trace``,
``sessions``, ``session``), i.e. the one query layer of ``analysis/queries.py``.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from .errors import NotFound, UserError, mask_url
from .output import (
    ANSWER_KEYS,
    QUESTION_KEYS,
    Format,
    blank,
    console,
    duration_ms,
    integer,
    money,
    one_line,
    readable,
    records,
    status_text,
    table,
    text,
    when,
    write_rows,
)
from .report import IncludeInternal, Since, Until
from .stores import DatabaseUrl, store_url, trace_store

if TYPE_CHECKING:
    from ..analysis.tree import SpanNode, TraceTree

ID_PREFIX = 8  # characters of a trace id in lists: enough to be unique in practice, and `trace` takes it
CONTENT_CHARS = 160  # of an input or output in `trace` (all with --full)
TURN_CHARS = 600  # of a question or answer in `session`


class Status(str, Enum):
    ok = "ok"
    error = "error"


class Sort(str, Enum):
    time = "time"
    latency = "latency"
    cost = "cost"
    tokens = "tokens"


Limit = Annotated[int, typer.Option(min=1, metavar="N", help="at most this many rows")]
Full = Annotated[bool, typer.Option("--full", help="print inputs and outputs whole (default: cut)")]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_latency_ms(value: str | None) -> float | None:
    """``--min-latency``: milliseconds, or with a unit: ``500ms``, ``2s``, ``1.5m``."""
    if value is None:
        return None
    match = _DURATION.match(value)
    if match is None:
        raise UserError(f"--min-latency {value!r}: expected milliseconds or a duration such as 500ms, 2s")
    number, unit = float(match.group(1)), match.group(2) or "ms"
    return number * {"ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def traces(
    database_url: DatabaseUrl = None,
    since: Since = None,
    until: Until = None,
    prompt_version: Annotated[
        list[str] | None,
        typer.Option("--prompt-version", metavar="VERSION", help="only this prompt version (repeatable)"),
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", metavar="MODEL", help="only this model (repeatable)")
    ] = None,
    status: Annotated[Status | None, typer.Option(help="only ok or only failed requests")] = None,
    session: Annotated[
        str | None, typer.Option("--session", metavar="ID", help="only this session id")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", metavar="ID", help="only this user id")] = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="only requests whose root has this name")
    ] = None,
    min_cost: Annotated[
        float | None, typer.Option("--min-cost", metavar="USD", help="only requests costing at least USD")
    ] = None,
    min_latency: Annotated[
        str | None,
        typer.Option(
            "--min-latency", metavar="DURATION", help="only requests at least this slow: 500ms, 2s, 1500"
        ),
    ] = None,
    search: Annotated[
        str | None,
        typer.Option("--search", metavar="TEXT", help="text in any span's input, output or error (any case)"),
    ] = None,
    sort: Annotated[
        Sort, typer.Option(help="newest first, or the slowest / costliest / largest")
    ] = Sort.time,
    limit: Limit = 20,
    include_internal: IncludeInternal = False,
    format: Annotated[Format, typer.Option("--format", help="table, json or csv")] = Format.table,
) -> int:
    """List recent requests (newest first), filtered and searched; `llmobs trace ID` shows one."""
    from ..analysis.queries import TraceFilter

    where = TraceFilter(
        since=since,
        until=until,
        prompt_version=prompt_version or None,
        model=model or None,
        status=status.value if status else None,
        session_id=session,
        user_id=user,
        name=name,
        min_cost=min_cost,
        min_latency_ms=parse_latency_ms(min_latency),
        search=search or None,
        include_internal=include_internal,
    )
    with trace_store(database_url) as store:
        try:
            found = store.find_traces(where, sort=sort.value, limit=limit)
        except ValueError as exc:  # a bad --since / --until
            raise UserError(str(exc)) from exc
    if format is not Format.table:
        write_rows(records(found), format, list(found.columns))
        return 0
    out = console()
    if found.empty:
        out.print("no traces match" + ("" if where == TraceFilter() else " these filters"))
        return 0
    t = table(
        "time (UTC)", "trace", "root", "version", "model", "status", "latency", "tokens", "cost", "session",
        right=("latency", "tokens", "cost"),
    )  # fmt: skip
    for row in found.itertuples(index=False):
        cost = money(row.cost_usd) + ("*" if row.unpriced_calls else "")
        t.add_row(
            when(row.start_time),
            Text(str(row.trace_id)[:ID_PREFIX], style="cyan"),
            text(row.name),
            text(row.prompt_version),
            text(row.model),
            status_text(row.status),
            duration_ms(row.latency_ms),
            integer(row.tokens),
            cost,
            text(row.session_id),
        )
    out.print(t)
    more = f"; --limit {limit} reached, more may match" if len(found) == limit else ""
    order = "newest first" if sort is Sort.time else f"by {sort.value}, highest first"
    out.print(Text(f"{len(found)} trace(s), {order}{more}. `llmobs trace ID` shows one.", style="dim"))
    return 0


def resolve(store: Any, prefix: str, url: str) -> str:
    """The full trace id for ``prefix``: ``NotFound`` when none matches, ``UserError`` listing the
    candidates when several do."""
    try:
        return store.resolve_trace_id(prefix)
    except KeyError:
        raise NotFound(
            f"no trace {prefix!r} in {mask_url(url)}: no trace id starts with it (`llmobs traces` lists them)"
        ) from None
    except ValueError as exc:
        raise UserError(f"{exc}; give more of the id") from None


def trace(
    trace_id: Annotated[str, typer.Argument(metavar="ID", help="the trace's id, or any unique start of it")],
    database_url: DatabaseUrl = None,
    full: Full = False,
) -> int:
    """Show one trace as a tree of its spans: inputs, outputs, tokens, cost, errors."""
    with trace_store(database_url) as store:
        tree = store.trace(resolve(store, trace_id, store_url(database_url)))
    console().print(render_trace(tree, None if full else CONTENT_CHARS))
    return 0


def render_trace(tree: TraceTree, limit: int | None) -> Tree:
    """A Rich tree: one node per span (its summary, input, output, documents, error)."""
    root = tree.root.span
    head = Text(f"trace {tree.trace_id}", style="bold")
    llm = [n.span for n in tree.nodes if n.kind == "llm"]
    tokens = sum(int(s.get("input_tokens") or 0) + int(s.get("output_tokens") or 0) for s in llm)
    costs = [float(s["cost_usd"]) for s in llm if not blank(s.get("cost_usd"))]
    facts = [
        when(root.get("start_time")),
        "error" if root.get("status") == "error" else "ok",
        duration_ms(root.get("latency_ms")),
        f"{tokens} tokens",
        money(sum(costs) if costs else None),
    ]
    for key in ("prompt_version", "model"):
        if not blank(root.get(key)):
            facts.append(str(root[key]))
    for key, label in (("session_id", "session"), ("user_id", "user")):
        if not blank(root.get(key)):
            facts.append(f"{label} {root[key]}")
    head.append("  " + "  ".join(facts), style="dim")
    if tree.trace_scores:
        head.append(f"\nscores: {tree._score_text(tree.trace_scores)}")
    out = Tree(head, guide_style="dim")

    def add(parent: Tree, node: SpanNode) -> None:
        branch = parent.add(span_label(tree, node, limit))
        for child in node.children:
            add(branch, child)

    for node in tree.roots:
        add(out, node)
    return out


def span_label(tree: TraceTree, node: SpanNode, limit: int | None) -> Text:
    span = node.span
    error = span.get("status") == "error"
    label = Text(node.describe(), style="red" if error else "")
    if node.scores:
        label.append(f"  [{tree._score_text(node.scores)}]", style="magenta")
    for key, name in (("input", "in:  "), ("output", "out: ")):
        value = readable(span.get(key))
        if value is not None:
            label.append(f"\n{name}", style="dim")
            label.append(value if limit is None else one_line(value, limit))
    for doc in node.documents:
        score = doc.get("score")
        ident = "" if blank(doc.get("document_id")) else f" {doc['document_id']}"
        line = f"#{doc['rank']}{ident}" + ("" if blank(score) else f" ({float(score):.3f})")
        content = "" if blank(doc.get("content")) else str(doc["content"])
        label.append(f"\ndoc {line}: ", style="dim")
        label.append(content if limit is None else one_line(content, limit))
    return label


def sessions(
    database_url: DatabaseUrl = None,
    since: Since = None,
    until: Until = None,
    user: Annotated[
        str | None, typer.Option("--user", metavar="ID", help="only this user's sessions")
    ] = None,
    limit: Limit = 20,
    include_internal: IncludeInternal = False,
    format: Annotated[Format, typer.Option("--format", help="table, json or csv")] = Format.table,
) -> int:
    """List sessions (conversations), most recently active first."""
    with trace_store(database_url) as store:
        try:
            found = store.sessions(since, until, user, include_internal=include_internal, limit=limit)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
    if format is not Format.table:
        write_rows(records(found), format, list(found.columns))
        return 0
    out = console()
    if found.empty:
        out.print("no sessions (requests with a session_id) in this window")
        return 0
    t = table(
        "session", "user", "requests", "errors", "first seen (UTC)", "last seen (UTC)", "cost", "tokens",
        "feedback", right=("requests", "errors", "cost", "tokens", "feedback"),
    )  # fmt: skip
    for row in found.itertuples(index=False):
        feedback = "—" if blank(row.feedback) else f"{row.feedback:.2f} ({row.feedback_count})"
        t.add_row(
            text(row.session_id),
            text(row.user_id),
            integer(row.requests),
            integer(row.errors),
            when(row.first_seen),
            when(row.last_seen),
            money(row.cost_usd),
            integer(row.tokens),
            feedback,
        )
    out.print(t)
    more = f"; --limit {limit} reached, more may match" if len(found) == limit else ""
    out.print(Text(f"{len(found)} session(s){more}. `llmobs session ID` prints one.", style="dim"))
    return 0


def session(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="the session's id")],
    database_url: DatabaseUrl = None,
    full: Full = False,
    include_internal: IncludeInternal = False,
) -> int:
    """Print one conversation turn by turn: each request's question and answer."""
    with trace_store(database_url) as store:
        turns = store.session(session_id, include_internal=include_internal)
    if turns.empty:
        where = mask_url(store_url(database_url))
        raise NotFound(f"no session {session_id!r} in {where} (`llmobs sessions` lists them)")
    out = console()
    turns = turns.sort_values("start_time")
    cost = turns["cost_usd"].sum() if turns["cost_usd"].notna().any() else None
    users = ", ".join(sorted({str(u) for u in turns["user_id"].dropna()})) or "—"
    out.print(
        Text(f"session {session_id}", style="bold")
        + Text(f"  {len(turns)} request(s)  user {users}  {money(cost)}", style="dim")
    )
    score_columns = [c for c in turns.columns if c.startswith("score_")]
    limit = None if full else TURN_CHARS
    for number, row in enumerate(turns.to_dict("records"), 1):
        line = Text(f"\n[{number}] {when(row['start_time'])}  ", style="bold")
        line.append(str(row["trace_id"])[:ID_PREFIX], style="cyan")
        line.append("  ")
        line.append_text(status_text(row["status"]))
        line.append(
            f"  {duration_ms(row['latency_ms'])}  {integer(row['tokens'])} tokens  {money(row['cost_usd'])}"
        )
        scores = [f"{c[len('score_') :]}={row[c]:g}" for c in score_columns if not blank(row[c])]
        if scores:
            line.append("  " + " ".join(scores), style="magenta")
        out.print(line)
        for key, who, prefer in (("input", "user", QUESTION_KEYS), ("output", "assistant", ANSWER_KEYS)):
            value = readable(row.get(key), prefer)
            if value is None and key == "output" and row["status"] == "error":
                value = f"(failed: {row.get('error_type') or 'error'})"
            said = Text(f"  {who:>9}: ", style="dim")
            said.append("—" if value is None else value if limit is None else one_line(value, limit))
            out.print(said)
    return 0


def register(app: typer.Typer) -> None:
    app.command("traces", short_help="list and search recent traces")(traces)
    app.command("trace", short_help="one trace: its spans, inputs and outputs")(trace)
    app.command("sessions", short_help="list sessions (conversations)")(sessions)
    app.command("session", short_help="one conversation, turn by turn")(session)
