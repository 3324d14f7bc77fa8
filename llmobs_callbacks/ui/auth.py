"""The UI's token: a bearer header, or a cookie set by the ``/login`` form. Without a token the
UI only binds a loopback address (``check_host``)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "llmobs_ui"
LOOPBACK_NAMES = ("localhost",)
OPEN_PATHS = ("/login", "/static/")  # the login form and its stylesheet


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, token: str | None) -> None:
    """``ValueError`` when ``host`` is not a loopback address and there is no token."""
    if token is not None and not token.strip():
        raise ValueError("the token is empty")
    if token is None and not is_loopback(host):
        raise ValueError(
            f"--host {host} is reachable from other machines: give a --token (or set $LLMOBS_UI_TOKEN)"
        )


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest of the token (the token itself never sits in a browser)."""
    return hmac.new(token.encode(), b"llmobs-ui-session", hashlib.sha256).hexdigest()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def same_origin(request: Request) -> bool:
    """A state-changing request a page of ours sent: htmx's ``HX-Request`` header (a cross-site
    form cannot set it without CORS preflight), or an ``Origin`` equal to our own host."""
    if request.headers.get("hx-request") == "true":
        return True
    origin = request.headers.get("origin")
    if origin:
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return False


class TokenAuth:
    """ASGI middleware: every page, fragment and API call needs the token (the login form and
    the static files excepted). Pages without it redirect to ``/login``; the API answers 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.cookie = cookie_value(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = _local_path(scope)
        if path == "/login" or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        if token_matches(_bearer(request), self.token):
            await self.app(scope, receive, send)
            return
        if token_matches(request.cookies.get(COOKIE), self.cookie):
            # Cookie auth rides along on cross-site requests: a write must come from our pages.
            if request.method not in ("GET", "HEAD", "OPTIONS") and not same_origin(request):
                response: Response = JSONResponse(
                    {"error": "a cross-site request: send HX-Request: true or a same-origin Origin"},
                    status_code=403,
                )
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path", "").rstrip("/")
        if path.startswith("/api/") or request.headers.get("hx-request") == "true":
            response = JSONResponse(
                {"error": "a token is required: Authorization: Bearer <token>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        else:
            target = path + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
            response = RedirectResponse(f"{root}/login?{_next(target)}", status_code=303)
        await response(scope, receive, send)


def _next(target: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"next": target})


def _local_path(scope: Scope) -> str:
    """The path inside this app (without the mount's root_path)."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def safe_next(value: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/traces"
    return value
