"""Lazily consumed streams: the generators spans returned, so a span LlamaIndex starts without a
parent joins the trace of the generator running it."""

from __future__ import annotations

import sys
import weakref
from types import GeneratorType
from typing import Any

from .payloads import is_derived

_MAX_FRAME_WALK = 128


class _GenLink:
    """A generator a span returned: spans started while it runs belong to that span's trace."""

    __slots__ = ("metadata", "ref", "span_id", "tags")

    def __init__(self, span_id: str, metadata: dict[str, Any] | None, tags: list[str] | None) -> None:
        self.span_id = span_id
        self.metadata = metadata
        self.tags = tags
        self.ref: Any = None


class GeneratorLinks:
    """Generators that spans returned, by the id of their frame.

    A lazily consumed stream (a streaming synthesizer's response generator) calls the LLM
    when the app iterates it, after the spans that built it have exited: LlamaIndex then
    reports no parent. ``find`` walks up the calling stack for a running generator a span
    returned, so that call joins the trace (and declared context) of the span. Entries go
    away with their generator (weak references), so memory stays bounded by live streams.
    """

    __slots__ = ("_links",)

    def __init__(self) -> None:
        self._links: dict[int, _GenLink] = {}

    def __bool__(self) -> bool:
        return bool(self._links)

    def __len__(self) -> int:
        return len(self._links)

    def clear(self) -> None:
        self._links.clear()

    def register(self, span: Any, generator: Any) -> None:
        """Remember ``generator``, returned by (just ended) ``span``."""
        frame = generator.gi_frame if type(generator) is GeneratorType else generator.ag_frame
        if frame is None:
            return
        key = id(frame)
        links = self._links
        existing = links.get(key)
        if existing is not None and existing.ref() is generator:
            return  # an outer span returning the same generator: the innermost owns it
        metadata: dict[str, Any] = {}
        if span.session_id is not None:
            metadata["session_id"] = span.session_id
        if span.user_id is not None:
            metadata["user_id"] = span.user_id
        if span.prompt_version is not None and not is_derived(span):
            metadata["prompt_version"] = span.prompt_version
            if span.prompt_name is not None:
                metadata["prompt_name"] = span.prompt_name
        link = _GenLink(span.span_id, metadata or None, list(span.tags) if span.tags else None)

        def forget(ref: Any, key: int = key, links: dict[int, _GenLink] = links) -> None:
            current = links.get(key)
            if current is not None and current.ref is ref:
                links.pop(key, None)

        link.ref = weakref.ref(generator, forget)
        links[key] = link

    def find(self) -> _GenLink | None:
        """The innermost running generator up the calling stack that a span returned."""
        links = self._links
        frame: Any = sys._getframe(2)
        for _ in range(_MAX_FRAME_WALK):
            if frame is None:
                return None
            link = links.get(id(frame))
            if link is not None:
                generator = link.ref()
                if generator is not None and generator_frame(generator) is frame:
                    return link
            frame = frame.f_back
        return None

    def merge_into(
        self, link: _GenLink, metadata: dict[str, Any] | None, tags: list[str] | None
    ) -> tuple[dict[str, Any] | None, list[str] | None]:
        """A linked span's declared context: the linking span's, overridden by its own."""
        if link.metadata:
            metadata = {**link.metadata, **(metadata or {})}
        if link.tags:
            tags = list(dict.fromkeys([*link.tags, *(tags or ())]))
        return metadata, tags


def generator_frame(generator: Any) -> Any:
    return generator.gi_frame if type(generator) is GeneratorType else generator.ag_frame
