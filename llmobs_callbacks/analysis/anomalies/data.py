"""What the detectors read: one SQL pass over a stretch of time (``queries.py``'s requests, tool
calls, retrievals, routing decisions, scores and prompt versions' first appearance)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .. import prompt_drift
from ..queries import BRANCHES, DOCS, SCORES, SPANS, current_score, requests_query, user_facing
from .model import MISSING_GROUP

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..reader import StoreReader


@dataclass
class Data:
    """What the detectors read, for one stretch of time (see :func:`load`)."""

    start: datetime
    end: datetime
    traces: pd.DataFrame  # start_time, status, latency_ms, tokens, cost_usd, pv, model
    tools: pd.DataFrame  # start_time, name, status
    retrievals: pd.DataFrame  # start_time, name, documents
    decisions: pd.DataFrame  # created_at, trace_id, graph, from_node, to_node, pv
    scores: pd.DataFrame  # trace_id, name, value, start_time (the trace's), pv
    version_first_seen: dict[str, datetime]  # earliest span of each version, over the whole store
    prompt_templates: prompt_drift.PromptTemplates = field(default_factory=prompt_drift.PromptTemplates)


def _pd() -> Any:
    import pandas

    return pandas


def _read(store: StoreReader, query: sa.Select, time_columns: Sequence[str]) -> pd.DataFrame:
    pd = _pd()
    with store.engine.connect() as conn:
        result = conn.execute(query)
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    for name in time_columns:
        frame[name] = _utc(frame[name])
    return frame


def _utc(series: Any) -> Any:
    pd = _pd()
    if len(series) == 0:
        return pd.Series([], dtype="datetime64[ns, UTC]")
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC")
    if isinstance(series.iloc[0], str):
        return pd.to_datetime(series, format="ISO8601", utc=True)
    return pd.to_datetime(series, utc=True)


def requests(
    store: StoreReader, start: datetime, end: datetime, include_internal: bool = False
) -> pd.DataFrame:
    """One row per request started in ``[start, end)`` (``queries.requests_query``: tokens and cost
    summed over its LLM calls, its prompt version the root's else the first LLM call's, its model
    the first LLM call's), in the detectors' shape: a missing version or model is ``""``."""
    pd = _pd()
    rows = _read(store, requests_query(start, end, include_internal=include_internal), ["start_time"])
    return pd.DataFrame(
        {
            "trace_id": rows["trace_id"].astype(str),
            "start_time": rows["start_time"],
            "status": rows["status"],
            "latency_ms": pd.to_numeric(rows["latency_ms"], errors="coerce").astype("float64"),
            "tokens": pd.to_numeric(rows["tokens"], errors="coerce").fillna(0.0).astype("float64"),
            "cost_usd": pd.to_numeric(rows["cost_usd"], errors="coerce").astype("float64"),
            "pv": rows["prompt_version"].fillna(MISSING_GROUP).astype(str),
            "model": rows["model"].fillna(MISSING_GROUP).astype(str),
        }
    ).sort_values("start_time", kind="stable", ignore_index=True)


def score_values(store: StoreReader, since: datetime) -> pd.DataFrame:
    """``trace_id``, ``name``, ``value`` of the current scores created since ``since`` (with a value)."""
    sc = SCORES.c
    frame = _read(
        store,
        sa.select(sc.trace_id, sc.name, sc.value).where(
            sc.created_at >= since, sc.value.is_not(None), current_score()
        ),
        [],
    )
    frame["trace_id"] = frame["trace_id"].astype(str)
    frame["value"] = frame["value"].astype("float64")
    return frame


def load(store: StoreReader, start: datetime, end: datetime, include_internal: bool = False) -> Data:
    """Read requests (``queries.requests_query``), tool calls, retrievals with their document
    counts, routing decisions and scores of ``[start, end)``, and each prompt version's first
    appearance."""
    pd = _pd()
    traces = requests(store, start, end, include_internal)
    s = SPANS.c
    tools = _read(
        store,
        sa.select(s.start_time, s.name, s.status).where(
            s.kind == "tool", s.start_time >= start, s.start_time < end, user_facing(s.internal)
        ),
        ["start_time"],
    )
    docs = (
        sa.select(DOCS.c.span_id, sa.func.count().label("documents"))
        .group_by(DOCS.c.span_id)
        .subquery("docs")
    )
    retrievals = _read(
        store,
        sa.select(s.start_time, s.name, sa.func.coalesce(docs.c.documents, 0).label("documents"))
        .select_from(SPANS.outerjoin(docs, docs.c.span_id == s.span_id))
        .where(
            s.kind == "retriever",
            s.status == "ok",
            s.start_time >= start,
            s.start_time < end,
            user_facing(s.internal),
        ),
        ["start_time"],
    )
    c = BRANCHES.c
    decisions = _read(
        store,
        sa.select(c.created_at, c.trace_id, c.graph, c.from_node, c.to_node).where(
            c.created_at >= start, c.created_at < end
        ),
        ["created_at"],
    )
    version_of = dict(zip(traces["trace_id"], traces["pv"], strict=True))
    decisions["pv"] = decisions["trace_id"].astype(str).map(version_of).fillna(MISSING_GROUP)
    # Scores of the window's traces may be written later (the judge runs after the trace).
    raw_scores = score_values(store, start)
    if len(raw_scores):
        by_trace = traces.set_index("trace_id")[["start_time", "pv"]]
        scores = raw_scores.join(by_trace, on="trace_id", how="inner")
    else:
        scores = pd.DataFrame({"trace_id": [], "name": [], "value": [], "start_time": [], "pv": []})
    versions = sorted(set(traces["pv"]) - {MISSING_GROUP})
    first_seen: dict[str, datetime] = {}
    if versions:
        query = (
            sa.select(s.prompt_version, sa.func.min(s.start_time).label("first"))
            .where(s.prompt_version.in_(versions))
            .group_by(s.prompt_version)
        )
        frame = _read(store, query, ["first"])
        first_seen = {
            str(v): t.to_pydatetime() for v, t in zip(frame["prompt_version"], frame["first"], strict=True)
        }
    templates = prompt_drift.load(store, start, end)
    return Data(start, end, traces, tools, retrievals, decisions, scores, first_seen, templates)
