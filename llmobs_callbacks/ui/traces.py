"""The pages ``/traces`` (a filterable, sortable, paged list; htmx swaps the table) and
``/traces/{trace_id}`` (header, the span waterfall with each span's details, scores, feedback)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..analysis.queries import SPANS
from ..sinks.tables import PromptVersionRow
from .data import BadParameter, UIContext, context, parse_trace_query
from .trace_data import decode, list_traces, load_trace, resolve

LONG_TEXT = 2000  # characters shown before "show more"
_CHOICES_TTL_S = 60.0


class _Choices:
    """The filter form's prompt versions and models, read at most once a minute (new ones
    appear while the app writes; a full scan per page view would not be cheap)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -_CHOICES_TTL_S
        self._value: tuple[list[str], list[str]] = ([], [])

    def get(self, engine: sa.Engine) -> tuple[list[str], list[str]]:
        with self._lock:
            if time.monotonic() - self._at < _CHOICES_TTL_S:
                return self._value
            p = PromptVersionRow.__table__.c
            c = SPANS.c
            with engine.connect() as conn:
                versions = sorted({v for (v,) in conn.execute(sa.select(p.prompt_version).distinct()) if v})
                models = sorted(
                    {m for (m,) in conn.execute(sa.select(c.model).where(c.kind == "llm").distinct()) if m}
                )
            self._value, self._at = (versions, models), time.monotonic()
            return self._value


def _choices(ctx: UIContext) -> _Choices:
    return ctx.memo.setdefault("trace_choices", _Choices())


def traces_page(request: Request) -> Response:
    ctx = context(request)
    fragment = (
        request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == "trace-table"
    )
    template = "_traces_table.html" if fragment else "traces.html"
    try:
        tq = parse_trace_query(request, max_limit=200)
    except BadParameter as exc:
        status = 200 if fragment else 400  # htmx swaps 2xx only: the line must show
        return ctx.render(
            request,
            template,
            status_code=status,
            nav="traces",
            error=str(exc),
            tq=None,
            rows=[],
            has_next=False,
            q=request.query_params,
            versions=[],
            models=[],
        )
    rows, has_next = list_traces(ctx.store.engine, tq)
    versions, models = ([], []) if fragment else _choices(ctx).get(ctx.store.engine)
    return ctx.render(
        request,
        template,
        nav="traces",
        tq=tq,
        rows=rows,
        has_next=has_next,
        q=request.query_params,
        versions=versions,
        models=models,
    )


def trace_page(request: Request) -> Response:
    ctx = context(request)
    given = request.path_params["trace_id"]
    trace_id = resolve(ctx.store.engine, given)
    view = load_trace(ctx.store.engine, trace_id) if trace_id else None
    if view is None:
        return ctx.render(request, "trace_missing.html", status_code=404, nav="traces", given=given)
    return ctx.render(request, "trace.html", nav="traces", t=view, s=view.summary, render=Content)


def trace_scores(request: Request) -> Response:
    """The scores section alone (htmx reloads it after a feedback post)."""
    ctx = context(request)
    trace_id = resolve(ctx.store.engine, request.path_params["trace_id"])
    view = load_trace(ctx.store.engine, trace_id) if trace_id else None
    if view is None:
        return Response("no such trace", status_code=404)
    return ctx.render(request, "_scores.html", t=view)


class Content:
    """How a stored input or output is shown: chat messages as role-labelled messages, JSON
    pretty-printed, long text collapsible; missing content says why."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.value = decode(raw)
        self.redacted = isinstance(raw, str) and "[REDACTED" in raw

    @property
    def missing(self) -> bool:
        return self.raw is None or self.raw == ""

    @property
    def messages(self) -> list[dict[str, str]] | None:
        """Chat messages (lists of {role|type, content}, possibly nested per prompt), else None."""
        value = self.value
        if isinstance(value, dict) and isinstance(value.get("messages"), list):
            value = value["messages"]
        if isinstance(value, dict) and "content" in value and ({"type", "role"} & value.keys()):
            value = [value]  # one message (a chat model's answer)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
            value = value[0]  # a chat model's [[messages]] batch of one
        if not isinstance(value, list) or not value:
            return None
        out = []
        for m in value:
            if not isinstance(m, dict) or "content" not in m:
                return None
            role = m.get("role") or m.get("type") or "message"
            content = m["content"]
            if not isinstance(content, str):
                content = json.dumps(content, ensure_ascii=False, indent=2)
            if m.get("tool_calls"):
                content += "\n" + json.dumps(m["tool_calls"], ensure_ascii=False, indent=2)
            out.append({"role": str(role), "content": content})
        return out

    @property
    def text(self) -> str:
        value = self.value
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2)

    @staticmethod
    def split(text: str) -> tuple[str, str]:
        """(shown, the rest behind "show more")."""
        if len(text) <= LONG_TEXT:
            return text, ""
        return text[:LONG_TEXT], text[LONG_TEXT:]

    @staticmethod
    def pretty(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)


routes = [
    Route("/traces", traces_page, methods=["GET"]),
    Route("/traces/{trace_id}/scores", trace_scores, methods=["GET"]),
    Route("/traces/{trace_id}", trace_page, methods=["GET"]),
]
