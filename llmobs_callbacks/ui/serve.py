"""``serve(...)``: run the UI with uvicorn (``llmobs ui``)."""

from __future__ import annotations

import os
import socket
import threading
import webbrowser

from .auth import check_host

TOKEN_ENV = "LLMOBS_UI_TOKEN"


def _check_port(host: str, port: int) -> int:
    """``OSError`` (EADDRINUSE, …) when the port cannot be bound: before uvicorn, which would
    log it and exit the process."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host.strip("[]"), port))
        return probe.getsockname()[1]  # port 0: the free port picked


def serve(
    database_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8790,
    token: str | None = None,
    open_browser: bool = False,
) -> None:
    """Serve ``create_app(database_url, token)`` until interrupted. Without a token only a
    loopback ``host`` is allowed (``ValueError`` otherwise); ``token=None`` reads
    ``$LLMOBS_UI_TOKEN``."""
    import uvicorn

    from .app import create_app

    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    check_host(host, token)
    port = _check_port(host, port)
    app = create_app(database_url, token=token)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    print(f"llmobs ui: serving {url}" + (" (token required)" if token else ""), flush=True)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning", access_log=False)
