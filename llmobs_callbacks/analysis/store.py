"""``TraceStore``: the store as pandas DataFrames, trace trees and plots.

Every query is a SQLAlchemy Core ``select``: filters, joins and per-trace aggregates run in the
database; pandas only shapes the (already filtered) result, computes percentiles and resamples
time series. Times come back as UTC-aware ``datetime64[ns, UTC]``.

Definitions shared with ``llmobs report`` (``report.py``): a *request* is a trace (one root
span); its tokens, cost and LLM call count are sums over its ``llm`` spans; its prompt version
is the one declared on the root, else the first LLM call's; its model is the first LLM call's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..sinks.schema import make_engine
from ..sinks.tables import BranchDecisionRow, RetrievedDocumentRow, ScoreRow, SpanRow
from .report import parse_since

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .tree import TraceTree

SPANS = SpanRow.__table__
DOCS = RetrievedDocumentRow.__table__
SCORES = ScoreRow.__table__
BRANCHES = BranchDecisionRow.__table__
SPAN_COLUMNS = [c.name for c in SPANS.columns]
_JSON_TYPES = (sa.JSON,)
_GROUPINGS = ("prompt_version", "model", "root")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "llmobs_callbacks.analysis needs pandas: pip install 'llmobs-callbacks[analysis]'"
        ) from exc
    return pandas


def _where_equal(query: sa.Select, *filters: tuple[Any, Any]) -> sa.Select:
    """``column = value`` for a string, ``column IN (...)`` for a sequence; None filters nothing."""
    for column, value in filters:
        if value is None:
            continue
        query = query.where(column == value if isinstance(value, str) else column.in_(list(value)))
    return query


def to_utc(value: str | datetime | date | None, now: datetime | None = None) -> datetime | None:
    """A time bound → an aware UTC datetime: '24h'/'7d'/'30m' (before now), ISO text or a datetime
    (naive means UTC); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_since(value, now=now)
    if not isinstance(value, datetime):  # a date, or a pandas Timestamp (a datetime subclass)
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _bind(value: datetime) -> datetime:
    # The schema's datetime type takes aware values and stores them as UTC on every dialect.
    return value.astimezone(timezone.utc)


def _time_filters(column: sa.ColumnElement, since: Any, until: Any) -> list[sa.ColumnElement]:
    out = []
    start, end = to_utc(since), to_utc(until)
    if start is not None:
        out.append(column >= _bind(start))
    if end is not None:
        out.append(column < _bind(end))
    return out


class TraceStore:
    """Read the llmobs store into pandas (``pip install 'llmobs-callbacks[analysis]'``).

    >>> ts = TraceStore("sqlite:///llmobs.db")
    >>> ts.traces(since="24h")                       # one row per request
    >>> ts.summary(by="prompt_version", since="7d")  # p50/p95/p99, tokens, cost, errors, scores
    >>> ts.trace(trace_id)                           # an indented tree; a waterfall in Jupyter
    """

    def __init__(self, url_or_engine: str | Engine) -> None:
        _pandas()
        self._owns_engine = isinstance(url_or_engine, str)
        self.engine: Engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TraceStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- low level -----------------------------------------------------------------------

    def _frame(self, query: sa.Select, time_columns: Iterable[str] = (), json_columns: Iterable[str] = ()):
        """Run ``query``; build the DataFrame column-wise; convert times and JSON vectorised."""
        pd = _pandas()
        # Skip SQLAlchemy's per-row result processing (datetime parsing, JSON decoding): pandas
        # does the same work per column, much faster on large results.
        raw = query.with_only_columns(
            *(
                sa.type_coerce(
                    getattr(c, "element", c) if isinstance(c, sa.Label) else c, sa.types.NullType()
                ).label(c.name)
                for c in query.selected_columns
            ),
            maintain_column_froms=True,
        )
        with self.engine.connect() as conn:
            result = conn.execute(raw)
            names = list(result.keys())
            # No column has a result processor (NullType): the DBAPI's plain tuples are the values.
            rows = result.cursor.fetchall() if result.cursor is not None else []
            result.close()
        frame = pd.DataFrame.from_records(rows, columns=names, coerce_float=True)
        for name in time_columns:
            if name in frame:
                frame[name] = _utc_series(frame[name])
        for name in json_columns:
            if name in frame and len(frame):
                frame[name] = _json_column(frame[name])
        return frame

    # -- rows ------------------------------------------------------------------------------

    def spans(
        self,
        since: Any = None,
        until: Any = None,
        kind: str | Sequence[str] | None = None,
        model: str | Sequence[str] | None = None,
        prompt_version: str | Sequence[str] | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        status: str | None = None,
        trace_id: str | Sequence[str] | None = None,
        limit: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Span rows (the ``spans`` table's columns, or ``columns``), oldest first.

        Each filter is a SQL ``WHERE`` term; a list means "any of".
        """
        names = list(columns) if columns is not None else SPAN_COLUMNS
        unknown = set(names) - set(SPAN_COLUMNS)
        if unknown:
            raise ValueError(f"unknown span columns: {sorted(unknown)}")
        c = SPANS.c
        query = sa.select(*(c[n] for n in names)).where(*_time_filters(c.start_time, since, until))
        query = _where_equal(
            query,
            (c.kind, kind),
            (c.model, model),
            (c.prompt_version, prompt_version),
            (c.session_id, session_id),
            (c.user_id, user_id),
            (c.status, status),
            (c.trace_id, trace_id),
        )
        query = query.order_by(c.start_time)
        if limit is not None:
            query = query.limit(limit)
        frame = self._frame(query, ("start_time", "end_time"), ("tags", "attributes"))
        for name in names:
            python_type = _python_type(SPANS.c[name])
            if python_type is float:
                frame[name] = frame[name].astype("float64")
            elif python_type is int:
                frame[name] = frame[name].astype("Int64")
        return frame

    def documents(self, trace_id: str) -> pd.DataFrame:
        """The documents retrieved in one trace, by span and rank."""
        query = sa.select(DOCS).where(DOCS.c.trace_id == trace_id).order_by(DOCS.c.span_id, DOCS.c.rank)
        return self._frame(query, (), ("attributes",))

    def scores(
        self,
        since: Any = None,
        until: Any = None,
        name: str | Sequence[str] | None = None,
        source: str | None = None,
        trace_id: str | Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Score rows (judge, user feedback, rules), by creation time."""
        c = SCORES.c
        query = sa.select(SCORES).where(*_time_filters(c.created_at, since, until))
        query = _where_equal(query, (c.name, name), (c.source, source), (c.trace_id, trace_id))
        return self._frame(query.order_by(c.created_at), ("created_at",))

    # -- traces ----------------------------------------------------------------------------

    def _traces_query(
        self,
        since: Any = None,
        until: Any = None,
        name: str | None = None,
        status: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        prompt_version: str | None = None,
        model: str | None = None,
        trace_id: str | Sequence[str] | None = None,
    ) -> sa.Select:
        c = SPANS.c
        root = SPANS.alias("root")
        r = root.c
        llm = (
            sa.select(
                c.trace_id,
                sa.func.count().label("llm_calls"),
                sa.func.sum(c.input_tokens).label("input_tokens"),
                sa.func.sum(c.output_tokens).label("output_tokens"),
                sa.func.sum(c.cost_usd).label("cost_usd"),
            )
            .where(c.kind == "llm")
            .group_by(c.trace_id)
            .subquery("llm")
        )
        first_llm = SPANS.alias("first_llm")
        f = first_llm.c

        def first(column: sa.Column) -> sa.ScalarSelect:
            # The first LLM call's value: an index lookup on (trace_id, start_time) per root.
            return (
                sa.select(f[column.name])
                # coalesce() keeps planners off the (kind, start_time) index, which SQLite (no
                # ANALYZE statistics) would otherwise scan once per trace.
                .where(f.trace_id == r.trace_id, sa.func.coalesce(f.kind, "") == "llm")
                .order_by(f.start_time, f.span_id)
                .limit(1)
                .scalar_subquery()
            )

        version = sa.func.coalesce(r.prompt_version, first(c.prompt_version))
        first_model = first(c.model)
        query = (
            sa.select(
                r.trace_id,
                r.name,
                r.start_time,
                r.latency_ms,
                first(c.ttft_ms).label("ttft_ms"),
                r.status,
                r.error_type,
                sa.func.coalesce(llm.c.input_tokens, 0).label("input_tokens"),
                sa.func.coalesce(llm.c.output_tokens, 0).label("output_tokens"),
                llm.c.cost_usd,
                version.label("prompt_version"),
                first_model.label("model"),
                r.session_id,
                r.user_id,
                sa.func.coalesce(llm.c.llm_calls, 0).label("llm_calls"),
            )
            .select_from(root.outerjoin(llm, llm.c.trace_id == r.trace_id))
            .where(r.parent_span_id.is_(None), *_time_filters(r.start_time, since, until))
        )
        query = _where_equal(
            query,
            (r.name, name),
            (r.status, status),
            (r.session_id, session_id),
            (r.user_id, user_id),
            (version, prompt_version),
            (first_model, model),
            (r.trace_id, trace_id),
        )
        return query.order_by(r.start_time)

    def traces(
        self,
        since: Any = None,
        until: Any = None,
        name: str | None = None,
        status: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        prompt_version: str | None = None,
        model: str | None = None,
        trace_id: str | Sequence[str] | None = None,
        scores: bool = True,
    ) -> pd.DataFrame:
        """One row per trace whose root started in the window: ``trace_id``, ``name`` (the root's),
        ``start_time``, ``latency_ms``, ``ttft_ms`` (first LLM call), ``status``, ``error_type``,
        ``input_tokens``, ``output_tokens``, ``cost_usd`` (sums over LLM calls), ``prompt_version``,
        ``model``, ``session_id``, ``user_id``, ``llm_calls``, and ``score_<name>``: the mean of
        each score name given to the trace (with ``scores=True``)."""
        query = self._traces_query(
            since, until, name, status, session_id, user_id, prompt_version, model, trace_id
        )
        frame = self._frame(query, ("start_time",))
        for col in ("input_tokens", "output_tokens", "llm_calls"):
            frame[col] = frame[col].astype("int64")
        for col in ("latency_ms", "ttft_ms", "cost_usd"):
            frame[col] = frame[col].astype("float64")
        if scores and len(frame):
            frame = frame.merge(self._score_means(query), on="trace_id", how="left")
        return frame

    def _score_means(self, traces_query: sa.Select) -> pd.DataFrame:
        pd = _pandas()
        ids = traces_query.with_only_columns(traces_query.selected_columns.trace_id).order_by(None)
        c = SCORES.c
        query = (
            sa.select(c.trace_id, c.name, sa.func.avg(c.value).label("value"))
            .where(c.trace_id.in_(ids), c.value.is_not(None))
            .group_by(c.trace_id, c.name)
        )
        long = self._frame(query)
        if long.empty:
            return pd.DataFrame({"trace_id": pd.Series([], dtype=object)})
        wide = long.pivot(index="trace_id", columns="name", values="value").astype("float64")
        wide.columns = [f"score_{n}" for n in wide.columns]
        return wide.reset_index()

    def trace(self, trace_id: str) -> TraceTree:
        """One trace as a tree (text ``repr``; an HTML waterfall in Jupyter)."""
        from .tree import TraceTree

        spans = self.spans(trace_id=trace_id)
        if spans.empty:
            raise KeyError(f"no trace {trace_id!r} in {self!r}")
        return TraceTree(spans, self.documents(trace_id), self.scores(trace_id=trace_id))

    # -- summaries ---------------------------------------------------------------------------

    def summary(self, by: str = "prompt_version", since: Any = None, until: Any = None) -> pd.DataFrame:
        """Per group (``prompt_version``, first LLM's ``model``, or ``root`` name): requests,
        errors and error rate, p50/p95/p99 latency and TTFT (linear-interpolated quantiles, as
        numpy), LLM calls, tokens and cost (total and per request), the share of requests whose
        graph took each branch (``branch_<to_node>``), and the mean of each score."""
        pd = _pandas()
        if by not in _GROUPINGS:
            raise ValueError(f"by must be one of: {', '.join(_GROUPINGS)}")
        traces = self.traces(since=since, until=until)
        key = {"root": "name"}.get(by, by)
        traces["group"] = traces[key].fillna("(none)").astype(str) if len(traces) else []
        branch = self._branch_flags(since, until)
        if not branch.empty:
            traces = traces.merge(branch, on="trace_id", how="left")
        rows = []
        for group, g in traces.groupby("group", sort=True):
            n = len(g)
            cost = g["cost_usd"]
            total_cost = float(cost.sum()) if cost.notna().any() else None
            row: dict[str, Any] = {
                by: group,
                "requests": n,
                "errors": int((g["status"] == "error").sum()),
                "error_rate": float((g["status"] == "error").mean()),
                "llm_calls": int(g["llm_calls"].sum()),
                "input_tokens": int(g["input_tokens"].sum()),
                "output_tokens": int(g["output_tokens"].sum()),
                "input_tokens_per_request": float(g["input_tokens"].mean()),
                "output_tokens_per_request": float(g["output_tokens"].mean()),
                "cost_usd": total_cost,
                "cost_per_request": None if total_cost is None else total_cost / n,
            }
            for metric, col in (("latency", "latency_ms"), ("ttft", "ttft_ms")):
                values = g[col].dropna()
                for q in (50, 95, 99):
                    row[f"p{q}_{metric}_ms"] = float(values.quantile(q / 100)) if len(values) else None
            for col in g.columns:
                if col.startswith("branch_"):
                    row[col] = float(g[col].fillna(0).mean())
            for col in g.columns:
                if col.startswith("score_"):
                    row[col] = float(g[col].mean()) if g[col].notna().any() else None
            rows.append(row)
        return pd.DataFrame(rows).set_index(by) if rows else pd.DataFrame(columns=[by]).set_index(by)

    def _branch_flags(self, since: Any, until: Any) -> pd.DataFrame:
        """Per trace, 1.0 for each to_node its graph routed to (traces in the window)."""
        pd = _pandas()
        c = BRANCHES.c
        query = sa.select(c.trace_id, c.to_node).where(*_time_filters(c.created_at, since, until)).distinct()
        pairs = self._frame(query)
        if pairs.empty:
            return pd.DataFrame()
        pairs["flag"] = 1.0
        wide = pairs.pivot_table(index="trace_id", columns="to_node", values="flag", aggfunc="max")
        wide.columns = [f"branch_{n}" for n in wide.columns]
        return wide.reset_index()

    def compare(self, a: str, b: str, by: str = "prompt_version", since: Any = None, until: Any = None):
        """Two groups of ``summary(by)`` side by side: one row per metric with columns ``a``,
        ``b``, ``delta`` (b − a) and ``relative`` ((b − a) / a; NaN when a is 0 or missing)."""
        pd = _pandas()
        summary = self.summary(by=by, since=since, until=until)
        missing = [g for g in (a, b) if g not in summary.index]
        if missing:
            raise KeyError(f"no {by} {missing} in the window; have {list(summary.index)}")
        frame = summary.loc[[a, b]].T.apply(pd.to_numeric, errors="coerce")
        frame.columns = [a, b]
        frame["delta"] = frame[b] - frame[a]
        base = frame[a].where(frame[a] != 0)
        frame["relative"] = frame["delta"] / base
        frame.index.name = "metric"
        return frame

    def cost(
        self, by: str | None = "model", freq: str = "1h", since: Any = None, until: Any = None
    ) -> pd.DataFrame:
        """Spend of LLM calls per ``freq`` bucket (rows, UTC) and ``by`` value (columns; one
        ``cost_usd`` column with ``by=None``). Unpriced calls count as 0."""
        pd = _pandas()
        allowed = ("model", "prompt_version", "provider", "prompt_name", "service", None)
        if by not in allowed:
            raise ValueError(f"by must be one of: {allowed}")
        cols = ["start_time", "cost_usd"] + ([by] if by else [])
        spans = self.spans(since=since, until=until, kind="llm", columns=cols)
        if spans.empty:
            return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="start_time"))
        spans["cost_usd"] = spans["cost_usd"].astype("float64").fillna(0.0)
        if by is None:
            return spans.set_index("start_time")[["cost_usd"]].resample(freq).sum()
        spans[by] = spans[by].fillna("(none)")
        table = spans.pivot_table(
            index=pd.Grouper(key="start_time", freq=freq), columns=by, values="cost_usd", aggfunc="sum"
        )
        return table.fillna(0.0)

    def forecast_cost(
        self, period: str = "month", lookback: str = "7d", now: datetime | None = None
    ) -> pd.Series:
        """Projected LLM spend for the current calendar month (UTC).

        Method: ``spent`` = cost of LLM calls since the month began (up to ``now``); ``rate`` =
        cost over the last ``lookback`` (clipped to the month's elapsed time when data is
        younger) divided by that window's length; ``projected = spent + rate × time left in the
        month``. A flat run-rate: no seasonality, no trend.
        """
        pd = _pandas()
        if period != "month":
            raise ValueError("only period='month' is supported")
        now = to_utc(now) if now is not None else datetime.now(timezone.utc)
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        window_start = to_utc(lookback, now=now)
        c = SPANS.c
        spent_q = sa.select(sa.func.coalesce(sa.func.sum(c.cost_usd), 0.0), sa.func.min(c.start_time)).where(
            c.kind == "llm", *_time_filters(c.start_time, month_start, now)
        )
        recent_q = sa.select(sa.func.coalesce(sa.func.sum(c.cost_usd), 0.0), sa.func.min(c.start_time)).where(
            c.kind == "llm", *_time_filters(c.start_time, window_start, now)
        )
        with self.engine.connect() as conn:
            spent, _ = conn.execute(spent_q).one()
            recent, first = conn.execute(recent_q).one()
        if first is not None:
            first = to_utc(first if isinstance(first, datetime) else datetime.fromisoformat(str(first)))
            window_start = max(window_start, first)  # do not dilute the rate with empty time
        window_s = max((now - window_start).total_seconds(), 1.0)
        rate_per_s = float(recent) / window_s
        remaining_s = (next_month - now).total_seconds()
        return pd.Series(
            {
                "period_start": month_start,
                "period_end": next_month,
                "now": now,
                "spent_usd": float(spent),
                "rate_usd_per_day": rate_per_s * 86400,
                "projected_usd": float(spent) + rate_per_s * remaining_s,
                "lookback": lookback,
            },
            name="forecast",
        )

    def branches(
        self, graph: str | None = None, since: Any = None, until: Any = None, freq: str | None = None
    ) -> pd.DataFrame:
        """Branch mix of LangGraph routing decisions.

        Without ``freq``: one row per (graph, from_node, to_node) with ``count`` and ``share``
        (of that graph and from_node's decisions), counted in SQL. With ``freq``: the share of
        each ``to_node`` (columns) per time bucket (rows).
        """
        pd = _pandas()
        c = BRANCHES.c
        filters = _time_filters(c.created_at, since, until)
        if graph is not None:
            filters.append(c.graph == graph)
        if freq is None:
            query = (
                sa.select(c.graph, c.from_node, c.to_node, sa.func.count().label("count"))
                .where(*filters)
                .group_by(c.graph, c.from_node, c.to_node)
                .order_by(c.graph, c.from_node, c.to_node)
            )
            frame = self._frame(query)
            if frame.empty:
                return frame.assign(share=pd.Series([], dtype="float64"))
            frame["count"] = frame["count"].astype("int64")
            frame["share"] = frame["count"] / frame.groupby(["graph", "from_node"])["count"].transform("sum")
            return frame
        frame = self._frame(sa.select(c.created_at, c.to_node).where(*filters), ("created_at",))
        if frame.empty:
            return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="created_at"))
        counts = (
            frame.groupby([pd.Grouper(key="created_at", freq=freq), "to_node"]).size().unstack(fill_value=0)
        )
        totals = counts.sum(axis=1)
        return counts.div(totals.where(totals > 0), axis=0)

    @property
    def plot(self) -> Any:
        """Matplotlib figures: ``ts.plot.latency()``, ``ts.plot.cost()``, ``ts.plot.tokens_by_version()``."""
        from .plots import Plots

        return Plots(self)


def _json_column(series: Any) -> list[Any]:
    """Decode a column of JSON texts in one ``json.loads`` call (much faster than one per row)."""
    values = series.tolist()
    if not any(isinstance(v, str) for v in values):
        return values
    return json.loads("[" + ",".join("null" if v is None or v != v else v for v in values) + "]")


def _python_type(column: sa.Column) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def _utc_series(series: Any) -> Any:
    pd = _pandas()
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC")
    present = series.dropna()
    if len(present) and isinstance(present.iloc[0], str):  # SQLite's stored text
        return pd.to_datetime(series, format="ISO8601", utc=True)
    return pd.to_datetime(series, utc=True)
