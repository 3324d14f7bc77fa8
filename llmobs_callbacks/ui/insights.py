"""The overview (``/``), sessions, prompt versions, anomalies and release-gate pages, and the JSON
their charts draw (``/api/charts/overview``) and the anomalies fragment (``/fragments/anomalies``).

Reads only, through ``overview_data``, ``session_data`` and ``prompt_data``; a parameter that
cannot be read gives the page with a one-line message (400), never a traceback.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..analysis import gate
from ..analysis.gate import GateInputError
from ..analysis.times import parse_duration, parse_time
from . import overview_data as od
from . import prompt_data, session_data
from .data import BadParameter, context, parse_range

PAGE_SIZE = 50


def _window(request: Request) -> od.Window:
    ctx = context(request)
    return od.choose_window(parse_range(request), od.newest_request(ctx.store))


def _query(params: dict[str, Any]) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def _page_number(request: Request) -> int:
    text = request.query_params.get("page") or "1"
    try:
        page = int(text)
    except ValueError:
        raise BadParameter(f"page={text!r}: expected a whole number ≥ 1") from None
    if page < 1:
        raise BadParameter(f"page={text!r}: expected a whole number ≥ 1")
    return page


# -- overview -----------------------------------------------------------------------------------


def overview(request: Request) -> Response:
    ctx = context(request)
    try:
        window = _window(request)
    except BadParameter as exc:
        return ctx.render(
            request, "overview.html", status_code=400, nav="overview", error=str(exc), window=None
        )
    store = ctx.store
    data = od.traffic(store, window)
    charts = od.overview_charts(store, window, data)
    total = data.total
    latencies = [v for v in data.versions.values()]
    return ctx.render(
        request,
        "overview.html",
        nav="overview",
        window=window,
        ranges=["1h", "24h", "7d", "30d", "custom"],
        total=total,
        versions=sorted(latencies, key=lambda v: v.version),
        charts_json=json.dumps(charts, separators=(",", ":")),
        charts_src="/api/charts/overview?" + _query(window.params()),
        chart_ids=list(charts["charts"]),
        quality=od.quality(store, window, data),
        anomalies_src="/fragments/anomalies?" + _query({"now": od.isotime(window.until), "limit": 5}),
        window_query=_query(window.params()),
    )


OVERVIEW_PANELS = ("branches", "tools", "spend")


def overview_panel(request: Request) -> Response:
    """One of the overview's slower panels (``OVERVIEW_PANELS``) for the window of the query
    string: the page loads them with htmx after it is shown."""
    ctx = context(request)
    panel = request.path_params["panel"]
    if panel not in OVERVIEW_PANELS:
        error = f"no overview panel {panel!r}; known: {', '.join(OVERVIEW_PANELS)}"
        return ctx.render(request, "overview_panel.html", status_code=404, error=error, panel=panel)
    try:
        window = _window(request)
    except BadParameter as exc:
        return ctx.render(request, "overview_panel.html", status_code=400, error=str(exc), panel=panel)
    store = ctx.store
    if panel == "branches":
        data: dict[str, Any] = {"branches": od.branch_mix(store, window)}
    elif panel == "tools":
        data = {"tools": od.tool_usage(store, window), "retrievals": od.retrieval_empty(store, window)}
    else:
        data = {"spend": od.spend_per_day(store, window)}
    return ctx.render(request, "overview_panel.html", panel=panel, **data)


def overview_charts(request: Request) -> Response:
    ctx = context(request)
    try:
        window = _window(request)
    except BadParameter as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(od.overview_charts(ctx.store, window))


# -- anomalies ----------------------------------------------------------------------------------


def _anomaly_params(request: Request) -> tuple[datetime, str, str]:
    """``now`` (default: the current time, or just after the newest request when the store has
    been idle for the whole baseline), ``window`` and ``baseline`` durations."""
    q = request.query_params
    window, baseline = q.get("window") or "1h", q.get("baseline") or "24h"
    try:
        parse_duration(window), parse_duration(baseline)
        now = parse_time(q.get("now") or None)
    except ValueError as exc:
        raise BadParameter(str(exc)) from None
    if now is None:
        now = datetime.now(timezone.utc)
        newest = od.newest_request(context(request).store)
        if newest is not None and newest < now - parse_duration(window):
            now = newest + timedelta(seconds=1)
    return now, window, baseline


def anomalies_fragment(request: Request) -> Response:
    ctx = context(request)
    try:
        now, window, baseline = _anomaly_params(request)
        limit = int(request.query_params.get("limit") or 0) or None
    except (BadParameter, ValueError) as exc:
        return ctx.render(
            request, "anomalies_list.html", status_code=400, fragment=True, error=str(exc), found=[]
        )
    found = od.anomalies_at(ctx.store, now, window, baseline)
    shown = found[:limit] if limit else found
    return ctx.render(
        request, "anomalies_list.html", fragment=True, found=shown, more=len(found) - len(shown)
    )


def anomalies_page(request: Request) -> Response:
    ctx = context(request)
    try:
        now, window, baseline = _anomaly_params(request)
    except BadParameter as exc:
        return ctx.render(
            request, "anomalies.html", status_code=400, nav="anomalies", error=str(exc), found=[]
        )
    found = od.anomalies_at(ctx.store, now, window, baseline)
    return ctx.render(
        request,
        "anomalies.html",
        nav="anomalies",
        found=found,
        now=now,
        window=window,
        baseline=baseline,
        more=0,
    )


# -- sessions -----------------------------------------------------------------------------------


def sessions_page(request: Request) -> Response:
    ctx = context(request)
    q = request.query_params
    user = (q.get("user") or "").strip() or None
    try:
        tr = parse_range(request)
        page = _page_number(request)
    except BadParameter as exc:
        return ctx.render(request, "sessions.html", status_code=400, nav="sessions", error=str(exc), rows=[])
    frame = ctx.store.sessions(tr.since, tr.until, user, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    rows = frame.to_dict("records")
    more = len(rows) > PAGE_SIZE
    base = {**tr.params(), "user": user}
    return ctx.render(
        request,
        "sessions.html",
        nav="sessions",
        rows=rows[:PAGE_SIZE],
        page=page,
        since=q.get("since") or "",
        until=q.get("until") or "",
        range=tr.range,
        user=user or "",
        prev_query=_query({**base, "page": page - 1}) if page > 1 else None,
        next_query=_query({**base, "page": page + 1}) if more else None,
    )


def session_page(request: Request) -> Response:
    ctx = context(request)
    session_id = request.path_params["session_id"]
    turns = session_data.session_turns(ctx.store, session_id)
    if not turns:
        return ctx.render(
            request,
            "session.html",
            status_code=404,
            nav="sessions",
            session_id=session_id,
            turns=[],
            error=f"no session {session_id!r} in the store",
        )
    return ctx.render(
        request,
        "session.html",
        nav="sessions",
        session_id=session_id,
        turns=turns,
        user_ids=sorted({str(u) for u in ctx.store.session(session_id)["user_id"].dropna()}),
        cost=sum(t.cost_usd or 0.0 for t in turns),
        tokens=sum(t.tokens for t in turns),
        errors=sum(t.status == "error" for t in turns),
    )


# -- prompts ------------------------------------------------------------------------------------


def prompts_page(request: Request) -> Response:
    ctx = context(request)
    q = request.query_params
    prompts = prompt_data.prompt_versions(ctx.store)
    name = q.get("name") or (next(iter(prompts)) if prompts else "")
    versions = {v.version: v for v in prompts.get(name, [])}
    error, status = None, 200
    if q.get("name") and name not in prompts:
        error, status = f"no prompt {name!r}; known: {', '.join(prompts) or 'none'}", 400
    newest = sorted(
        versions.values(), key=lambda v: v.first_seen or datetime.min.replace(tzinfo=timezone.utc)
    )
    a = q.get("a") or (newest[-2].version if len(newest) >= 2 else "")
    b = q.get("b") or (newest[-1].version if newest else "")
    diff = None
    if not error and (q.get("a") or q.get("b")) and (a not in versions or b not in versions):
        missing = [v for v in (a, b) if v not in versions]
        error, status = (
            f"no version {', '.join(repr(m) for m in missing)} of prompt {name!r}; known: "
            f"{', '.join(versions) or 'none'}",
            400,
        )
    elif a in versions and b in versions:
        diff = prompt_data.side_by_side(versions[a].text, versions[b].text)
    return ctx.render(
        request,
        "prompts.html",
        status_code=status,
        nav="prompts",
        error=error,
        prompts=prompts,
        prompt=name,
        a=a,
        b=b,
        diff=diff,
        gate_query=_query({"baseline": a, "candidate": b}) if diff is not None else None,
    )


# -- gate ---------------------------------------------------------------------------------------


def gate_page(request: Request) -> Response:
    ctx = context(request)
    q = request.query_params
    baseline, candidate = (q.get("baseline") or "").strip(), (q.get("candidate") or "").strip()
    known = prompt_data.known_versions(ctx.store)
    variables: dict[str, Any] = {
        "nav": "gate",
        "baseline": baseline,
        "candidate": candidate,
        "known": known,
        "since": q.get("since") or "",
        "until": q.get("until") or "",
    }
    if not baseline and not candidate:
        return ctx.render(request, "gate.html", result=None, **variables)
    if not baseline or not candidate:
        missing = "baseline" if not baseline else "candidate"
        error = f"give both baseline and candidate (missing {missing}); known: {_listing(known)}"
        return ctx.render(request, "gate.html", status_code=400, result=None, error=error, **variables)
    unknown = [v for v in (baseline, candidate) if v not in known]
    if unknown:
        known = prompt_data.known_versions(ctx.store, exact=True)  # the message lists requests' versions only
        error = (
            # the words of `llmobs gate` (GateInputError), so both say the same thing
            f"no requests for prompt_version {', '.join(repr(u) for u in unknown)}; known: "
            f"{', '.join(known) or 'none'}"
        )
        return ctx.render(request, "gate.html", status_code=400, result=None, error=error, **variables)
    try:
        since, until = parse_time(q.get("since") or None), parse_time(q.get("until") or None)
    except ValueError as exc:
        return ctx.render(request, "gate.html", status_code=400, result=None, error=str(exc), **variables)
    try:
        result = od.gate(ctx.store, baseline, candidate, since, until)
    except (GateInputError, ValueError, KeyError) as exc:
        error = str(exc) if "known" in str(exc) else f"{exc}; known: {_listing(known)}"
        return ctx.render(request, "gate.html", status_code=400, result=None, error=error, **variables)
    return ctx.render(
        request, "gate.html", result=result, rows=[_gate_row(r) for r in result.rows], **variables
    )


def _listing(values: list[str]) -> str:
    return ", ".join(values) or "none"


def _gate_row(r: gate.GateRow) -> dict[str, Any]:
    """A criterion's cells, formatted as ``llmobs gate`` prints them, and why it passed or failed."""
    if r.note:
        why = r.note
    elif r.status == gate.FAIL:
        why = f"significantly {r.direction or 'worse'}, and not shown within the limit ({r.limit})"
    elif r.significant and r.direction == "worse":
        why = f"significantly worse, but within the limit ({r.limit})"
    elif r.significant:
        why = f"significantly {r.direction}"
    else:
        why = "no significant change"
    return {
        "r": r,
        "baseline": gate.value_text(r.baseline, r.unit),
        "candidate": gate.value_text(r.candidate, r.unit),
        "change": gate.change_text(r),
        "interval": gate.interval_text(r),
        "p": gate.p_text(r.p_value),
        "why": why,
    }


routes: list[Route] = [
    Route("/", overview, methods=["GET"]),
    Route("/api/charts/overview", overview_charts, methods=["GET"]),
    Route("/fragments/anomalies", anomalies_fragment, methods=["GET"]),
    Route("/fragments/overview/{panel}", overview_panel, methods=["GET"]),
    Route("/anomalies", anomalies_page, methods=["GET"]),
    Route("/sessions", sessions_page, methods=["GET"]),
    Route("/sessions/{session_id:path}", session_page, methods=["GET"]),
    Route("/prompts", prompts_page, methods=["GET"]),
    Route("/gate", gate_page, methods=["GET"]),
]
