"""``StoreReader``: the store as pandas DataFrames and trace trees (``TraceStore`` adds anomalies,
the release gate and plots: ``store.py``). A leaf of the analysis layer: nothing here imports them.

Every query is a SQLAlchemy Core ``select``: filters, joins and per-trace aggregates run in the
database; pandas only shapes the (already filtered) result, computes percentiles and resamples
time series. Times come back UTC-aware (``datetime64[us, UTC]``); JSON columns decoded.

Results are read through the ADBC drivers when they are installed (``fetch.py``: Arrow columns,
no Python object per value), else through SQLAlchemy; both give the same frames.

What a *request* is and how its metrics are computed is defined once, in ``queries.py``, and
shared with ``llmobs report``, anomaly detection, the release gate and budgets: a user-facing root
span (internal work such as the judge's evaluations and index building is left out unless
``include_internal=True``); its tokens, cost and LLM call count are sums over its ``llm`` spans.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..sinks.schema import make_engine, open_store_readonly
from .fetch import ArrowReader
from .frames import empty_text, json_column, pandas_module, python_type, sqlalchemy_frame, utc_series
from .queries import (
    BRANCHES,
    DOCS,
    SPANS,
    TraceFilter,
    requests_query,
    roots_query,
    score_means_query,
    scores_query,
    sessions_query,
    spend_query,
    time_range,
    trace_ids_with_prefix,
    trace_list_query,
    user_facing,
    where_equal,
)
from .times import parse_time

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .tree import TraceTree

# The name it had before the split into reader.py and store.py: users' logging configuration names it.
logger = logging.getLogger("llmobs_callbacks.analysis.store")

SPAN_COLUMNS = [c.name for c in SPANS.columns]
CONTENT_COLUMNS = ("input", "output")  # left out of spans() unless content=True: most of a row's bytes
_JSON_TYPES = (sa.JSON,)
_GROUPINGS = ("prompt_version", "model", "root")


class StoreReader:
    """Read the llmobs store into pandas (``pip install 'llmobs-callbacks[analysis]'``); use it
    through ``TraceStore``.

    >>> ts = TraceStore("sqlite:///llmobs.db")
    >>> ts.traces(since="24h")                       # one row per request
    >>> ts.summary(by="prompt_version", since="7d")  # p50/p95/p99, tokens, cost, errors, scores
    >>> ts.trace(trace_id)                           # an indented tree; a waterfall in Jupyter
    """

    def __init__(self, url_or_engine: str | Engine, arrow: bool = True, read_only: bool = False) -> None:
        """``arrow=False`` reads through SQLAlchemy even when the ADBC drivers are installed.
        ``read_only=True`` opens a URL with ``sinks.schema.open_store_readonly``: nothing is
        created or changed, and a missing store raises ``StoreNotFoundError`` instead of reading
        as empty."""
        pandas_module()
        self._owns_engine = isinstance(url_or_engine, str)
        if isinstance(url_or_engine, str):
            self.engine: Engine = (
                open_store_readonly(url_or_engine) if read_only else make_engine(url_or_engine)
            )
        else:
            self.engine = url_or_engine
        self._reader = ArrowReader.create(self.engine, self._owns_engine) if arrow else None

    @property
    def reader(self) -> str:
        """How results are read: ``"adbc-sqlite"``, ``"adbc-postgresql"`` or ``"sqlalchemy"``."""
        return self._reader.name if self._reader is not None else "sqlalchemy"

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- low level -----------------------------------------------------------------------

    def _frame(
        self,
        query: sa.Select,
        time_columns: Iterable[str] = (),
        json_columns: Iterable[str] = (),
        split_on: sa.Column | None = None,
    ):
        """Run ``query`` (through ADBC when it can, else SQLAlchemy); convert times and JSON
        column-wise. ``split_on``: see ``ArrowReader.read``."""
        frame = self._arrow_frame(query, split_on)
        if frame is None:
            frame = sqlalchemy_frame(self.engine, query)
        for name in time_columns:
            if name in frame:
                frame[name] = utc_series(frame[name])
        for name in json_columns:
            if name in frame and len(frame):
                frame[name] = json_column(frame[name])
        return frame

    def _arrow_frame(self, query: sa.Select, split_on: sa.Column | None = None) -> pd.DataFrame | None:
        """The result through ADBC (Arrow columns, no Python object per value); None if it fails."""
        if self._reader is None:
            return None
        try:
            table = self._reader.read(query, split_on)
        except Exception as exc:  # noqa: BLE001 - any driver failure: the SQLAlchemy path answers
            logger.debug("llmobs: %s read failed, reading through SQLAlchemy: %r", self._reader.name, exc)
            return None
        return table.to_pandas()

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
        content: bool = False,
        internal: bool | None = None,
    ) -> pd.DataFrame:
        """Span rows, oldest first: every column of the ``spans`` table but the (large) ``input``
        and ``output`` texts; ``content=True`` adds those two, ``columns=[...]`` picks any.
        Every span by default; ``internal=False`` keeps the spans of users' requests only,
        ``internal=True`` those of internal work (the judge, index building).

        Each filter is a SQL ``WHERE`` term; a list means "any of". Times are UTC-aware;
        ``tags`` and ``attributes`` are decoded JSON (lists and dicts; rows whose JSON text is
        equal share one decoded object, so copy one before changing it in place).
        """
        if columns is not None:
            names = list(columns)
        else:
            names = SPAN_COLUMNS if content else [n for n in SPAN_COLUMNS if n not in CONTENT_COLUMNS]
        unknown = set(names) - set(SPAN_COLUMNS)
        if unknown:
            raise ValueError(f"unknown span columns: {sorted(unknown)}")
        c = SPANS.c
        query = sa.select(*(c[n] for n in names)).where(*time_range(c.start_time, since, until))
        query = where_equal(
            query,
            (c.kind, kind),
            (c.model, model),
            (c.prompt_version, prompt_version),
            (c.session_id, session_id),
            (c.user_id, user_id),
            (c.status, status),
            (c.trace_id, trace_id),
        )
        if internal is not None:
            query = query.where(c.internal.is_(True) if internal else user_facing(c.internal))
        query = query.order_by(c.start_time)
        if limit is not None:
            query = query.limit(limit)
        # A whole large table or time window is read in ranges of start_time, in parallel (not
        # worth its two extra small queries for a selective filter).
        selective = (kind, model, prompt_version, session_id, user_id, status, trace_id, limit, internal)
        split = c.start_time if all(f is None for f in selective) else None
        frame = self._frame(query, ("start_time", "end_time"), ("tags", "attributes"), split)
        for name in names:
            type_ = python_type(SPANS.c[name])
            if type_ is float:
                frame[name] = frame[name].astype("float64")
            elif type_ is int:
                frame[name] = frame[name].astype("Int64")
            elif type_ is bool:
                frame[name] = frame[name].astype("boolean")
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
        include_superseded: bool = False,
    ) -> pd.DataFrame:
        """Score rows (judge, user feedback, rules), by creation time: the current ones, or with
        ``include_superseded=True`` also the ratings a user later changed (``superseded_at``)."""
        query = scores_query(since, until, name, source, trace_id, include_superseded=include_superseded)
        return self._frame(query, ("created_at", "superseded_at"))

    # -- traces ----------------------------------------------------------------------------

    def _traces_query(self, *args: Any, **kwargs: Any) -> sa.Select:
        return requests_query(*args, **kwargs)

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
        include_internal: bool = False,
    ) -> pd.DataFrame:
        """One row per request (a user-facing trace; see ``queries.py``) whose root started in
        the window: ``trace_id``, ``name`` (the root's), ``start_time``, ``latency_ms``,
        ``ttft_ms`` (first LLM call), ``status``, ``error_type``, ``input_tokens``,
        ``output_tokens``, ``tokens``, ``cost_usd`` (sums over LLM calls; NaN when none was
        priced), ``llm_calls``, ``unpriced_calls`` / ``unpriced_model`` (calls with tokens but no
        price), ``prompt_name``, ``prompt_version``, ``model``, ``session_id``, ``user_id``,
        ``internal``, and ``score_<name>``: the mean of each name's current scores (with
        ``scores=True``). ``include_internal=True`` adds the judge's and index-building traces."""
        query = self._traces_query(
            since,
            until,
            name,
            status,
            session_id,
            user_id,
            prompt_version,
            model,
            trace_id,
            include_internal=include_internal,
        )
        frame = self._typed_requests(self._frame(query, ("start_time",)))
        if scores and len(frame):
            # Scores of the traces in the window (the cheap root-level filters in SQL; the left
            # merge keeps only the rows the version / model filters kept).
            root_filters = (since, until, name, status, session_id, user_id, trace_id)
            ids = (
                roots_query(*root_filters, include_internal=include_internal)
                if any(f is not None for f in root_filters)
                else None
            )
            frame = frame.merge(self._score_means(ids), on="trace_id", how="left")
        return frame

    def _score_means(self, ids: sa.Select | None) -> pd.DataFrame:
        """Mean of each score name's current scores per trace, for the traces ``ids`` selects
        (None: every trace), pivoted wide."""
        pd = pandas_module()
        long = self._frame(score_means_query(ids))
        if long.empty:
            return pd.DataFrame({"trace_id": pd.Series([], dtype=object)})
        wide = long.pivot(index="trace_id", columns="name", values="value").astype("float64")
        wide.columns = [f"score_{n}" for n in wide.columns]
        return wide.reset_index()

    def find_traces(
        self,
        where: TraceFilter | None = None,
        *,
        sort: str = "time",
        descending: bool = True,
        limit: int | None = 50,
        offset: int = 0,
        **filters: Any,
    ) -> pd.DataFrame:
        """A page of requests, newest first (or by ``sort``: ``latency``, ``cost``, ``tokens``),
        with the columns of :meth:`traces` (no scores). Filters are a ``queries.TraceFilter`` or
        its fields as keywords: ``since``, ``until``, ``prompt_version``, ``model``, ``status``,
        ``session_id``, ``user_id``, ``name``, ``min_cost``, ``min_latency_ms``, ``search`` (text
        in any span's input, output or error), ``include_internal``."""
        where = replace(where or TraceFilter(), **filters)
        query = trace_list_query(where, sort=sort, descending=descending, limit=limit, offset=offset)
        return self._typed_requests(self._frame(query, ("start_time",)))

    def resolve_trace_id(self, prefix: str) -> str:
        """The one stored trace id starting with ``prefix``; ``KeyError`` when none does,
        ``ValueError`` naming the candidates when several do."""
        prefix = str(prefix).strip()
        if not prefix:
            raise KeyError("an empty trace id")
        with self.engine.connect() as conn:
            found = [row[0] for row in conn.execute(trace_ids_with_prefix(prefix))]
        if prefix in found:
            return prefix
        if not found:
            raise KeyError(f"no trace id starts with {prefix!r}")
        if len(found) > 1:
            shown = ", ".join(found[:5]) + (", …" if len(found) > 5 else "")
            raise ValueError(f"trace id prefix {prefix!r} is ambiguous: {shown}")
        return found[0]

    def sessions(
        self,
        since: Any = None,
        until: Any = None,
        user_id: str | None = None,
        *,
        include_internal: bool = False,
        limit: int | None = 50,
        offset: int = 0,
    ) -> pd.DataFrame:
        """Sessions active in the window, most recent first: ``session_id``, ``requests``,
        ``errors``, ``first_seen``, ``last_seen``, ``cost_usd``, ``tokens``, ``user_id``,
        ``feedback`` (mean current user score) and ``feedback_count``."""
        query = sessions_query(
            since, until, user_id, include_internal=include_internal, limit=limit, offset=offset
        )
        frame = self._frame(query, ("first_seen", "last_seen"))
        for col in ("requests", "errors", "tokens", "feedback_count"):
            frame[col] = frame[col].astype("int64")
        for col in ("cost_usd", "feedback"):
            frame[col] = frame[col].astype("float64")
        return frame

    def session(self, session_id: str, include_internal: bool = False) -> pd.DataFrame:
        """One conversation turn by turn (oldest first): each request with its root's ``input``
        and ``output`` texts, latency, tokens, cost, status and ``score_<name>`` means."""
        frame = self.traces(session_id=session_id, include_internal=include_internal)
        if frame.empty:
            return frame.assign(input=empty_text(frame), output=empty_text(frame))
        c = SPANS.c
        texts = self._frame(
            sa.select(c.trace_id, c.input, c.output).where(
                c.parent_span_id.is_(None), c.session_id == session_id
            )
        )
        return frame.merge(texts, on="trace_id", how="left")

    def _typed_requests(self, frame: pd.DataFrame) -> pd.DataFrame:
        for col in ("input_tokens", "output_tokens", "tokens", "llm_calls", "unpriced_calls"):
            frame[col] = frame[col].astype("int64")
        for col in ("latency_ms", "ttft_ms", "cost_usd"):
            frame[col] = frame[col].astype("float64")
        frame["internal"] = frame["internal"].astype("boolean").fillna(False).astype(bool)
        return frame

    def trace(self, trace_id: str) -> TraceTree:
        """One trace as a tree (text ``repr``; an HTML waterfall in Jupyter)."""
        from .tree import TraceTree

        spans = self.spans(trace_id=trace_id, content=True)
        if spans.empty:
            raise KeyError(f"no trace {trace_id!r} in {self!r}")
        return TraceTree(spans, self.documents(trace_id), self.scores(trace_id=trace_id))

    # -- summaries ---------------------------------------------------------------------------

    def summary(
        self, by: str = "prompt_version", since: Any = None, until: Any = None, include_internal: bool = False
    ) -> pd.DataFrame:
        """Per group (``prompt_version``, first LLM's ``model``, or ``root`` name) of requests:
        requests, errors and error rate, p50/p95/p99 latency and TTFT (linear-interpolated
        quantiles, as numpy), LLM calls, tokens and cost (total and per request; ``unpriced_calls``
        says how many calls had no price), the share of requests whose graph took each branch
        (``branch_<to_node>``), and the mean of each score."""
        pd = pandas_module()
        if by not in _GROUPINGS:
            raise ValueError(f"by must be one of: {', '.join(_GROUPINGS)}")
        traces = self.traces(since=since, until=until, include_internal=include_internal)
        key = {"root": "name"}.get(by, by)
        traces["group"] = traces[key].fillna("(none)").astype(str) if len(traces) else []
        # Branch shares: traces per (group, to_node) over the group's requests, by a merge and
        # a count (one column per to_node decided in the window).
        c = BRANCHES.c
        pairs = self._frame(sa.select(c.trace_id, c.to_node).where(*time_range(c.created_at, since, until)))
        nodes = sorted(pairs["to_node"].dropna().unique()) if len(pairs) else []
        taken = pd.DataFrame()
        if nodes and len(traces):
            taken = (
                pairs.drop_duplicates()
                .merge(traces[["trace_id", "group"]], on="trace_id")
                .groupby(["group", "to_node"])
                .size()
                .unstack(fill_value=0)
            )
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
                "tokens_per_request": float(g["tokens"].mean()),
                "cost_usd": total_cost,
                "cost_per_request": None if total_cost is None else total_cost / n,
                "unpriced_calls": int(g["unpriced_calls"].sum()),
            }
            for metric, col in (("latency", "latency_ms"), ("ttft", "ttft_ms")):
                values = g[col].dropna()
                for q in (50, 95, 99):
                    row[f"p{q}_{metric}_ms"] = float(values.quantile(q / 100)) if len(values) else None
            for node in nodes:
                count = taken.at[group, node] if group in taken.index and node in taken.columns else 0
                row[f"branch_{node}"] = float(count) / n
            for col in g.columns:
                if col.startswith("score_"):
                    row[col] = float(g[col].mean()) if g[col].notna().any() else None
            rows.append(row)
        return pd.DataFrame(rows).set_index(by) if rows else pd.DataFrame(columns=[by]).set_index(by)

    def compare(
        self,
        a: str,
        b: str,
        by: str = "prompt_version",
        since: Any = None,
        until: Any = None,
        include_internal: bool = False,
    ):
        """Two groups of ``summary(by)`` side by side: one row per metric with columns ``a``,
        ``b``, ``delta`` (b − a) and ``relative`` ((b − a) / a; NaN when a is 0 or missing)."""
        pd = pandas_module()
        summary = self.summary(by=by, since=since, until=until, include_internal=include_internal)
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
        self,
        by: str | None = "model",
        freq: str = "1h",
        since: Any = None,
        until: Any = None,
        include_internal: bool = False,
    ) -> pd.DataFrame:
        """Spend of the requests' LLM calls per ``freq`` bucket (rows, UTC) and ``by`` value
        (columns; one ``cost_usd`` column with ``by=None``). Unpriced calls count as 0;
        ``include_internal=True`` adds the LLM calls of internal work (ingestion)."""
        pd = pandas_module()
        allowed = ("model", "prompt_version", "provider", "prompt_name", "service", None)
        if by not in allowed:
            raise ValueError(f"by must be one of: {allowed}")
        cols = ["start_time", "cost_usd"] + ([by] if by else [])
        internal = None if include_internal else False
        spans = self.spans(since=since, until=until, kind="llm", columns=cols, internal=internal)
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
        """Projected spend for the current calendar ``period`` (UTC): ``"day"`` (from 00:00),
        ``"week"`` (ISO week, from Monday 00:00) or ``"month"`` (from the 1st). The bill: every
        priced call counts, the judge's included (as budgets count it).

        Method: ``spent`` = cost of priced calls since the period began (up to ``now``); ``rate`` =
        cost over the last ``lookback`` (clipped to where the data starts, when it is younger)
        divided by that window's length; ``projected = spent + rate × time left in the period``.
        A flat run-rate from recent spend: no seasonality, no trend (for ``"day"``, a shorter
        ``lookback`` such as ``"24h"`` follows the current rate more closely).
        """
        pd = pandas_module()
        if period not in ("day", "week", "month"):
            raise ValueError("period must be 'day', 'week' or 'month'")
        now = parse_time(now) if now is not None else datetime.now(timezone.utc)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "day":
            period_start, period_end = day_start, day_start + timedelta(days=1)
        elif period == "week":
            period_start = day_start - timedelta(days=now.weekday())
            period_end = period_start + timedelta(days=7)
        else:
            period_start = day_start.replace(day=1)
            period_end = (period_start + timedelta(days=32)).replace(day=1)
        window_start = parse_time(lookback, now=now)
        c = SPANS.c
        spent_q = spend_query(period_start, now)
        recent_q = spend_query(window_start, now).add_columns(sa.func.min(c.start_time))
        with self.engine.connect() as conn:
            spent = conn.execute(spent_q).scalar_one()
            recent, first = conn.execute(recent_q).one()
        if first is not None:
            first = parse_time(first if isinstance(first, datetime) else str(first))
            window_start = max(window_start, first)  # do not dilute the rate with empty time
        window_s = max((now - window_start).total_seconds(), 1.0)
        rate_per_s = float(recent) / window_s
        remaining_s = (period_end - now).total_seconds()
        return pd.Series(
            {
                "period": period,
                "period_start": period_start,
                "period_end": period_end,
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
        pd = pandas_module()
        c = BRANCHES.c
        filters = time_range(c.created_at, since, until)
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
