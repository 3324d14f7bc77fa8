"""The one definition of a request and its metrics, as SQLAlchemy Core queries (no pandas).

A **request** is a trace a user's call started: a root span (``parent_span_id IS NULL``) that is
not ``internal`` (the judge's evaluations, index building and ingestion, the library's own calls
are recorded as internal traces and left out unless ``include_internal=True``). Its metrics:

- ``start_time``, ``latency_ms``, ``status``, ``error_type``: the root's (an error = the root failed);
- ``input_tokens``, ``output_tokens``, ``tokens``, ``llm_calls``: sums over its ``llm`` spans;
- ``cost_usd``: the sum over its priced LLM calls, NULL when none was priced; ``unpriced_calls``
  counts the calls that reported tokens but got no price (their ``unpriced_model`` names one), so
  a cost is known to be incomplete;
- ``prompt_name``, ``prompt_version``: declared on the root, else the first LLM call's;
  ``model``: the first LLM call's (the normalised key, see ``pricing.model_key``);
- quality: the mean of each score name given to it, counting *current* scores only (a user's
  changed rating supersedes the earlier one).

``TraceStore``, ``llmobs report``, anomaly detection, the release gate and budgets all read
through these queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from ..sinks.tables import BranchDecisionRow, RetrievedDocumentRow, ScoreRow, SpanRow
from .times import parse_time

SPANS = SpanRow.__table__
DOCS = RetrievedDocumentRow.__table__
SCORES = ScoreRow.__table__
BRANCHES = BranchDecisionRow.__table__
CLOCK_STEP_MARGIN = timedelta(minutes=5)
# Score names where a higher value is worse (rule scores and the judge's 0/1 hallucination flag).
LOWER_IS_BETTER = frozenset({"hallucination", "empty_answer", "refusal"})
_LLM = sa.literal_column("'llm'")  # rendered inline: a partial index on kind = 'llm' matches it

REQUEST_COLUMNS = (
    "trace_id",
    "name",
    "start_time",
    "latency_ms",
    "ttft_ms",
    "status",
    "error_type",
    "input_tokens",
    "output_tokens",
    "tokens",
    "cost_usd",
    "llm_calls",
    "unpriced_calls",
    "unpriced_model",
    "prompt_name",
    "prompt_version",
    "model",
    "session_id",
    "user_id",
    "internal",
)


def user_facing(column: sa.ColumnElement) -> sa.ColumnElement:
    """``internal`` is NULL (rows older than schema 2) or false: a user's work."""
    return column.is_not(True)


def current_score() -> sa.ColumnElement:
    """A score that counts: not superseded by the same user's later rating."""
    return SCORES.c.superseded_at.is_(None)


def bind_time(value: datetime) -> datetime:
    # The schema's datetime type takes aware values and stores them as UTC on every dialect.
    return value.astimezone(timezone.utc)


def time_range(column: sa.ColumnElement, since: Any, until: Any) -> list[sa.ColumnElement]:
    """``since <= column < until`` for the bounds given (``parse_time`` forms); None: unbounded."""
    out = []
    start, end = parse_time(since), parse_time(until)
    if start is not None:
        out.append(column >= bind_time(start))
    if end is not None:
        out.append(column < bind_time(end))
    return out


def where_equal(query: sa.Select, *filters: tuple[Any, Any]) -> sa.Select:
    """``column = value`` for a string, ``column IN (...)`` for a sequence; None filters nothing."""
    for column, value in filters:
        if value is None:
            continue
        query = query.where(column == value if isinstance(value, str) else column.in_(list(value)))
    return query


def roots_query(
    since: Any = None,
    until: Any = None,
    name: str | None = None,
    status: str | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
    trace_id: str | Sequence[str] | None = None,
    *,
    include_internal: bool = False,
) -> sa.Select:
    """The ids of the requests whose root matches the root-level filters (an index range on the
    roots' partial index)."""
    r = SPANS.alias("root").c
    query = sa.select(r.trace_id).where(r.parent_span_id.is_(None), *time_range(r.start_time, since, until))
    if not include_internal:
        query = query.where(user_facing(r.internal))
    return where_equal(
        query,
        (r.name, name),
        (r.status, status),
        (r.session_id, session_id),
        (r.user_id, user_id),
        (r.trace_id, trace_id),
    )


def requests_query(
    since: Any = None,
    until: Any = None,
    name: str | None = None,
    status: str | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
    prompt_version: str | Sequence[str] | None = None,
    model: str | Sequence[str] | None = None,
    trace_id: str | Sequence[str] | None = None,
    *,
    include_internal: bool = False,
) -> sa.Select:
    """One row per request (see the module docstring) whose root started in ``[since, until)``
    and matches the filters, oldest first, with the columns of ``REQUEST_COLUMNS``."""
    c = SPANS.c
    root = SPANS.alias("root")
    r = root.c
    unpriced = sa.and_(
        c.cost_usd.is_(None), sa.or_(c.input_tokens.is_not(None), c.output_tokens.is_not(None))
    )
    # Every LLM call of the selected requests in one pass (the partial index ix_spans_llm_calls
    # holds them in (trace_id, start_time) order): per trace, the sums, the count and the
    # first call's ttft / prompt / model (row_number 1), instead of correlated lookups per trace.
    calls = sa.select(
        c.trace_id,
        sa.func.row_number().over(partition_by=c.trace_id, order_by=(c.start_time, c.span_id)).label("n"),
        c.ttft_ms,
        c.prompt_name,
        c.prompt_version,
        c.model,
        c.input_tokens,
        c.output_tokens,
        c.cost_usd,
        sa.case((unpriced, 1), else_=0).label("unpriced"),
    ).where(c.kind == _LLM)
    root_filters = (since, until, name, status, session_id, user_id, trace_id)
    if any(f is not None for f in root_filters):
        # Only the LLM calls of the requests in the window, not every call in the store.
        calls = calls.where(c.trace_id.in_(roots_query(*root_filters, include_internal=include_internal)))
    if since is not None:
        # A request's calls start after its root: the planners then read only the window's calls
        # (PostgreSQL otherwise scans the window's roots once per parallel worker). The margin
        # keeps a call whose clock stepped back a little behind its root.
        calls = calls.where(c.start_time >= bind_time(parse_time(since) - CLOCK_STEP_MARGIN))
    calls = calls.subquery("calls")
    k = calls.c

    def first(column: sa.ColumnElement) -> sa.ColumnElement:
        return sa.func.max(sa.case((k.n == 1, column)))  # the one value of row_number 1

    # A GROUP BY (not a filtered window): SQLite joins an aggregate subquery through an
    # automatic index, but scans a window subquery once per root.
    llm = (
        sa.select(
            k.trace_id,
            sa.func.count().label("llm_calls"),
            sa.func.sum(k.input_tokens).label("input_tokens"),
            sa.func.sum(k.output_tokens).label("output_tokens"),
            sa.func.sum(k.cost_usd).label("cost_usd"),
            sa.func.sum(k.unpriced).label("unpriced_calls"),
            sa.func.max(sa.case((k.unpriced == 1, k.model))).label("unpriced_model"),
            first(k.ttft_ms).label("ttft_ms"),
            first(k.prompt_name).label("prompt_name"),
            first(k.prompt_version).label("prompt_version"),
            first(k.model).label("model"),
        )
        .group_by(k.trace_id)
        .subquery("llm")
    )
    version = sa.func.coalesce(r.prompt_version, llm.c.prompt_version)
    prompt = sa.case((r.prompt_version.is_not(None), r.prompt_name), else_=llm.c.prompt_name)
    input_tokens = sa.func.coalesce(llm.c.input_tokens, 0)
    output_tokens = sa.func.coalesce(llm.c.output_tokens, 0)
    first_model = llm.c.model
    query = (
        sa.select(
            r.trace_id,
            r.name,
            r.start_time,
            r.latency_ms,
            llm.c.ttft_ms,
            r.status,
            r.error_type,
            input_tokens.label("input_tokens"),
            output_tokens.label("output_tokens"),
            (input_tokens + output_tokens).label("tokens"),
            llm.c.cost_usd,
            sa.func.coalesce(llm.c.llm_calls, 0).label("llm_calls"),
            sa.func.coalesce(llm.c.unpriced_calls, 0).label("unpriced_calls"),
            llm.c.unpriced_model,
            prompt.label("prompt_name"),
            version.label("prompt_version"),
            first_model.label("model"),
            r.session_id,
            r.user_id,
            r.internal,
        )
        .select_from(root.outerjoin(llm, llm.c.trace_id == r.trace_id))
        .where(r.parent_span_id.is_(None), *time_range(r.start_time, since, until))
    )
    if not include_internal:
        query = query.where(user_facing(r.internal))
    query = where_equal(
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


def score_means_query(trace_ids: sa.Select | None = None) -> sa.Select:
    """Mean of each score name per trace over the current scores (long form: trace_id, name,
    value), for the traces ``trace_ids`` selects (None: every trace)."""
    c = SCORES.c
    query = (
        sa.select(c.trace_id, c.name, sa.func.avg(c.value).label("value"))
        .where(c.value.is_not(None), current_score())
        .group_by(c.trace_id, c.name)
    )
    if trace_ids is not None:
        query = query.where(c.trace_id.in_(trace_ids))
    return query


def scores_query(
    since: Any = None,
    until: Any = None,
    name: str | Sequence[str] | None = None,
    source: str | Sequence[str] | None = None,
    trace_id: str | Sequence[str] | None = None,
    *,
    include_superseded: bool = False,
) -> sa.Select:
    """Score rows by creation time; superseded ratings only with ``include_superseded``."""
    c = SCORES.c
    query = sa.select(SCORES).where(*time_range(c.created_at, since, until))
    if not include_superseded:
        query = query.where(current_score())
    query = where_equal(query, (c.name, name), (c.source, source), (c.trace_id, trace_id))
    return query.order_by(c.created_at)


def spend_query(since: Any = None, until: Any = None, *, include_internal: bool = True) -> sa.Select:
    """Total priced spend (LLM and judge calls) of spans started in ``[since, until)``: one row,
    one column. Budgets cap the bill, so the judge's own calls count unless told otherwise."""
    c = SPANS.c
    query = sa.select(sa.func.coalesce(sa.func.sum(c.cost_usd), 0.0)).where(
        c.cost_usd.is_not(None), *time_range(c.start_time, since, until)
    )
    if not include_internal:
        query = query.where(user_facing(c.internal))
    return query


# -- browsing: lists of traces and sessions (``llmobs traces`` / ``sessions``, the UI) ------------

TRACE_SORTS = ("time", "latency", "cost", "tokens")


@dataclass(frozen=True)
class TraceFilter:
    """What a list of requests is narrowed to; every field is optional (None: no filter).

    ``search`` finds a text (case-insensitive) in any span's input, output or error message of
    the trace; ``min_cost`` / ``min_latency_ms`` keep requests at or above those values.
    """

    since: Any = None
    until: Any = None
    prompt_version: str | Sequence[str] | None = None
    model: str | Sequence[str] | None = None
    status: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    name: str | None = None
    min_cost: float | None = None
    min_latency_ms: float | None = None
    search: str | None = None
    include_internal: bool = False


def text_found(trace_id: sa.ColumnElement, text: str) -> sa.ColumnElement:
    """Some span of the trace has ``text`` (case-insensitive) in its input, output or error."""
    s = SPANS.alias("found").c
    matches = sa.or_(
        s.input.icontains(text, autoescape=True),
        s.output.icontains(text, autoescape=True),
        s.error_message.icontains(text, autoescape=True),
    )
    return sa.exists().where(s.trace_id == trace_id, matches)


def trace_list_query(
    where: TraceFilter = TraceFilter(),
    *,
    sort: str = "time",
    descending: bool = True,
    limit: int | None = 50,
    offset: int = 0,
) -> sa.Select:
    """A page of requests matching ``where`` (the columns of ``requests_query``), newest first
    by default; ``sort`` is one of ``TRACE_SORTS``."""
    if sort not in TRACE_SORTS:
        raise ValueError(f"sort must be one of: {', '.join(TRACE_SORTS)}")
    query = requests_query(
        where.since,
        where.until,
        where.name,
        where.status,
        where.session_id,
        where.user_id,
        where.prompt_version,
        where.model,
        include_internal=where.include_internal,
    )
    selected = query.selected_columns
    if where.min_cost is not None:
        query = query.where(selected.cost_usd >= where.min_cost)
    if where.min_latency_ms is not None:
        query = query.where(selected.latency_ms >= where.min_latency_ms)
    if where.search:
        query = query.where(text_found(selected.trace_id, where.search))
    key = {
        "time": selected.start_time,
        "latency": selected.latency_ms,
        "cost": selected.cost_usd,
        "tokens": selected.tokens,
    }[sort]
    order = key.desc() if descending else key.asc()
    if sort != "time":  # NULLs last, then newest first among equals
        order = order.nulls_last()
    query = query.order_by(None).order_by(order, selected.start_time.desc(), selected.trace_id)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return query


def trace_ids_with_prefix(prefix: str, limit: int = 11) -> sa.Select:
    """Distinct trace ids starting with ``prefix`` (a range on the trace-id index, then an exact
    prefix test), at most ``limit``."""
    c = SPANS.c
    query = sa.select(c.trace_id).where(c.trace_id >= prefix, c.trace_id.startswith(prefix, autoescape=True))
    return query.distinct().order_by(c.trace_id).limit(limit)


def sessions_query(
    since: Any = None,
    until: Any = None,
    user_id: str | None = None,
    session_id: str | None = None,
    *,
    include_internal: bool = False,
    limit: int | None = 50,
    offset: int = 0,
) -> sa.Select:
    """One row per session (requests with a ``session_id``) active in the window, most recently
    active first: ``session_id``, ``requests``, ``errors``, ``first_seen``, ``last_seen``,
    ``cost_usd``, ``tokens``, ``user_id`` (one of its users), ``feedback`` (mean current user
    score) and ``feedback_count``."""
    requests = requests_query(
        since, until, session_id=session_id, user_id=user_id, include_internal=include_internal
    )
    requests = requests.where(requests.selected_columns.session_id.is_not(None))
    r = requests.order_by(None).subquery("requests")
    sc = SCORES.c
    feedback = (
        sa.select(
            sc.trace_id,
            sa.func.avg(sc.value).label("value"),
            sa.func.count().label("n"),
        )
        .where(sc.source == "user", sc.value.is_not(None), current_score())
        .group_by(sc.trace_id)
        .subquery("feedback")
    )
    last_seen = sa.func.max(r.c.start_time)
    query = (
        sa.select(
            r.c.session_id,
            sa.func.count().label("requests"),
            sa.func.sum(sa.case((r.c.status == "error", 1), else_=0)).label("errors"),
            sa.func.min(r.c.start_time).label("first_seen"),
            last_seen.label("last_seen"),
            sa.func.sum(r.c.cost_usd).label("cost_usd"),
            sa.func.sum(r.c.tokens).label("tokens"),
            sa.func.max(r.c.user_id).label("user_id"),
            (sa.func.sum(feedback.c.value * feedback.c.n) / sa.func.sum(feedback.c.n)).label("feedback"),
            sa.func.coalesce(sa.func.sum(feedback.c.n), 0).label("feedback_count"),
        )
        .select_from(r.outerjoin(feedback, feedback.c.trace_id == r.c.trace_id))
        .group_by(r.c.session_id)
        .order_by(last_seen.desc(), r.c.session_id)
    )
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return query


# -- the UI's pages of requests: the newest first, computed per shown row ------------------------


def _per_root_requests(name: str = "root") -> tuple[sa.Select, Any, dict[str, sa.ColumnElement]]:
    """``requests_query``'s columns as correlated lookups per root (the LLM calls' index), not
    one aggregate over every call: for queries that keep a few roots. Returns the select (roots
    only, no other filter), the roots' columns and the computed ``first_version``, ``model``,
    ``cost`` (for filters)."""
    root = SPANS.alias(name)
    r = root.c
    k = SPANS.alias(f"{name}_call").c
    of_root = (k.trace_id == r.trace_id, k.kind == _LLM)
    unpriced = sa.and_(
        k.cost_usd.is_(None), sa.or_(k.input_tokens.is_not(None), k.output_tokens.is_not(None))
    )

    def total(expr: sa.ColumnElement) -> sa.ScalarSelect:
        return sa.select(expr).where(*of_root).scalar_subquery()

    def first(column: sa.ColumnElement) -> sa.ScalarSelect:
        return sa.select(column).where(*of_root).order_by(k.start_time, k.span_id).limit(1).scalar_subquery()

    input_tokens = sa.func.coalesce(total(sa.func.sum(k.input_tokens)), 0)
    output_tokens = sa.func.coalesce(total(sa.func.sum(k.output_tokens)), 0)
    first_version = first(k.prompt_version)
    prompt = sa.case((r.prompt_version.is_not(None), r.prompt_name), else_=first(k.prompt_name))
    model = first(k.model)
    cost = total(sa.func.sum(k.cost_usd))
    query = sa.select(
        r.trace_id,
        r.name,
        r.start_time,
        r.latency_ms,
        first(k.ttft_ms).label("ttft_ms"),
        r.status,
        r.error_type,
        input_tokens.label("input_tokens"),
        output_tokens.label("output_tokens"),
        (input_tokens + output_tokens).label("tokens"),
        cost.label("cost_usd"),
        total(sa.func.count()).label("llm_calls"),
        sa.func.coalesce(total(sa.func.sum(sa.case((unpriced, 1), else_=0))), 0).label("unpriced_calls"),
        total(sa.func.max(sa.case((unpriced, k.model)))).label("unpriced_model"),
        prompt.label("prompt_name"),
        sa.func.coalesce(r.prompt_version, first_version).label("prompt_version"),
        model.label("model"),
        r.session_id,
        r.user_id,
        r.internal,
    ).where(r.parent_span_id.is_(None))
    return query, r, {"first_version": first_version, "model": model, "cost": cost}


def root_inputs_query(trace_ids: Sequence[str], with_input: bool) -> sa.Select:
    """The root spans of ``trace_ids``: ``trace_id``, ``attributes`` (its metadata) and, when
    ``with_input``, its ``input`` text (the release gate pairs requests by these)."""
    s = SPANS.c
    cols = [s.trace_id, s.attributes] + ([s.input] if with_input else [])
    return sa.select(*cols).where(s.parent_span_id.is_(None), s.trace_id.in_(trace_ids))


def request_query(trace_id: str) -> sa.Select:
    """The one request ``trace_id`` is (the columns of ``requests_query``; internal traces too),
    looked up by its id: no scan of the roots."""
    query, r, _ = _per_root_requests()
    return query.where(r.trace_id == trace_id)


def _any_of(column: sa.ColumnElement, value: str | Sequence[str]) -> sa.ColumnElement:
    return column == value if isinstance(value, str) else column.in_(list(value))


def trace_page_query(
    where: TraceFilter = TraceFilter(),
    *,
    sort: str = "time",
    descending: bool = True,
    limit: int = 50,
    offset: int = 0,
    newer_than: datetime | None = None,
) -> sa.Select:
    """The rows of ``trace_list_query`` (same columns, same filters, same order), computed for
    the shown page only. Two steps: the page's roots (walked in start-time order on the roots'
    index, filters that need an LLM call's columns looked up per root), then the LLM sums and
    first call of those ``limit`` roots only, from the LLM calls' index. Sorting by cost or
    tokens needs every request's sums: that is ``trace_list_query``.

    ``newer_than``: only roots started at or after it (a narrower window than ``where.since``:
    ``ui.trace_data`` widens it until the page is full, so a planner never has to guess how many
    roots a filter skips)."""
    if sort in ("cost", "tokens"):
        return trace_list_query(where, sort=sort, descending=descending, limit=limit, offset=offset)
    if sort not in TRACE_SORTS:
        raise ValueError(f"sort must be one of: {', '.join(TRACE_SORTS)}")
    _, r, computed = _per_root_requests("page_root")
    ids = sa.select(r.trace_id, r.start_time).where(
        r.parent_span_id.is_(None), *time_range(r.start_time, where.since, where.until)
    )
    if newer_than is not None:
        ids = ids.where(r.start_time >= bind_time(newer_than))
    if not where.include_internal:
        ids = ids.where(user_facing(r.internal))
    ids = where_equal(
        ids,
        (r.name, where.name),
        (r.status, where.status),
        (r.session_id, where.session_id),
        (r.user_id, where.user_id),
        (computed["model"], where.model),
    )
    if where.prompt_version is not None:
        # coalesce(root's, first call's) = v, spelled so that a planner can estimate the root's
        # part from its statistics (a coalesce over a subquery it cannot).
        v = where.prompt_version
        ids = ids.where(
            sa.or_(
                _any_of(r.prompt_version, v),
                sa.and_(r.prompt_version.is_(None), _any_of(computed["first_version"], v)),
            )
        )
    if where.min_cost is not None:
        ids = ids.where(computed["cost"] >= where.min_cost)
    if where.min_latency_ms is not None:
        ids = ids.where(r.latency_ms >= where.min_latency_ms)
    if where.search:
        ids = ids.where(text_found(r.trace_id, where.search))

    def order(c: Any) -> list[sa.ColumnElement]:
        if sort == "time":
            first = c.start_time.desc() if descending else c.start_time.asc()
        else:
            first = (c.latency_ms.desc() if descending else c.latency_ms.asc()).nulls_last()
        return [first, c.start_time.desc(), c.trace_id]

    ids = ids.order_by(*order(r)).limit(limit)
    if offset:
        ids = ids.offset(offset)
    shown = ids.subquery("page")
    page, p, _ = _per_root_requests("root")
    # A join on (trace id, start time), columns the roots' indexes hold (SQLite's covers them):
    # each shown root is one seek, where ``IN (ids)`` let SQLite scan the roots' index for each.
    root = p.trace_id.table
    on = sa.and_(root.c.trace_id == shown.c.trace_id, root.c.start_time == shown.c.start_time)
    return page.select_from(shown.join(root, on)).order_by(*order(p))
