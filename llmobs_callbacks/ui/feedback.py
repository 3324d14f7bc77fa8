"""Feedback writes: the one writer of the UI (``FeedbackWriter``, an ``LLMObs`` opened on the
first rating), the body check shared by ``POST /api/feedback`` and ``feedback_app``, and the
signed per-trace endpoint for a user's own app:

>>> token = sign_trace(trace_id, secret)            # in your backend, sent to the browser
>>> app.mount("/feedback", feedback_app(obs, secret)) # the browser POSTs {"trace_id", "token", "score"}
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..analysis.queries import SCORES
from ..scores import UNKNOWN_TRACE_LABEL

if TYPE_CHECKING:
    from ..obs import LLMObs

MAX_COMMENT = 10_000
MAX_ID = 255


class FeedbackError(ValueError):
    """A malformed feedback body (answered with 422 and this message)."""


@dataclass(frozen=True)
class Feedback:
    trace_id: str
    score: float
    comment: str = ""
    name: str = "user_feedback"
    user_id: str | None = None
    span_id: str | None = None


def _text_field(body: dict[str, Any], key: str, *, limit: int, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise FeedbackError(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise FeedbackError(f"{key} must be a string, not {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise FeedbackError(f"{key} is required")
    if len(value) > limit:
        raise FeedbackError(f"{key} is longer than {limit} characters")
    return value or None


def parse_feedback(raw: bytes) -> Feedback:
    """A feedback body (JSON ``{"trace_id", "score", "comment"?, "user_id"?, "name"?,
    "span_id"?}``) → ``Feedback``; ``FeedbackError`` with one line otherwise."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedbackError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise FeedbackError('the body must be a JSON object: {"trace_id": ..., "score": ...}')
    trace_id = _text_field(body, "trace_id", limit=MAX_ID, required=True)
    score = body.get("score")
    if score is None:
        raise FeedbackError("score is required (1 = 👍, 0 = 👎, or any number)")
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise FeedbackError(f"score must be a number, not {type(score).__name__}")
    if not math.isfinite(score):
        raise FeedbackError("score must be a finite number")
    return Feedback(
        trace_id=str(trace_id),
        score=float(score),
        comment=_text_field(body, "comment", limit=MAX_COMMENT) or "",
        name=_text_field(body, "name", limit=128) or "user_feedback",
        user_id=_text_field(body, "user_id", limit=MAX_ID),
        span_id=_text_field(body, "span_id", limit=MAX_ID),
    )


class FeedbackWriter:
    """Writes feedback through ``obs.feedback`` (the same score everywhere), opening an
    ``LLMObs`` for the store on first use (the UI stays read-only until someone rates), with
    Prometheus off (no metrics in the host app's registry) and no spool: a 201 means stored."""

    def __init__(self, url_or_obs: str | LLMObs, timeout_s: float = 10.0) -> None:
        self._url = url_or_obs if isinstance(url_or_obs, str) else None
        self._obs: LLMObs | None = None if isinstance(url_or_obs, str) else url_or_obs
        self._owns = isinstance(url_or_obs, str)
        self._lock = threading.Lock()
        self.timeout_s = timeout_s

    def obs(self) -> LLMObs:
        with self._lock:
            if self._obs is None:
                from ..obs import LLMObs

                self._obs = LLMObs(
                    self._url,
                    prometheus_registry=False,
                    spool_dir=False,
                    handle_sigterm=False,
                )
            return self._obs

    def write(self, fb: Feedback) -> tuple[str, bool]:
        """Store one rating and wait for it; ``(score id, the trace is stored)``. ``TimeoutError``
        when the store did not take it in time."""
        obs = self.obs()
        score_id = obs.feedback(
            fb.trace_id, fb.score, fb.comment, fb.name, user_id=fb.user_id, span_id=fb.span_id
        )
        if not obs.flush(self.timeout_s):
            raise TimeoutError("the store did not take the feedback in time")
        with obs.sql.engine.connect() as conn:
            label = conn.execute(sa.select(SCORES.c.label).where(SCORES.c.id == score_id)).scalar()
        return score_id, label != UNKNOWN_TRACE_LABEL

    async def write_async(self, fb: Feedback) -> tuple[str, bool]:
        return await asyncio.to_thread(self.write, fb)

    def close(self) -> None:
        with self._lock:
            if self._obs is not None and self._owns:
                self._obs.shutdown()
            self._obs = None if self._owns else self._obs


def feedback_response(result: tuple[str, bool]) -> JSONResponse:
    score_id, known = result
    if known:
        return JSONResponse({"id": score_id, "status": "stored"}, status_code=201)
    return JSONResponse(
        {"id": score_id, "status": "stored; the trace is not in the store yet, linked when it arrives"},
        status_code=202,
    )


# -- signed per-trace feedback --------------------------------------------------------------------


def sign_trace(trace_id: str, secret: str | bytes) -> str:
    """The token that lets a browser rate ``trace_id`` (and nothing else): HMAC-SHA256 of the id
    with ``secret``, URL-safe base64 without padding."""
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the secret is empty")
    digest = hmac.new(key, str(trace_id).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify_trace(trace_id: str, token: Any, secret: str | bytes) -> bool:
    return isinstance(token, str) and hmac.compare_digest(
        sign_trace(trace_id, secret).encode(), token.encode()
    )


def feedback_app(
    obs_or_url: LLMObs | str,
    secret: str | bytes,
    *,
    allow_origins: list[str] | None = None,
    timeout_s: float = 10.0,
) -> Starlette:
    """A tiny ASGI app for your own site: ``POST /`` with JSON ``{"trace_id", "token", "score",
    "comment"?, "user_id"?, "name"?}`` where ``token = sign_trace(trace_id, secret)``; 201/202 as
    ``POST /api/feedback``, 403 for a token that is not that trace's, 422 for a malformed body.
    ``allow_origins``: origins whose pages may call it cross-site (CORS); same-origin needs none.
    ``obs_or_url``: your app's ``LLMObs`` (its metrics count the feedback) or a store URL."""
    if not (secret.encode() if isinstance(secret, str) else secret):
        raise ValueError("the secret is empty")
    writer = FeedbackWriter(obs_or_url, timeout_s=timeout_s)

    async def post(request: Request) -> Response:
        raw = await request.body()
        try:
            fb = parse_feedback(raw)
        except FeedbackError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        token = json.loads(raw).get("token")
        if not verify_trace(fb.trace_id, token, secret):
            return JSONResponse({"error": "the token is not valid for this trace"}, status_code=403)
        try:
            result = await writer.write_async(fb)
        except TimeoutError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return feedback_response(result)

    middleware = []
    if allow_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(allow_origins),
                allow_methods=["POST"],
                allow_headers=["content-type"],
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            writer.close()

    app = Starlette(routes=[Route("/", post, methods=["POST"])], middleware=middleware, lifespan=lifespan)
    app.state.writer = writer
    return app
