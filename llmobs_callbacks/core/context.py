"""The context declared with ``LLMObs.context(...)``: metadata and tags for every span started
inside the block (asyncio tasks inherit it). Here, not in ``obs.py``, so that the adapters can
read it without importing the facade that imports them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_DECLARED: ContextVar[tuple[dict[str, Any], list[str]] | None] = ContextVar(
    "llmobs_declared_context", default=None
)


def current_context() -> tuple[dict[str, Any], list[str]] | None:
    """The context declared by the innermost ``LLMObs.context`` block, or None."""
    return _DECLARED.get()


def restore_context(metadata: dict[str, Any], tags: list[str]) -> None:
    """Re-declare a captured context in the current one (a workflow's step task)."""
    _DECLARED.set((metadata, tags))


@contextmanager
def declared(metadata: Mapping[str, Any], tags: Sequence[object] = ()) -> Iterator[None]:
    """Declare ``metadata`` and ``tags`` for the block, on top of an enclosing declaration."""
    outer = _DECLARED.get()
    if outer is not None:
        merged = {**outer[0], **metadata}
        all_tags = [*outer[1], *(str(t) for t in tags)]
    else:
        merged = dict(metadata)
        all_tags = [str(t) for t in tags]
    token = _DECLARED.set((merged, all_tags))
    try:
        yield
    finally:
        _DECLARED.reset(token)
