"""Per-group summaries over the store, without pandas: what ``llmobs report`` prints.

Requests and their metrics are those of ``queries.py`` (the one definition every reader uses):
a user-facing trace; its prompt version the root's, else its first LLM call's; its tokens and
cost the sums over its LLM spans.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.engine import Engine

from .queries import requests_query


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
    unpriced_calls: int
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


def summarize(
    engine: Engine,
    by: str = "prompt_version",
    since: str | None = None,
    until: str | None = None,
    *,
    include_internal: bool = False,
) -> list[GroupSummary]:
    """Per-group summary of the requests (``queries.requests_query``) started in the window."""
    if by not in ("prompt_version", "model", "root"):
        raise ValueError("by must be one of: prompt_version, model, root")
    traces: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for row in conn.execute(requests_query(since, until, include_internal=include_internal)):
            key = {"root": row.name, "model": row.model}.get(by, row.prompt_version)
            traces.append(
                {
                    "root": row,
                    "group": key,
                    "llm": row.llm_calls,
                    "in": row.input_tokens,
                    "out": row.output_tokens,
                    "cost": row.cost_usd,
                    "unpriced": row.unpriced_calls,
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
                unpriced_calls=sum(t["unpriced"] for t in items),
                p50_latency_ms=percentile(latencies, 50),
                p95_latency_ms=percentile(latencies, 95),
            )
        )
    return result


def format_table(rows: list[GroupSummary], by: str) -> str:
    """The report as a text table; a cost marked ``*`` is incomplete (calls without a price)."""
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

    def money(v: float | None, unpriced: int) -> str:
        text = "—" if v is None else f"{v:.6f}"
        return f"{text}*" if unpriced else text

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
            money(r.cost_usd, r.unpriced_calls),
            money(r.cost_per_request, r.unpriced_calls),
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
    unpriced = sum(r.unpriced_calls for r in rows)
    if unpriced:
        lines.append(f"* cost incomplete: {unpriced} LLM call(s) reported tokens but have no price")
    return "\n".join(lines)
