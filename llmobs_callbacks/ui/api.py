"""The JSON API: ``GET /api/traces``, ``GET /api/traces/{trace_id}``, ``GET /api/summary``,
``POST /api/feedback``. Datetimes are ISO-8601 UTC; a NaN is ``null``."""

from __future__ import annotations

import json
import math
from datetime import datetime
from decimal import Decimal
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .data import BadParameter, context, isotime, parse_range, parse_trace_query
from .feedback import FeedbackError, feedback_response, parse_feedback
from .trace_data import list_traces, load_trace, resolve, summary, trace_json


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return isotime(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Decimal):  # PostgreSQL's numeric sums
        return _plain(float(value))
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return str(value)


class APIResponse(JSONResponse):
    """JSON with ISO-8601 UTC datetimes and NaN/inf as null (valid JSON for every client)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            _plain(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()


def _error(message: str, status: int) -> APIResponse:
    return APIResponse({"error": message}, status_code=status)


def api_traces(request: Request) -> Response:
    ctx = context(request)
    try:
        tq = parse_trace_query(request)
    except BadParameter as exc:
        return _error(str(exc), 400)
    rows, has_next = list_traces(ctx.store.engine, tq)
    return APIResponse(
        {
            "items": rows,
            "page": tq.page,
            "limit": tq.limit,
            "next_page": tq.page + 1 if has_next else None,
            "previous_page": tq.page - 1 if tq.page > 1 else None,
        }
    )


def api_trace(request: Request) -> Response:
    ctx = context(request)
    given = request.path_params["trace_id"]
    trace_id = resolve(ctx.store.engine, given)
    view = load_trace(ctx.store.engine, trace_id) if trace_id else None
    if view is None:
        return _error(f"no trace {given!r} (or the prefix names several)", 404)
    return APIResponse(trace_json(view))


def api_summary(request: Request) -> Response:
    ctx = context(request)
    try:
        window = parse_range(request)
    except BadParameter as exc:
        return _error(str(exc), 400)
    body = summary(ctx.store, window.since, window.until)
    return APIResponse({"since": window.since, "until": window.until, **body})


async def api_feedback(request: Request) -> Response:
    ctx = context(request)
    raw = await request.body()
    try:
        fb = parse_feedback(raw)
    except FeedbackError as exc:
        return _error(str(exc), 422)
    try:
        result = await run_in_threadpool(ctx.feedback.write, fb)
    except TimeoutError as exc:
        return _error(str(exc), 503)
    response = feedback_response(result)
    if request.headers.get("hx-request") == "true":
        # htmx asked: the page reloads its scores from the store (the new row included).
        response.headers["HX-Trigger"] = "llmobs:feedback"
    return response


routes = [
    Route("/api/traces", api_traces, methods=["GET"]),
    Route("/api/traces/{trace_id}", api_trace, methods=["GET"]),
    Route("/api/summary", api_summary, methods=["GET"]),
    Route("/api/feedback", api_feedback, methods=["POST"]),
]
