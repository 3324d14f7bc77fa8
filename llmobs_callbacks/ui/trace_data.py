"""The reads behind the traces pages and their JSON: a page of requests, one trace as a tree
(spans, documents, scores, branch decisions, the session's neighbours), the summary. Plain
dicts of Python values, so the templates and the JSON API show the same numbers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from ..analysis.queries import (
    BRANCHES,
    DOCS,
    SCORES,
    SPANS,
    request_query,
    trace_page_query,
    user_facing,
)
from .data import TraceQuery, as_datetime

PREVIEW_CHARS = 300
TOKEN_FIELDS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("total", "total_tokens"),
    ("cached", "cached_input_tokens"),
    ("cache_write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
)


def clean(value: Any) -> Any:
    """NaN/inf → None; datetimes aware UTC (``Decimal`` → float, for PostgreSQL sums)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return as_datetime(value)
    if value is not None and type(value).__name__ == "Decimal":
        return float(value)
    return value


def _row(mapping: Any) -> dict[str, Any]:
    return {k: clean(v) for k, v in dict(mapping).items()}


def decode(text: Any) -> Any:
    """A stored input/output text: its JSON value when it is JSON, else the text."""
    if not isinstance(text, str):
        return text
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[", '"'):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


# -- the list ------------------------------------------------------------------------------------


WINDOW = timedelta(hours=1)  # the newest-first list looks at the last hour of roots first …
WIDEN = 8  # … then 8 h, 64 h, 21 d, …, then everything


def _windows(conn: sa.Connection, tq: TraceQuery) -> list[datetime | None]:
    """Lower bounds of start time to try, narrowest first, ending in None (the whole range).
    Newest first is a walk down the roots' index; bounding it lets every planner see that only
    a short stretch is read, and a filter that matches rarely widens the window instead of
    making the planner scan and sort every root."""
    if tq.sort != "time" or not tq.descending:
        return [None]
    c = SPANS.c
    roots = [c.parent_span_id.is_(None)]
    if tq.where.until is not None:
        roots.append(c.start_time < tq.where.until.astimezone(timezone.utc))
    # Two queries: each is one seek at an end of the roots' index (min and max together scan it).
    newest = as_datetime(conn.execute(sa.select(sa.func.max(c.start_time)).where(*roots)).scalar())
    oldest = as_datetime(conn.execute(sa.select(sa.func.min(c.start_time)).where(*roots)).scalar())
    if newest is None or oldest is None:
        return [None]
    floor = max(oldest, tq.where.since) if tq.where.since is not None else oldest
    bounds: list[datetime | None] = []
    width = WINDOW
    while newest - width > floor:
        bounds.append(newest - width)
        width *= WIDEN
    return [*bounds, None]


def list_traces(engine: sa.Engine, tq: TraceQuery) -> tuple[list[dict[str, Any]], bool]:
    """One page of requests (``limit + 1`` fetched: whether a next page exists, without a count)
    with each root's input preview."""
    with engine.connect() as conn:
        windows = _windows(conn, tq)
        while windows:
            bound = windows.pop(0)
            query = trace_page_query(
                tq.where,
                sort=tq.sort,
                descending=tq.descending,
                limit=tq.limit + 1,
                offset=tq.offset,
                newer_than=bound,
            )
            rows = [_row(m) for m in conn.execute(query).mappings()]
            if len(rows) > tq.limit:  # the window holds the whole page and one more: it is the answer
                break
            if not rows and tq.offset == 0:  # a rare match: wider windows would scan it all again
                windows = windows[-1:]
        has_next = len(rows) > tq.limit
        rows = rows[: tq.limit]
        if rows:
            c = SPANS.c
            ids = [r["trace_id"] for r in rows]
            previews = dict(
                conn.execute(
                    sa.select(c.trace_id, sa.func.substr(c.input, 1, PREVIEW_CHARS)).where(
                        c.trace_id.in_(ids), c.parent_span_id.is_(None)
                    )
                ).all()
            )
            for r in rows:
                r["input_preview"] = preview_text(previews.get(r["trace_id"]))
    return rows, has_next


def preview_text(text: Any) -> str:
    """A root's input in one line: a chat's last user message or a dict's first text, else the text."""
    if not isinstance(text, str):
        return ""
    value = decode(text)
    if isinstance(value, dict):
        for key in ("question", "input", "query", "messages", "text"):
            if key in value:
                value = value[key]
                break
    if isinstance(value, list) and value:
        value = value[-1]
        if isinstance(value, dict):
            value = value.get("content", value)
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return " ".join(value.split())[:200]


# -- one trace ------------------------------------------------------------------------------------


def resolve(engine: sa.Engine, prefix: str) -> str | None:
    """The trace id ``prefix`` names (itself, or the one id starting with it); None when no
    trace or several do. Both are index lookups: the exact id first, then the ids in
    ``[prefix, prefix with its last character incremented)`` (bounded, so the index range ends
    where the prefix does)."""
    prefix = prefix.strip()
    if not prefix:
        return None
    c = SPANS.c
    with engine.connect() as conn:
        if conn.execute(sa.select(c.trace_id).where(c.trace_id == prefix).limit(1)).first() is not None:
            return prefix
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        found = conn.execute(
            sa.select(c.trace_id)
            .where(c.trace_id >= prefix, c.trace_id < upper, c.trace_id.startswith(prefix, autoescape=True))
            .distinct()
            .order_by(c.trace_id)
            .limit(2)
        ).all()
    return found[0][0] if len(found) == 1 else None


@dataclass
class Span:
    row: dict[str, Any]
    depth: int = 0
    offset_ms: float = 0.0
    duration_ms: float | None = None
    left_pct: float = 0.0
    width_pct: float = 0.0
    documents: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    branches: list[dict[str, Any]] = field(default_factory=list)
    children: list[Span] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:  # the row's columns as attributes (templates)
        try:
            return self.__dict__["row"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def tokens(self) -> dict[str, int | None]:
        return {key: self.row.get(col) for key, col in TOKEN_FIELDS}

    @property
    def is_error(self) -> bool:
        return self.row.get("status") == "error"


@dataclass
class TraceView:
    trace_id: str
    summary: dict[str, Any]  # the request's row (requests_query): totals as everywhere else
    spans: list[Span]  # depth-first, in start order
    roots: list[Span]
    scores: list[dict[str, Any]]  # every score of the trace, current and superseded
    branches: list[dict[str, Any]]
    session_prev: str | None
    session_next: str | None
    prompt_versions: list[str]
    models: list[str]
    duration_ms: float


def load_trace(engine: sa.Engine, trace_id: str) -> TraceView | None:
    """Everything about one trace (an exact id); None when it has no spans."""
    c = SPANS.c
    with engine.connect() as conn:
        spans = [_row(m) for m in conn.execute(sa.select(SPANS).where(c.trace_id == trace_id)).mappings()]
        if not spans:
            return None
        docs = [
            _row(m)
            for m in conn.execute(
                sa.select(DOCS).where(DOCS.c.trace_id == trace_id).order_by(DOCS.c.span_id, DOCS.c.rank)
            ).mappings()
        ]
        scores = [
            _row(m)
            for m in conn.execute(
                sa.select(SCORES).where(SCORES.c.trace_id == trace_id).order_by(SCORES.c.created_at)
            ).mappings()
        ]
        branches = [
            _row(m)
            for m in conn.execute(
                sa.select(BRANCHES).where(BRANCHES.c.trace_id == trace_id).order_by(BRANCHES.c.created_at)
            ).mappings()
        ]
        summary_rows = conn.execute(request_query(trace_id)).mappings().all()
        root = next((s for s in spans if s["parent_span_id"] is None), None) or min(
            spans, key=lambda s: s["start_time"]
        )
        prev_id = next_id = None
        if root.get("session_id"):
            r = SPANS.alias("r").c
            same = (r.session_id == root["session_id"], r.parent_span_id.is_(None), user_facing(r.internal))
            # Ordered by an expression, not the column: else a planner may walk the start-time
            # index (no end when the session has no later turn) instead of the session's index.
            when = sa.func.coalesce(r.start_time, r.start_time)
            prev_id = conn.execute(
                sa.select(r.trace_id)
                .where(*same, r.start_time < root["start_time"])
                .order_by(when.desc())
                .limit(1)
            ).scalar()
            next_id = conn.execute(
                sa.select(r.trace_id)
                .where(*same, r.start_time > root["start_time"])
                .order_by(when.asc())
                .limit(1)
            ).scalar()
    summary = _row(summary_rows[0]) if summary_rows else {}
    summary.setdefault("name", root["name"])
    for key in ("start_time", "latency_ms", "status", "session_id", "user_id", "error_type"):
        summary.setdefault(key, root.get(key))
    view_spans, roots, duration = _tree(spans, docs, scores, branches)
    return TraceView(
        trace_id=trace_id,
        summary=summary,
        spans=view_spans,
        roots=roots,
        scores=scores,
        branches=branches,
        session_prev=prev_id,
        session_next=next_id,
        prompt_versions=sorted(
            {
                f"{s['prompt_name'] or ''}:{s['prompt_version']}".lstrip(":")
                for s in spans
                if s["prompt_version"]
            }
        ),
        models=sorted({s["model"] for s in spans if s["model"]}),
        duration_ms=duration,
    )


def _tree(
    rows: list[dict[str, Any]],
    docs: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    branches: list[dict[str, Any]],
) -> tuple[list[Span], list[Span], float]:
    rows = sorted(rows, key=lambda r: (r["start_time"], r["span_id"]))
    start = rows[0]["start_time"]
    ends = [r["end_time"] for r in rows if r["end_time"] is not None]
    end = max([*ends, start])
    total_ms = max((end - start).total_seconds() * 1000, 1e-6)
    nodes = {r["span_id"]: Span(r) for r in rows}
    for doc in docs:
        if doc["span_id"] in nodes:
            nodes[doc["span_id"]].documents.append(doc)
    for score in scores:
        if score.get("span_id") in nodes:
            nodes[score["span_id"]].scores.append(score)
    for branch in branches:
        if branch.get("span_id") in nodes:
            nodes[branch["span_id"]].branches.append(branch)
    roots: list[Span] = []
    for node in nodes.values():
        parent = nodes.get(node.row["parent_span_id"] or "")
        (parent.children if parent is not None and parent is not node else roots).append(node)
    ordered: list[Span] = []

    def walk(node: Span, depth: int) -> None:
        node.depth = depth
        node.offset_ms = (node.row["start_time"] - start).total_seconds() * 1000
        if node.row["end_time"] is not None:
            node.duration_ms = (node.row["end_time"] - node.row["start_time"]).total_seconds() * 1000
        elif node.row.get("latency_ms") is not None:
            node.duration_ms = node.row["latency_ms"]
        node.left_pct = min(max(node.offset_ms / total_ms * 100, 0.0), 99.5)
        node.width_pct = min(max((node.duration_ms or 0) / total_ms * 100, 0.5), 100 - node.left_pct)
        ordered.append(node)
        for child in node.children:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return ordered, roots, total_ms


def span_json(node: Span) -> dict[str, Any]:
    """A span as the API gives it, with its children nested."""
    r = node.row
    return {
        "span_id": r["span_id"],
        "parent_id": r["parent_span_id"],
        "kind": r["kind"],
        "name": r["name"],
        "status": r["status"],
        "start_time": r["start_time"],
        "end_time": r["end_time"],
        "latency_ms": r["latency_ms"],
        "ttft_ms": r["ttft_ms"],
        "offset_ms": node.offset_ms,
        "tokens": node.tokens,
        "cost_usd": r["cost_usd"],
        "price_source": r["price_source"],
        "model": r["model"],
        "request_model": r["request_model"],
        "response_model": r["response_model"],
        "provider": r["provider"],
        "prompt_name": r["prompt_name"],
        "prompt_version": r["prompt_version"],
        "template_hash": r["template_hash"],
        "session_id": r["session_id"],
        "user_id": r["user_id"],
        "tags": r["tags"],
        "input": decode(r["input"]),
        "output": decode(r["output"]),
        "attributes": r["attributes"],
        "documents": [
            {
                "rank": d["rank"],
                "score": d["score"],
                "document_id": d["document_id"],
                "content": d["content"],
                "metadata": d["attributes"],
            }
            for d in node.documents
        ],
        "error": (
            {"type": r["error_type"], "message": r["error_message"]} if r["status"] == "error" else None
        ),
        "branch_decisions": [branch_json(b) for b in node.branches],
        "children": [span_json(child) for child in node.children],
    }


def score_json(s: dict[str, Any]) -> dict[str, Any]:
    return {
        k: s.get(k)
        for k in (
            "id",
            "span_id",
            "name",
            "value",
            "label",
            "source",
            "comment",
            "judge_model",
            "user_id",
            "created_at",
            "superseded_at",
        )
    } | {"current": s.get("superseded_at") is None}


def branch_json(b: dict[str, Any]) -> dict[str, Any]:
    return {k: b.get(k) for k in ("span_id", "graph", "from_node", "to_node", "condition", "created_at")}


def trace_json(view: TraceView) -> dict[str, Any]:
    s = view.summary
    return {
        "trace_id": view.trace_id,
        "name": s.get("name"),
        "status": s.get("status"),
        "error_type": s.get("error_type"),
        "start_time": s.get("start_time"),
        "latency_ms": s.get("latency_ms"),
        "ttft_ms": s.get("ttft_ms"),
        "input_tokens": s.get("input_tokens"),
        "output_tokens": s.get("output_tokens"),
        "tokens": s.get("tokens"),
        "cost_usd": s.get("cost_usd"),
        "llm_calls": s.get("llm_calls"),
        "unpriced_calls": s.get("unpriced_calls"),
        "prompt_name": s.get("prompt_name"),
        "prompt_version": s.get("prompt_version"),
        "prompt_versions": view.prompt_versions,
        "model": s.get("model"),
        "models": view.models,
        "session_id": s.get("session_id"),
        "user_id": s.get("user_id"),
        "internal": bool(s.get("internal")),
        "span_count": len(view.spans),
        "spans": [span_json(root) for root in view.roots],
        "scores": [score_json(x) for x in view.scores],
        "branch_decisions": [branch_json(b) for b in view.branches],
        "session": {"previous": view.session_prev, "next": view.session_next},
    }


# -- the summary ---------------------------------------------------------------------------------


def _stats(frame: Any) -> dict[str, Any]:
    n = len(frame)
    errors = int((frame["status"] == "error").sum()) if n else 0
    cost = frame["cost_usd"] if n else None
    latency = frame["latency_ms"].dropna() if n else []
    out: dict[str, Any] = {
        "requests": n,
        "errors": errors,
        "error_rate": errors / n if n else None,
        "cost_usd": float(cost.sum()) if n and cost.notna().any() else None,
        "input_tokens": int(frame["input_tokens"].sum()) if n else 0,
        "output_tokens": int(frame["output_tokens"].sum()) if n else 0,
        "tokens": int(frame["tokens"].sum()) if n else 0,
    }
    for q in (50, 95, 99):
        out[f"latency_p{q}_ms"] = float(latency.quantile(q / 100)) if len(latency) else None
    return out


def summary(store: Any, since: Any, until: Any) -> dict[str, Any]:
    """Requests in ``[since, until)``: counts, error rate, cost, tokens, latency percentiles,
    overall and per prompt version (the requests of ``queries.requests_query``)."""
    frame = store.traces(since=since, until=until, scores=False)
    out = _stats(frame)
    versions = []
    if len(frame):
        keyed = frame.assign(_v=frame["prompt_version"].fillna("(none)").astype(str))
        for version, group in keyed.groupby("_v", sort=True):
            versions.append({"prompt_version": version, **_stats(group)})
    out["by_prompt_version"] = versions
    return {k: clean(v) for k, v in out.items()}
