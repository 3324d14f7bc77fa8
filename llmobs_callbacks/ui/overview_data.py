"""The reads behind the overview, anomalies and gate pages (sessions and prompts: ``session_data``,
``prompt_data``).

Everything is built on ``analysis``: requests are ``queries.requests_query`` rows (the one
definition of a request), grouped in SQL by time bucket, prompt version and model; only the
latency percentiles need per-request values (SQLite has no percentile aggregate), and they read
three narrow columns of the window's requests. No function here writes.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa

from ..analysis.queries import (
    BRANCHES,
    DOCS,
    SCORES,
    SPANS,
    bind_time,
    current_score,
    requests_query,
    user_facing,
)
from ..analysis.store import TraceStore
from .data import RANGES, TimeRange, as_datetime, isotime, shorttime

NONE = "(none)"
# Bucket sizes (seconds) a chart may use: the smallest giving at most MAX_BUCKETS points.
STEPS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_BUCKETS = 120
DEFAULT_RANGE = "24h"


# -- the window ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The overview's time window ``[since, until)`` with its bucket size and a note saying why
    it is not "the last <range> up to now" when it is not."""

    since: datetime
    until: datetime
    step_s: int
    range: str  # "1h" … "30d" or "custom"
    note: str = ""

    def params(self) -> dict[str, str]:
        """Query parameters that reproduce this exact window (for chart data and links)."""
        return {"range": "custom", "since": isotime(self.since), "until": isotime(self.until)}

    @property
    def label(self) -> str:
        return f"{shorttime(self.since)} – {shorttime(self.until)} UTC"


def newest_request(store: TraceStore) -> datetime | None:
    """Start time of the newest request (the roots' partial index answers it)."""
    r = SPANS.c
    query = sa.select(sa.func.max(r.start_time)).where(r.parent_span_id.is_(None), user_facing(r.internal))
    with store.engine.connect() as conn:
        return as_datetime(conn.execute(query).scalar())


def step_for(span: timedelta) -> int:
    seconds = max(span.total_seconds(), 1.0)
    for step in STEPS:
        if seconds / step <= MAX_BUCKETS:
            return step
    return STEPS[-1]


def choose_window(tr: TimeRange, newest: datetime | None, now: datetime | None = None) -> Window:
    """The window to show for the picker's ``tr``. A preset (default 24 h) ends now, unless the
    store has no request in it: then it ends at the newest request (an idle or old store still
    shows its last stretch of traffic), and ``note`` says so. Custom bounds are taken as given
    (a missing bound: 24 h from the other one, or up to now)."""
    now = now or datetime.now(timezone.utc)
    name = tr.range or DEFAULT_RANGE
    if name in RANGES:
        length = RANGES[name]
        until, note = now, ""
        if newest is not None and newest < now - length:
            until = newest + timedelta(seconds=1)
            note = (
                f"No requests in the last {name}: showing the {name} up to the newest request "
                f"({shorttime(newest)} UTC)."
            )
        return Window(until - length, until, step_for(length), name, note)
    until = tr.until or now
    since = tr.since or until - timedelta(hours=24)
    return Window(since, until, step_for(until - since), "custom")


# -- SQL helpers --------------------------------------------------------------------------------


def epoch_bucket(column: sa.ColumnElement, step_s: int, dialect: str) -> sa.ColumnElement:
    """The column's time floored to ``step_s`` seconds, as epoch seconds (an integer); times are
    stored as UTC on both dialects."""
    if dialect == "sqlite":
        seconds = sa.cast(sa.func.strftime("%s", column), sa.Integer)
        return (seconds // step_s) * step_s
    seconds = sa.func.extract("epoch", column)
    return sa.cast(sa.func.floor(seconds / step_s) * step_s, sa.BigInteger)


def read_rows(store: TraceStore, query: sa.Select) -> list[sa.Row]:
    with store.engine.connect() as conn:
        return list(conn.execute(query))


def as_number(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


def _requests(window: Window, **filters: Any) -> sa.Subquery:
    return requests_query(window.since, window.until, **filters).order_by(None).subquery("req")


def percentile(values: list[float] | np.ndarray, q: float) -> float | None:
    """Linear-interpolated percentile (as numpy and ``TraceStore.summary``); None when empty."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype="float64")
    return float(np.percentile(arr, q)) if arr.size else None


# -- overview -----------------------------------------------------------------------------------


@dataclass
class VersionStats:
    version: str
    requests: int = 0
    errors: int = 0
    cost_usd: float | None = None
    tokens: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def cost_per_request(self) -> float | None:
        return None if self.cost_usd is None or not self.requests else self.cost_usd / self.requests


@dataclass
class Traffic:
    """Requests of the window, grouped in SQL by bucket × prompt version × model."""

    buckets: list[int]  # epoch seconds of every bucket of the window (empty ones included)
    rows: list[dict[str, Any]]  # t, version, model, requests, errors, cost, tokens
    versions: dict[str, VersionStats] = field(default_factory=dict)
    requests: Any = None  # trace_id, version of each request (a DataFrame): for quality()
    p95_by_bucket: dict[tuple[int, str], float] = field(default_factory=dict)  # latency
    ttft_p50_by_bucket: dict[tuple[int, str], float] = field(default_factory=dict)

    @property
    def total(self) -> VersionStats:
        out = VersionStats("all")
        for v in self.versions.values():
            out.requests += v.requests
            out.errors += v.errors
            out.tokens += v.tokens
            if v.cost_usd is not None:
                out.cost_usd = (out.cost_usd or 0.0) + v.cost_usd
        return out


def traffic(store: TraceStore, window: Window) -> Traffic:
    """Counts, errors, cost and tokens per bucket, version and model, p95 latency and median
    TTFT per bucket and version, and latency / TTFT percentiles per version.

    One pass: the window's requests (``requests_query``, bucketed in SQL) as nine narrow
    columns through the store's Arrow reader, grouped by pandas. Percentiles need the values
    (SQLite has no percentile aggregate), and a second, grouped query would run the requests
    query again: on a 1M-span store the grouped query alone took longer than this read."""
    dialect = store.engine.dialect.name
    req = _requests(window)
    query = sa.select(
        req.c.trace_id,
        epoch_bucket(req.c.start_time, window.step_s, dialect).label("bucket"),
        sa.func.coalesce(req.c.prompt_version, NONE).label("version"),
        sa.func.coalesce(req.c.model, NONE).label("model"),
        sa.case((req.c.status == "error", 1), else_=0).label("error"),
        req.c.latency_ms,
        req.c.ttft_ms,
        req.c.cost_usd,
        req.c.tokens,
    )
    frame = store._frame(query)
    first = int(window.since.timestamp()) // window.step_s * window.step_s
    last = int(window.until.timestamp() - 1e-6) // window.step_s * window.step_s
    out = Traffic(list(range(first, last + 1, window.step_s)), [])
    if frame.empty:
        return out
    for col in ("latency_ms", "ttft_ms", "cost_usd"):
        frame[col] = frame[col].astype("float64")
    frame["bucket"] = frame["bucket"].astype("int64")
    frame["error"] = frame["error"].astype("int64")
    frame["tokens"] = frame["tokens"].astype("float64").fillna(0)
    frame["trace_id"] = frame["trace_id"].astype(str)
    out.requests = frame[["trace_id", "version"]]
    grouped = frame.groupby(["bucket", "version", "model"], sort=True).agg(
        requests=("error", "size"),
        errors=("error", "sum"),
        cost=("cost_usd", lambda c: c.sum(min_count=1)),
        tokens=("tokens", "sum"),
    )
    for (bucket, version, model), r in grouped.iterrows():
        out.rows.append(
            {
                "t": int(bucket),
                "version": str(version),
                "model": str(model),
                "requests": int(r["requests"]),
                "errors": int(r["errors"]),
                "cost": as_number(r["cost"]),
                "tokens": int(r["tokens"]),
            }
        )
    by_bucket = frame.groupby(["bucket", "version"])
    out.p95_by_bucket = _points(by_bucket["latency_ms"].quantile(0.95))
    out.ttft_p50_by_bucket = _points(by_bucket["ttft_ms"].quantile(0.5))
    for version, g in frame.groupby("version"):
        lat, ttft = g["latency_ms"].dropna(), g["ttft_ms"].dropna()
        cost = g["cost_usd"]
        out.versions[str(version)] = VersionStats(
            str(version),
            requests=len(g),
            errors=int(g["error"].sum()),
            cost_usd=float(cost.sum()) if cost.notna().any() else None,
            tokens=int(g["tokens"].sum()),
            p50_ms=quantile_of(lat, 0.50),
            p95_ms=quantile_of(lat, 0.95),
            p99_ms=quantile_of(lat, 0.99),
            ttft_p50_ms=quantile_of(ttft, 0.50),
            ttft_p95_ms=quantile_of(ttft, 0.95),
        )
    return out


def quantile_of(values: Any, q: float) -> float | None:
    return float(values.quantile(q)) if len(values) else None


def _points(series: Any) -> dict[tuple[int, str], float]:
    """A (bucket, version)-indexed pandas series → {(bucket, version): value}, NaN left out."""
    return {(int(b), str(v)): float(x) for (b, v), x in series.items() if not math.isnan(x)}


def _series(buckets: list[int], points: dict[tuple[int, str], float], labels: list[str]) -> list[dict]:
    """One series per label over ``buckets``; a bucket without a point is null (a gap)."""
    return [{"label": label, "values": [points.get((b, label)) for b in buckets]} for label in labels]


def _chart(
    chart_id: str, title: str, unit: str, x: list[int], series: list[dict], kind: str = "line"
) -> dict:
    return {"id": chart_id, "title": title, "unit": unit, "kind": kind, "x": x, "series": series}


def overview_charts(store: TraceStore, window: Window, data: Traffic | None = None) -> dict[str, Any]:
    """Every time-series chart of the overview as JSON for ``static/charts.js``."""
    data = data or traffic(store, window)
    x = data.buckets
    versions = sorted(data.versions)
    sums: dict[str, dict[tuple[int, str], float]] = defaultdict(lambda: defaultdict(float))
    models: set[str] = set()
    per_bucket: dict[int, int] = defaultdict(int)
    for r in data.rows:
        key = (r["t"], r["version"])
        sums["requests"][key] += r["requests"]
        sums["errors"][key] += r["errors"]
        sums["cost"][key] += r["cost"] or 0.0
        sums["tokens"][key] += r["tokens"]
        sums["model"][(r["t"], r["model"])] += r["requests"]
        models.add(r["model"])
        per_bucket[r["t"]] += r["requests"]

    def zero_filled(metric: str) -> list[dict]:
        return [{"label": v, "values": [sums[metric].get((b, v), 0) for b in x]} for v in versions]

    def share(metric: str, labels: list[str]) -> list[dict]:
        return [
            {
                "label": label,
                "values": [
                    (sums[metric].get((b, label), 0) / per_bucket[b]) if per_bucket.get(b) else None
                    for b in x
                ],
            }
            for label in labels
        ]

    p95, ttft = data.p95_by_bucket, data.ttft_p50_by_bucket
    charts = [
        _chart("requests", "Requests per prompt version", "requests", x, zero_filled("requests"), "bars"),
        _chart("errors", "Errors per prompt version", "errors", x, zero_filled("errors"), "bars"),
        _chart("cost", "Cost per prompt version", "usd", x, zero_filled("cost"), "bars"),
        _chart("tokens", "Tokens per prompt version", "tokens", x, zero_filled("tokens"), "bars"),
        _chart("latency", "p95 latency per prompt version", "ms", x, _series(x, p95, versions)),
        _chart("ttft", "Time to first token (p50) per prompt version", "ms", x, _series(x, ttft, versions)),
        _chart(
            "adoption", "Prompt-version adoption (share of requests)", "share", x, share("requests", versions)
        ),
        _chart("models", "Model adoption (share of requests)", "share", x, share("model", sorted(models))),
    ]
    return {
        "since": isotime(window.since),
        "until": isotime(window.until),
        "step_s": window.step_s,
        "charts": {c["id"]: c for c in charts},
    }


@dataclass
class BranchMix:
    graph: str
    from_node: str
    total: int
    routes: list[tuple[str, int, float]]  # to_node, count, share of this (graph, from_node)
    chart: dict[str, Any] = field(default_factory=dict)  # each route's share per time bucket


def branch_mix(store: TraceStore, window: Window) -> list[BranchMix]:
    """Routing decisions per graph and node, counted in SQL per time bucket; shares are within
    each (graph, from_node), in the window and per bucket: decisions of different graphs are
    never added up."""
    c = BRANCHES.c
    bucket = epoch_bucket(c.created_at, window.step_s, store.engine.dialect.name).label("bucket")
    query = (
        sa.select(bucket, c.graph, c.from_node, c.to_node, sa.func.count().label("n"))
        .where(c.created_at >= bind_time(window.since), c.created_at < bind_time(window.until))
        .group_by(bucket, c.graph, c.from_node, c.to_node)
    )
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    per_bucket: dict[tuple[str, str], dict[tuple[int, str], int]] = defaultdict(dict)
    for r in read_rows(store, query):
        key = (str(r.graph), str(r.from_node))
        counts[key][str(r.to_node)] += int(r.n)
        per_bucket[key][(int(r.bucket), str(r.to_node))] = int(r.n)
    first = int(window.since.timestamp()) // window.step_s * window.step_s
    last = int(window.until.timestamp() - 1e-6) // window.step_s * window.step_s
    x = list(range(first, last + 1, window.step_s))
    out = []
    for (graph, node), routes in sorted(counts.items()):
        total = sum(routes.values())
        ordered = sorted(routes.items(), key=lambda item: (-item[1], item[0]))
        points = per_bucket[(graph, node)]
        totals = defaultdict(int)
        for (b, _), n in points.items():
            totals[b] += n
        series = [
            {
                "label": to,
                "values": [points.get((b, to), 0) / totals[b] if totals.get(b) else None for b in x],
            }
            for to, _ in ordered
        ]
        chart = _chart(f"branch-{graph}-{node}", f"{graph}: routes from {node} (share)", "share", x, series)
        out.append(BranchMix(graph, node, total, [(to, n, n / total) for to, n in ordered], chart))
    return out


@dataclass
class ToolStats:
    name: str
    calls: int
    failures: int
    p95_ms: float | None = None

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


def tool_usage(store: TraceStore, window: Window) -> list[ToolStats]:
    """Calls and failures per tool in the window (users' requests only)."""
    s = SPANS.c
    query = (
        sa.select(
            s.name,
            sa.func.count().label("calls"),
            sa.func.sum(sa.case((s.status == "error", 1), else_=0)).label("failures"),
            sa.func.max(s.latency_ms).label("max_ms"),
        )
        .where(
            s.kind == "tool",
            s.start_time >= bind_time(window.since),
            s.start_time < bind_time(window.until),
            user_facing(s.internal),
        )
        .group_by(s.name)
        .order_by(sa.func.count().desc(), s.name)
    )
    return [ToolStats(r.name, int(r.calls), int(r.failures or 0)) for r in read_rows(store, query)]


@dataclass
class RetrievalStats:
    name: str
    retrievals: int
    empty: int

    @property
    def empty_rate(self) -> float:
        return self.empty / self.retrievals if self.retrievals else 0.0


def retrieval_empty(store: TraceStore, window: Window) -> list[RetrievalStats]:
    """Per retriever: successful retrievals and those that returned no document (the anomaly
    detector's definition of an empty retrieval)."""
    s = SPANS.c
    has_docs = sa.exists().where(DOCS.c.span_id == s.span_id)
    query = (
        sa.select(
            s.name,
            sa.func.count().label("n"),
            sa.func.sum(sa.case((has_docs, 0), else_=1)).label("empty"),
        )
        .where(
            s.kind == "retriever",
            s.status == "ok",
            s.start_time >= bind_time(window.since),
            s.start_time < bind_time(window.until),
            user_facing(s.internal),
        )
        .group_by(s.name)
        .order_by(s.name)
    )
    return [RetrievalStats(r.name, int(r.n), int(r.empty or 0)) for r in read_rows(store, query)]


@dataclass
class QualityRow:
    version: str
    source: str  # judge / user / rule
    name: str
    mean: float
    count: int


@dataclass
class Quality:
    """Score means per version, split by scale: scores whose values stay within 0..1 are not
    drawn on the axis of 1-5 ratings."""

    scales: dict[str, list[QualityRow]]  # "0-1", "1-5", "other" → rows
    names: dict[str, str]  # score name → its scale


def scale_of(low: float, high: float) -> str:
    if low >= 0 and high <= 1:
        return "0-1"
    if low >= 0 and high <= 5:
        return "1-5"
    return "other"


def quality(store: TraceStore, window: Window, data: Traffic | None = None) -> Quality:
    """Means of the current scores (judge, feedback, rules) of the window's requests per prompt
    version and score; a score name's scale comes from its values in the window.

    The window's requests come from ``data`` (``traffic``'s pass, not a second requests query);
    their scores are those created since the window began (a score follows its trace, as the
    anomaly detector reads them), joined by pandas."""
    data = data or traffic(store, window)
    if data.requests is None or data.requests.empty:
        return Quality({}, {})
    c = SCORES.c
    scores = store._frame(
        sa.select(c.trace_id, c.source, c.name, c.value).where(
            c.value.is_not(None), current_score(), c.created_at >= bind_time(window.since)
        )
    )
    if scores.empty:
        return Quality({}, {})
    scores["trace_id"] = scores["trace_id"].astype(str)
    scores["value"] = scores["value"].astype("float64")
    joined = scores.merge(data.requests, on="trace_id")
    if joined.empty:
        return Quality({}, {})
    bounds = joined.groupby("name")["value"].agg(["min", "max"])
    names = {str(n): scale_of(float(r["min"]), float(r["max"])) for n, r in bounds.iterrows()}
    stats = joined.groupby(["source", "name", "version"])["value"].agg(["mean", "size"])
    scales: dict[str, list[QualityRow]] = defaultdict(list)
    for (source, name, version), r in stats.iterrows():
        row = QualityRow(str(version), str(source), str(name), float(r["mean"]), int(r["size"]))
        scales[names[str(name)]].append(row)
    return Quality(dict(scales), names)


def spend_per_day(store: TraceStore, window: Window) -> list[tuple[str, float]]:
    """Priced spend per UTC day (LLM and judge calls: what a budget counts) over the window, at
    least its last 7 days."""
    dialect = store.engine.dialect.name
    since = min(window.since, window.until - timedelta(days=7))
    s = SPANS.c
    day = epoch_bucket(s.start_time, 86400, dialect).label("day")
    query = (
        sa.select(day, sa.func.sum(s.cost_usd).label("cost"))
        .where(
            s.cost_usd.is_not(None), s.start_time >= bind_time(since), s.start_time < bind_time(window.until)
        )
        .group_by(day)
        .order_by(day)
    )
    out = []
    for r in read_rows(store, query):
        date = datetime.fromtimestamp(int(r.day), tz=timezone.utc).strftime("%Y-%m-%d")
        out.append((date, float(r.cost or 0.0)))
    return out


class ResultCache:
    """The last few results of the slow analyses (anomalies, the gate: seconds on a large
    store), keyed by their inputs and the store's newest request, so new traffic is a new key
    and a result is never stale. Thread-safe; two concurrent misses both compute."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


_CACHES: weakref.WeakKeyDictionary[TraceStore, ResultCache] = weakref.WeakKeyDictionary()


def cached(store: TraceStore, key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``, or its result for the same ``key`` on the same store contents."""
    cache = _CACHES.setdefault(store, ResultCache())
    return cache.get((*key, newest_request(store)), compute)


def anomalies_at(store: TraceStore, now: datetime, window: str = "1h", baseline: str = "24h") -> list[Any]:
    """``TraceStore.anomalies`` at ``now`` (most severe first)."""
    return cached(
        store,
        ("anomalies", now, window, baseline),
        lambda: store.anomalies(now=now, window=window, baseline=baseline),
    )


def gate(store: TraceStore, baseline: str, candidate: str, since: Any = None, until: Any = None) -> Any:
    """``TraceStore.gate`` with its default criteria over ``[since, until)`` (None: all)."""
    return cached(
        store,
        ("gate", baseline, candidate, since, until),
        lambda: store.gate(baseline, candidate, since=since, until=until),
    )
