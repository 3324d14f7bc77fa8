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

from sqlalchemy.engine import Engine


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
    from .store import traces_query  # store.py imports this module

    # One row per trace (SQL aggregates over its LLM calls), the same definitions as TraceStore.
    traces: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for row in conn.execute(traces_query(since=parse_since(since))):
            key = {"root": row.name, "model": row.model}.get(by, row.prompt_version)
            traces.append(
                {
                    "root": row,
                    "group": key,
                    "llm": row.llm_calls,
                    "in": row.input_tokens,
                    "out": row.output_tokens,
                    "cost": row.cost_usd,
                }
            )
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in traces:
        key = t["group"]
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
