"""``LangChainCallbackHandler``: callback events → Recorder calls (see the package docstring)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from ...diagnostics import Diagnostics
from ...model import PromptTemplate, SpanKind
from ...prepare.prompts import prompt_identity
from ...prepare.usage import truthy
from ...recorder import Recorder
from .langgraph import (
    INTERRUPT_CLASSES,
    command_destinations,
    mark_interrupted,
    may_route,
    root_ending,
    route_destinations,
)
from .payloads import (
    TEMPLATE_CACHE_MAX,
    chunk_has_content,
    has_tag,
    price_context_of,
    read_llm_result,
    retrieved_document,
    run_name_of,
    shallow_copy,
    template_text,
)

FRAMEWORK = "langchain"

F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """Never raise into the user's chain: count and log once instead."""
    name = method.__name__
    ends = name.endswith(("_end", "_error"))

    @functools.wraps(method)
    def wrapper(self: LangChainCallbackHandler, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._diag.handler_error(f"langchain.{name}", exc)
            if ends:
                _end_anyway(self._recorder, kwargs.get("run_id"))

    return wrapper  # type: ignore[return-value]


def _end_anyway(recorder: Recorder | None, run_id: Any) -> None:
    """An end callback failed on its payload: still store the run (without it) if it is open."""
    with contextlib.suppress(Exception):
        if recorder is not None and recorder.get(run_id) is not None:
            recorder.end(run_id)


class LangChainCallbackHandler(BaseCallbackHandler):
    """Records LangChain runs as spans. Get one from ``LLMObs.langchain_handler()``."""

    raise_error = False
    run_inline = True

    # LangChain reads these flags for every event: plain attributes (shadowing the base
    # class's properties) are the cheapest to read; ``bind`` sets them per instance.
    ignore_llm = ignore_chat_model = ignore_chain = ignore_agent = ignore_retriever = False
    ignore_retry = ignore_custom_event = True

    def __init__(self, recorder: Recorder | None, diagnostics: Diagnostics) -> None:
        self._template_cache: dict[int, tuple[Any, PromptTemplate]] = {}
        self._diag = diagnostics
        self.bind(recorder)

    def bind(self, recorder: Recorder | None, diagnostics: Diagnostics | None = None) -> None:
        """Record into ``recorder``; None switches the handler off (LangChain then skips it)."""
        self._recorder = recorder
        if diagnostics is not None:
            self._diag = diagnostics
        off = recorder is None
        self.ignore_llm = self.ignore_chat_model = self.ignore_chain = off
        self.ignore_agent = self.ignore_retriever = off

    # -- chains, prompts, parsers, graph nodes ----------------------------------------------

    # on_chain_start/end run for every step of every chain: the guard is inlined there
    # (one call frame less) and the common case is tested first.
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        try:
            name = kwargs.get("name")
            if type(name) is not str or not name:
                name = run_name_of(serialized, kwargs, "chain")
            run_type = kwargs.get("run_type")
            template = None
            if run_type is None:
                if metadata and metadata.get("langgraph_node") == name and has_tag(tags, "graph:step:"):
                    kind = SpanKind.GRAPH_NODE
                else:
                    kind = SpanKind.CHAIN
            elif run_type == "prompt":
                kind = SpanKind.PROMPT
                template = self._prompt_template(serialized, name)
            elif run_type == "parser":
                kind = SpanKind.PARSER
            else:
                kind = SpanKind.CHAIN
            recorder.start(
                run_id,
                parent_run_id,
                kind,
                name,
                FRAMEWORK,
                shallow_copy(inputs),
                list(tags) if tags else None,
                dict(metadata) if metadata else None,
                prompt_template=template,
            )
        except Exception as exc:  # noqa: BLE001
            self._diag.handler_error("langchain.on_chain_start", exc)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        try:
            if kwargs.get("parent_run_id") is None:
                root_ending(recorder, run_id, outputs)
            span = recorder.end(run_id, shallow_copy(outputs))
            if span is None or span.parent_span_id is None or not may_route(outputs):
                return
            if span.kind == SpanKind.GRAPH_NODE:
                goto = command_destinations(outputs)
                if goto:
                    recorder.add_branch_candidates(span, goto, "Command", span.span_id)
            elif span.kind == SpanKind.CHAIN and has_tag(span.tags, "seq:step:"):
                # A conditional edge's path function runs as a child of the source node and
                # returns the route(s) chosen; confirmed when the graph run ends.
                routes = route_destinations(outputs)
                if routes:
                    node = recorder.get(span.parent_span_id)
                    recorder.add_branch_candidates(node, routes, span.name, span.span_id)
        except Exception as exc:  # noqa: BLE001
            self._diag.handler_error("langchain.on_chain_end", exc)
            _end_anyway(recorder, run_id)

    @_guarded
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if self._recorder is not None:
            if type(error).__name__ in INTERRUPT_CLASSES:
                mark_interrupted(self._recorder, run_id)
            if kwargs.get("parent_run_id") is None:
                root_ending(self._recorder, run_id, None)
            self._recorder.end(run_id, error=error)

    # -- LLMs and chat models ---------------------------------------------------------------

    @_guarded
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        payload = messages[0] if len(messages) == 1 else messages
        self._start_llm(serialized, list(payload), run_id, parent_run_id, tags, metadata, kwargs)

    @_guarded
    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        payload = prompts[0] if len(prompts) == 1 else list(prompts)
        self._start_llm(serialized, payload, run_id, parent_run_id, tags, metadata, kwargs)

    def _start_llm(
        self,
        serialized: dict[str, Any] | None,
        payload: Any,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        if self._recorder is None:
            return
        params = kwargs.get("invocation_params") or {}
        md = metadata or {}
        model = md.get("ls_model_name") or params.get("model") or params.get("model_name")
        provider = md.get("ls_provider")
        self._start(
            run_id,
            parent_run_id,
            SpanKind.LLM,
            run_name_of(serialized, kwargs, "llm"),
            tags,
            metadata,
            payload,
            invocation_params=params or None,
            model=model if isinstance(model, str) else None,
            provider=provider if isinstance(provider, str) else None,
        )

    @_guarded
    def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        if (token if type(token) is str else truthy(token)) or chunk_has_content(chunk):
            recorder.first_token(run_id)

    @_guarded
    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if self._recorder is None:
            return
        # A malformed result raises here; _guarded counts it and still ends the run, without it.
        output, usage, model = read_llm_result(response, self._diag)
        self._recorder.end(
            run_id, output=output, usage=usage, model=model, price_context=price_context_of(response)
        )

    @_guarded
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if self._recorder is None:
            return
        # A partial response may carry usage; its "output" is LangChain's placeholder holding
        # the HTTP error response (headers included), which must not be stored.
        response = kwargs.get("response")
        usage = model = None
        if response is not None:
            try:
                _, usage, model = read_llm_result(response, self._diag)
            except Exception as exc:  # noqa: BLE001 - keep the error: _guarded would end the run as ok
                self._diag.handler_error("langchain.llm_result", exc)
        self._recorder.end(run_id, error=error, usage=usage, model=model)

    # -- tools ------------------------------------------------------------------------------

    @_guarded
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self._recorder is None:
            return
        name = run_name_of(serialized, kwargs, "tool")
        payload = dict(inputs) if inputs is not None else input_str
        self._start(run_id, parent_run_id, SpanKind.TOOL, name, tags, metadata, payload)

    @_guarded
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if self._recorder is not None:
            self._recorder.end(run_id, output=output)

    @_guarded
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if self._recorder is not None:
            self._recorder.end(run_id, error=error)

    # -- retrievers -------------------------------------------------------------------------

    @_guarded
    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self._recorder is None:
            return
        name = run_name_of(serialized, kwargs, "retriever")
        self._start(run_id, parent_run_id, SpanKind.RETRIEVER, name, tags, metadata, query)

    @_guarded
    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        if self._recorder is None:
            return
        docs = [retrieved_document(rank, doc) for rank, doc in enumerate(documents or ())]
        self._recorder.end(run_id, documents=docs, output={"documents": len(docs)})

    @_guarded
    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if self._recorder is not None:
            self._recorder.end(run_id, error=error)

    # -- shared -----------------------------------------------------------------------------

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        kind: str,
        name: str,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        payload: Any,
        **extra: Any,
    ) -> None:
        self._recorder.start(  # type: ignore[union-attr]
            run_id,
            parent_run_id,
            kind,
            name,
            FRAMEWORK,
            payload,
            list(tags) if tags else None,
            dict(metadata) if metadata else None,
            **extra,
        )

    def _prompt_template(self, serialized: dict[str, Any] | None, name: str) -> PromptTemplate | None:
        """The prompt's template identity; its text is hashed once per prompt object. Its name is
        the one the user gave it (a run name), None for the class's default name: a version
        declared without a name then takes the root's (the recorder resolves names and
        declared versions)."""
        if not isinstance(serialized, dict):
            return None
        cached = self._template_cache.get(id(serialized))
        if cached is not None and cached[0] is serialized:
            base = cached[1]
        else:
            base = prompt_identity(template_text(serialized), None)
            if len(self._template_cache) >= TEMPLATE_CACHE_MAX:
                self._template_cache.clear()
            # Keep a reference to ``serialized`` so its id cannot be reused while cached.
            self._template_cache[id(serialized)] = (serialized, base)
        ids = serialized.get("id")
        if isinstance(ids, list) and ids and name == ids[-1]:
            return base
        return replace(base, prompt_name=name)
