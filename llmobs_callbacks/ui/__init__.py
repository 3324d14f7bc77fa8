"""The web UI over the store (``pip install 'llmobs-callbacks[ui]'``): ``llmobs ui`` or
``create_app(url)`` mounted in your own Starlette / FastAPI app."""

from __future__ import annotations

from .app import create_app
from .feedback import feedback_app, sign_trace
from .serve import serve

__all__ = ["create_app", "feedback_app", "serve", "sign_trace"]
