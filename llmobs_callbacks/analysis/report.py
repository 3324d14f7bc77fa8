"""Per-group summaries over the store, without pandas: what ``llmobs report`` prints.

A "request" is a trace (one root run). A trace belongs to the prompt version declared on its
root, else the one its first LLM call used; its tokens and cost are the sum over its LLM spans.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..sinks.tables import SpanRow

_S = SpanRow.__table__.c


@dataclass
class GroupSummary:
    group: str
    requests: int
    errors: int
    error_rate: float
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    cost_per_request: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def parse_since(since: str | None, now: datetime | None = None) -> datetime | None:
    """'24h', '7d', '30m' or an ISO timestamp → a UTC datetime; None for no bound."""
    if not since:
        return None
    now = now or datetime.now(timezone.utc)
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    if since[-1] in units and since[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(**{units[since[-1]]: float(since[:-1])})
    parsed = datetime.fromisoformat(since)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def summarize(engine: Engine, by: str = "prompt_version", since: str | None = None) -> list[GroupSummary]:
    if by not in ("prompt_version", "model", "root"):
        raise ValueError("by must be one of: prompt_version, model, root")
    query = sa.select(
        _S.trace_id,
        _S.parent_span_id,
        _S.kind,
        _S.name,
        _S.status,
        _S.start_time,
        _S.latency_ms,
        _S.model,
        _S.prompt_version,
        _S.input_tokens,
        _S.output_tokens,
        _S.cost_usd,
    ).order_by(_S.start_time)
    start = parse_since(since)
    if start is not None:
        query = query.where(_S.start_time >= start)
    traces: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"root": None, "group": None, "llm": 0, "in": 0, "out": 0, "cost": None}
    )
    with engine.connect() as conn:
        for row in conn.execute(query):
            t = traces[row.trace_id]
            if row.parent_span_id is None:
                t["root"] = row
                if by == "prompt_version" and row.prompt_version is not None:
                    t["group"] = row.prompt_version  # declared on the whole trace
            if row.kind == "llm":
                t["llm"] += 1
                t["in"] += row.input_tokens or 0
                t["out"] += row.output_tokens or 0
                if row.cost_usd is not None:
                    t["cost"] = (t["cost"] or 0.0) + row.cost_usd
                if t["group"] is None and by != "root":
                    t["group"] = row.prompt_version if by == "prompt_version" else row.model
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in traces.values():
        if t["root"] is None:
            continue  # a trace whose root is outside the window or still running
        key = t["root"].name if by == "root" else t["group"]
        groups["(none)" if key is None else str(key)].append(t)
    result = []
    for key in sorted(groups):
        items = groups[key]
        latencies = [t["root"].latency_ms for t in items if t["root"].latency_ms is not None]
        errors = sum(1 for t in items if t["root"].status == "error")
        costs = [t["cost"] for t in items if t["cost"] is not None]
        total_cost = sum(costs) if costs else None
        result.append(
            GroupSummary(
                group=key,
                requests=len(items),
                errors=errors,
                error_rate=errors / len(items),
                llm_calls=sum(t["llm"] for t in items),
                input_tokens=sum(t["in"] for t in items),
                output_tokens=sum(t["out"] for t in items),
                cost_usd=total_cost,
                cost_per_request=None if total_cost is None else total_cost / len(items),
                p50_latency_ms=percentile(latencies, 50),
                p95_latency_ms=percentile(latencies, 95),
            )
        )
    return result


def format_table(rows: list[GroupSummary], by: str) -> str:
    headers = [
        by,
        "requests",
        "errors",
        "llm calls",
        "tokens in",
        "tokens out",
        "cost $",
        "$/request",
        "p50 ms",
        "p95 ms",
    ]

    def money(v: float | None) -> str:
        return "—" if v is None else f"{v:.6f}"

    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    body = [
        [
            r.group,
            str(r.requests),
            f"{r.errors} ({r.error_rate:.0%})",
            str(r.llm_calls),
            str(r.input_tokens),
            str(r.output_tokens),
            money(r.cost_usd),
            money(r.cost_per_request),
            ms(r.p50_latency_ms),
            ms(r.p95_latency_ms),
        ]
        for r in rows
    ]
    widths = [
        max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in body]
    return "\n".join(lines)
