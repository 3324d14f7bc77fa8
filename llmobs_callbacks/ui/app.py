"""``create_app(database_url, token=None)``: the UI as one Starlette app, mountable anywhere
(``app.mount("/llmobs", create_app(url))``: links and static files follow the mount's root_path)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api, traces
from .auth import COOKIE, TokenAuth, cookie_value, safe_next, token_matches
from .data import UIContext, context
from .feedback import FeedbackWriter
from .insights import routes as insight_routes

STATIC = Path(__file__).parent / "static"

# No inline script or style attribute can run: a stored "<img onerror=...>" that escaped the
# templates' escaping would still be inert. Bars' positions are set by static/traces.js.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'self'; form-action 'self'"
)


class SecurityHeaders:
    """Adds the Content-Security-Policy and friends to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def login_page(request: Request) -> Response:
    ctx = context(request)
    return ctx.render(request, "login.html", next=safe_next(request.query_params.get("next")))


async def login_submit(request: Request) -> Response:
    ctx = context(request)
    form = await request.form()
    target = safe_next(str(form.get("next") or ""))
    if ctx.token is None:
        return RedirectResponse(request.scope.get("root_path", "") + target, status_code=303)
    if not token_matches(str(form.get("token") or ""), ctx.token):
        return ctx.render(request, "login.html", status_code=401, next=target, error="wrong token")
    response = RedirectResponse(request.scope.get("root_path", "").rstrip("/") + target, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie_value(ctx.token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=(request.scope.get("root_path", "").rstrip("/") or "") + "/",
    )
    return response


async def home_redirect(request: Request) -> Response:
    return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + "/traces", status_code=307)


def create_app(database_url: str, token: str | None = None) -> Starlette:
    """The web UI on the store at ``database_url``, read-only (feedback excepted, through an
    ``LLMObs`` opened on the first ``POST /api/feedback``). ``token``: every page and API call
    then needs ``Authorization: Bearer <token>`` or the cookie the ``/login`` form sets.
    Raises ``StoreNotFoundError`` when there is no store at ``database_url``."""
    if token is not None and not token.strip():
        raise ValueError("the token is empty")
    ctx = UIContext.open(database_url, token=token)
    ctx.feedback = FeedbackWriter(database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ctx.feedback.close()
            ctx.close()

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        *traces.routes,
        *api.routes,
        *insight_routes,
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    if not any(getattr(r, "path", None) == "/" for r in insight_routes):
        routes.insert(0, Route("/", home_redirect))
    middleware = [Middleware(SecurityHeaders)]
    if token is not None:
        middleware.append(Middleware(TokenAuth, token=token))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.ctx = ctx
    return app
