"""Process-wide instrumentation: one handler LangChain adds to every run (``register_configure_hook``)."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, copy_context
from typing import Any

from ...diagnostics import Diagnostics
from ...recorder import Recorder
from .handler import LangChainCallbackHandler

_GLOBAL_HANDLER: LangChainCallbackHandler | None = None
_HOOK_VAR: ContextVar[LangChainCallbackHandler | None] | None = None


def global_handler() -> LangChainCallbackHandler:
    """The handler LangChain adds to every run once ``instrument`` was called.

    Registered once per process through ``register_configure_hook`` with a ContextVar whose
    *default* is the handler, so every thread and task sees it; it is re-bound, not replaced,
    when instrumentation moves to another ``LLMObs`` or is switched off.
    """
    global _GLOBAL_HANDLER, _HOOK_VAR
    if _GLOBAL_HANDLER is None:
        from langchain_core.tracers.context import register_configure_hook

        _GLOBAL_HANDLER = LangChainCallbackHandler(None, Diagnostics())
        _HOOK_VAR = ContextVar("llmobs_langchain_handler", default=_GLOBAL_HANDLER)
        register_configure_hook(_HOOK_VAR, inheritable=True)
    return _GLOBAL_HANDLER


def call_unrecorded(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` with process-wide instrumentation switched off for this call only
    (the judge's own model call must not become an ordinary, judgeable trace)."""
    ctx = copy_context()

    def run() -> Any:
        if _HOOK_VAR is not None:
            _HOOK_VAR.set(None)
        return fn(*args)

    return ctx.run(run)


def unbind_global(recorder: Recorder) -> None:
    """Switch process-wide recording off if it records into ``recorder``."""
    if _GLOBAL_HANDLER is not None and _GLOBAL_HANDLER._recorder is recorder:
        _GLOBAL_HANDLER.bind(None)
