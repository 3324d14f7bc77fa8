"""What every page shares: the read-only store, the Jinja2 environment, the time range of a
request and the formatting filters (money, ms, tokens, relative time)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..analysis.store import TraceStore
from ..analysis.times import parse_time

TEMPLATES = Path(__file__).parent / "templates"
RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


class BadParameter(ValueError):
    """A query parameter that cannot be read: pages show it in one line, the API answers 400."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def money(value: Any, digits: int | None = None) -> str:
    """``$0.0123``: small amounts keep their significant digits; missing → ``–``."""
    if _missing(value):
        return "–"
    v = float(value)
    if digits is None:
        digits = 2 if abs(v) >= 1 else 4 if abs(v) >= 0.01 else 6
    return f"${v:,.{digits}f}"


def ms(value: Any) -> str:
    """``850 ms``, ``1.25 s``, ``2.0 min``; missing → ``–``."""
    if _missing(value):
        return "–"
    v = float(value)
    if v < 1000:
        return f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"
    if v < 60_000:
        return f"{v / 1000:.2f} s"
    return f"{v / 60_000:.1f} min"


def tokens(value: Any) -> str:
    """``12,345``; missing → ``–``."""
    if _missing(value):
        return "–"
    return f"{int(value):,}"


def as_datetime(value: Any) -> datetime | None:
    if _missing(value):
        return None
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return parse_time(str(value))


def isotime(value: Any) -> str:
    """ISO-8601 UTC with a ``Z`` (``2026-01-15T10:00:00.123Z``); missing → ``""``."""
    dt = as_datetime(value)
    if dt is None:
        return ""
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shorttime(value: Any) -> str:
    """``2026-01-15 10:00:03`` (UTC)."""
    dt = as_datetime(value)
    return "" if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S")


def reltime(value: Any, now: datetime | None = None) -> str:
    """``5 s ago``, ``3 min ago``, ``2 h ago``, ``4 d ago``; a future time → ``in …``."""
    dt = as_datetime(value)
    if dt is None:
        return ""
    seconds = ((now or datetime.now(timezone.utc)) - dt).total_seconds()
    ahead, seconds = seconds < 0, abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size or unit == "s":
            text = f"{int(seconds // size)} {unit}"
            return f"in {text}" if ahead else f"{text} ago"
    return ""  # pragma: no cover


def preview(value: Any, limit: int = 120) -> str:
    """One line of at most ``limit`` characters."""
    if _missing(value):
        return ""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class TimeRange:
    """A window from the query string: ``range`` (1h|24h|7d|30d|custom) or ``since``/``until``."""

    since: datetime | None
    until: datetime | None
    range: str  # the picker's value: "1h" … "30d", "custom" or "" (everything)

    def params(self) -> dict[str, str]:
        """Query parameters that reproduce this window (for links)."""
        if self.range in RANGES:
            return {"range": self.range}
        out = {}
        if self.since is not None:
            out["since"] = isotime(self.since)
        if self.until is not None:
            out["until"] = isotime(self.until)
        return out


def parse_range(request: Request, default: str = "") -> TimeRange:
    """The time window of a request: ``range=1h|24h|7d|30d`` (ending now), or ``range=custom`` /
    no range with ``since`` / ``until`` (``parse_time`` forms: ``24h``, ISO text). ``default``:
    the range when none is given ("" = unbounded). Raises ``BadParameter`` with one line."""
    q = request.query_params
    name = (q.get("range") or "").strip()
    since_text, until_text = q.get("since") or None, q.get("until") or None
    if not name and not since_text and not until_text:
        name = default
    if name and name != "custom":
        if name not in RANGES:
            raise BadParameter(f"range={name!r}: expected one of 1h, 24h, 7d, 30d, custom")
        now = datetime.now(timezone.utc)
        return TimeRange(now - RANGES[name], None, name)
    try:
        since, until = parse_time(since_text), parse_time(until_text)
    except ValueError as exc:
        raise BadParameter(str(exc)) from None
    if since is not None and until is not None and since >= until:
        raise BadParameter("since must be before until")
    return TimeRange(since, until, "custom" if (since or until) else "")


FILTERS = {
    "money": money,
    "ms": ms,
    "tokens": tokens,
    "isotime": isotime,
    "shorttime": shorttime,
    "reltime": reltime,
    "preview": preview,
}


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # everything stored is untrusted text
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


@dataclass
class UIContext:
    """One per app: the read-only store and the templates. Pages get it as
    ``request.app.state.ctx`` (also under a mount: the mounted app's own state)."""

    database_url: str
    store: TraceStore
    env: jinja2.Environment = field(default_factory=make_environment)
    token: str | None = None
    feedback: Any = None  # feedback.FeedbackWriter: the one writer (opened on the first rating)
    memo: dict[str, Any] = field(default_factory=dict)  # per-app caches of the pages (by name)

    @classmethod
    def open(cls, database_url: str, token: str | None = None) -> UIContext:
        """Open the store read-only; ``StoreNotFoundError`` when it is not there."""
        store = TraceStore(database_url, read_only=True)
        if store.engine.dialect.name == "postgresql":
            _no_jit(store.engine)
        return cls(database_url, store, token=token)

    def render(self, request: Request, name: str, status_code: int = 200, **variables: Any) -> HTMLResponse:
        """``name`` rendered with ``variables`` plus ``request``, ``root_path`` (links under a mount:
        ``{{ root_path }}/traces``), ``nav`` (defaults to ""), ``auth`` (a token is required)."""
        variables.setdefault("nav", "")
        variables.setdefault("error", None)
        html = self.env.get_template(name).render(
            request=request,
            root_path=request.scope.get("root_path", "").rstrip("/"),
            auth=self.token is not None,
            **variables,
        )
        return HTMLResponse(html, status_code=status_code)

    def close(self) -> None:
        self.store.close()


def _no_jit(engine: Any) -> None:
    """PostgreSQL's JIT compiles a query whose estimated cost is high, which a page's per-row
    lookups can reach: 1-2 s of compiling for a query that runs in 20 ms. A UI's queries are
    short: off on its connections."""
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET jit = off")
        cursor.close()
        dbapi_connection.commit()  # a SET in a transaction that is rolled back would not last

    engine.dispose()  # the connection the store check opened predates the listener


def context(request: Request) -> UIContext:
    """The ``UIContext`` of the app serving ``request``."""
    return request.app.state.ctx


# -- the trace list's query string (pages and API share it) ---------------------------------------

PAGE_SIZE = 50
MAX_LIMIT = 500
SORTS = ("time", "latency", "cost", "tokens")
STATUSES = ("ok", "error")
TRACE_PARAMS = ("since", "until", "range", "prompt_version", "model", "status", "session", "user", "search")


@dataclass(frozen=True)
class TraceQuery:
    """``/traces`` and ``/api/traces`` query parameters, checked."""

    where: Any  # queries.TraceFilter
    sort: str
    descending: bool
    page: int  # 1-based
    limit: int
    params: dict[str, str]  # the non-empty filter parameters as given (for links)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit

    def link(self, **changes: Any) -> str:
        """The query string of this list with ``changes`` (None drops a parameter)."""
        from urllib.parse import urlencode

        values: dict[str, Any] = dict(self.params)
        if self.sort != "time":
            values["sort"] = self.sort
        if not self.descending:
            values["order"] = "asc"
        if self.page != 1:
            values["page"] = str(self.page)
        for key, value in changes.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = str(value)
        return urlencode(values)


def _int_param(q: Any, key: str, default: int, low: int, high: int) -> int:
    raw = (q.get(key) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(f"{key}={raw!r}: expected a whole number") from None
    if not low <= value <= high:
        raise BadParameter(f"{key}={value}: expected {low} to {high}")
    return value


def parse_trace_query(request: Request, *, max_limit: int = MAX_LIMIT) -> TraceQuery:
    """The filters, sort and page of a trace list; ``BadParameter`` (one line) for a bad value."""
    from ..analysis.queries import TraceFilter

    q = request.query_params
    window = parse_range(request)

    def text(key: str) -> str | None:
        value = (q.get(key) or "").strip()
        return value or None

    status = text("status")
    if status is not None and status not in STATUSES:
        raise BadParameter(f"status={status!r}: expected ok or error")
    sort = text("sort") or "time"
    if sort not in SORTS:
        raise BadParameter(f"sort={sort!r}: expected one of {', '.join(SORTS)}")
    order = text("order") or "desc"
    if order not in ("asc", "desc"):
        raise BadParameter(f"order={order!r}: expected asc or desc")
    page = _int_param(q, "page", 1, 1, 1_000_000)
    limit = _int_param(q, "limit", PAGE_SIZE, 1, max_limit)
    where = TraceFilter(
        since=window.since,
        until=window.until,
        prompt_version=text("prompt_version"),
        model=text("model"),
        status=status,
        session_id=text("session"),
        user_id=text("user"),
        search=text("search"),
    )
    params = {k: v for k in TRACE_PARAMS if (v := (q.get(k) or "").strip())}
    return TraceQuery(where, sort, order == "desc", page, limit, params)
