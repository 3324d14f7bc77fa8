"""LlamaIndex adapter for the legacy ``CallbackManager`` API (``llama_index.core.callbacks``).

For apps still on callback managers; new code should prefer ``LLMObs.instrument_llama_index()``
(the instrumentation API: streams' time to first token, prompt templates with their type,
tools of workflow agents). Rows are the same: LLM, retrieve, embedding, reranking and
function-call events become ``llm``, ``retriever``, ``embedding``, ``reranker`` and ``tool``
spans; the prompt a ``templating`` event saw gives the next LLM call its derived version; other
events (query, synthesize, chunking, …) are ``chain`` spans named after the event type.

Event ids are the span ids; a top-level event (parent ``"root"``) starts a trace. LLM events
are leaves in LlamaIndex, so an LLM method wrapping another (``stream_chat→stream_complete``)
reports two sibling LLM events: an LLM event that starts, in the same context and under the
same parent, right after another one started (no event in between) is that call's inner
method and is merged into it (tokens counted once). An error is
recorded on the event whose payload reported it (LlamaIndex ends the enclosing events without
the exception).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from types import GeneratorType
from typing import Any

from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload

from ...diagnostics import Diagnostics
from ...model import PromptTemplate, SpanKind
from ...prepare.prompts import prompt_identity
from ...recorder import Recorder
from .payloads import (
    FRAMEWORK,
    ChatMessages,
    declared_context,
    model_name_of,
    payload_value,
    read_llm_response,
    retrieved_documents,
    safe_str,
    safe_usage_and_model,
)
from .streams import GeneratorLinks

try:  # the instrumentation package's tags, so ``instrument_tags`` works on this path too
    from llama_index_instrumentation.dispatcher import active_instrument_tags as _instrument_tags
except ImportError:  # pragma: no cover - older llama-index-core
    _instrument_tags = None

_ROOT = "root"
# Root events that build an index (parsing, chunking, embedding documents): not a user's request.
_INGESTION_EVENTS = frozenset({CBEventType.NODE_PARSING, CBEventType.CHUNKING, CBEventType.EMBEDDING})
_KINDS = {
    CBEventType.LLM: SpanKind.LLM,
    CBEventType.EMBEDDING: SpanKind.EMBEDDING,
    CBEventType.RETRIEVE: SpanKind.RETRIEVER,
    CBEventType.RERANKING: SpanKind.RERANKER,
    CBEventType.FUNCTION_CALL: SpanKind.TOOL,
    CBEventType.TEMPLATING: SpanKind.PROMPT,
}
# ``class_name()`` of LLM integrations → provider (others: None, priced by model name).
_PROVIDERS = {
    "openai_llm": "openai",
    "azure_openai_llm": "azure",
    "anthropic_llm": "anthropic",
    "Anthropic_LLM": "anthropic",
    "MistralAI_LLM": "mistralai",
    "Groq": "groq",
}
_PROMPT_CACHE_MAX = 1024
# The LLM event that started last in this context, until the next event (see the docstring).
_CURRENT_LLM: ContextVar[str | None] = ContextVar("llmobs_llama_index_legacy_llm", default=None)


class _LLMEvent:
    __slots__ = ("fallback", "inner", "parent")

    def __init__(self, parent: str | None) -> None:
        self.parent = parent
        self.inner: list[str] | None = None
        self.fallback: Any = None


class LlamaIndexCallbackHandler(BaseCallbackHandler):
    """Records legacy callback events as spans. Get one from ``LLMObs.llama_index_callback_handler()``."""

    def __init__(self, recorder: Recorder | None, diagnostics: Diagnostics) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self._recorder = recorder
        self._diag = diagnostics
        self._llm: dict[str, _LLMEvent] = {}
        self._alias: dict[str, str] = {}
        self._prompts: dict[str, PromptTemplate] = {}
        self._gen_links = GeneratorLinks()
        # The prompt a templating event rendered, by parent: it feeds the next LLM call there
        # (also when that parent already ended, as with a lazily iterated stream).
        self._last_prompt: dict[str | None, PromptTemplate] = {}

    def bind(self, recorder: Recorder | None) -> None:
        """Record into ``recorder``; None switches the handler off."""
        self._recorder = recorder
        if recorder is None:
            self._llm.clear()
            self._alias.clear()
            self._gen_links.clear()

    # -- BaseCallbackHandler ----------------------------------------------------------------

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        try:
            if self._recorder is not None and event_id:
                self._start(event_type, payload or {}, event_id, parent_id)
        except Exception as exc:  # noqa: BLE001
            self._diag.handler_error("llama_index_legacy.on_event_start", exc)
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        try:
            if self._recorder is not None and event_id:
                self._end(event_type, payload or {}, event_id)
        except Exception as exc:  # noqa: BLE001
            self._diag.handler_error("llama_index_legacy.on_event_end", exc)
            with contextlib.suppress(Exception):  # still store the event's span, without its payload
                if self._recorder is not None and self._recorder.get(event_id) is not None:
                    self._recorder.end(event_id)

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        return None

    # -- events -----------------------------------------------------------------------------

    def _start(self, event_type: CBEventType, payload: dict[str, Any], event_id: str, parent_id: str) -> None:
        if event_type == CBEventType.EXCEPTION:
            return  # start-only marker of ``as_trace``; the failing event carries the exception
        parent: str | None = None if not parent_id or parent_id == _ROOT else parent_id
        link = None
        if parent is not None:
            parent = self._alias.get(parent, parent)
        elif self._gen_links:
            # A lazily iterated stream (see GeneratorLinks): join the trace that returned it.
            link = self._gen_links.find()
            if link is not None:
                parent = link.span_id
        kind = _KINDS.get(event_type, SpanKind.CHAIN)
        name = event_type.value if isinstance(event_type, CBEventType) else str(event_type)
        model = provider = template = None
        params = None
        current = _CURRENT_LLM.get()
        if current is not None:
            _CURRENT_LLM.set(None)  # only the very next event may be a nested LLM call
        if kind == SpanKind.LLM:
            outer = self._llm.get(current) if current is not None else None
            if outer is not None and outer.parent == parent:
                self._alias[event_id] = current  # type: ignore[assignment]
                if outer.inner is None:
                    outer.inner = []
                outer.inner.append(event_id)
                return
            serialized = payload.get(EventPayload.SERIALIZED)
            serialized = serialized if isinstance(serialized, dict) else {}
            name = safe_str(serialized.get("class_name") or "llm")
            model = model_name_of(serialized.get("model")) or model_name_of(serialized.get("model_name"))
            provider = _PROVIDERS.get(name)
            messages = payload.get(EventPayload.MESSAGES)
            data: Any = payload.get(EventPayload.PROMPT) if messages is None else _messages(messages)
            params = payload.get(EventPayload.ADDITIONAL_KWARGS) or None
            template = self._last_prompt.pop(parent, None)
            self._llm[event_id] = _LLMEvent(parent)
            _CURRENT_LLM.set(event_id)
        elif kind == SpanKind.EMBEDDING:
            serialized = payload.get(EventPayload.SERIALIZED)
            serialized = serialized if isinstance(serialized, dict) else {}
            name = safe_str(serialized.get("class_name") or name)
            model = model_name_of(serialized.get("model_name"))
            data = None
        elif kind == SpanKind.TOOL:
            tool = payload.get(EventPayload.TOOL)
            name = safe_str(getattr(tool, "name", None) or name)
            data = payload.get(EventPayload.FUNCTION_CALL)
        elif kind == SpanKind.PROMPT:
            template = self._prompt_template(payload.get(EventPayload.TEMPLATE))
            if template is not None:
                if len(self._last_prompt) >= _PROMPT_CACHE_MAX:
                    self._last_prompt.clear()
                self._last_prompt[parent] = template
            data = payload.get(EventPayload.TEMPLATE_VARS)
        elif kind == SpanKind.RERANKER:
            model = _text(payload.get(EventPayload.MODEL_NAME))
            data = payload.get(EventPayload.QUERY_STR)
        else:
            data = _start_input(payload)
        metadata, tags = declared_context(_instrument_tags.get() if _instrument_tags is not None else None)
        if link is not None:
            metadata, tags = self._gen_links.merge_into(link, metadata, tags)
        self._recorder.start(  # type: ignore[union-attr]
            event_id,
            parent,
            kind,
            name,
            FRAMEWORK,
            data,
            tags,
            metadata,
            model=model,
            provider=provider,
            invocation_params=dict(params) if params else None,
            prompt_template=template,
            internal=parent is None and event_type in _INGESTION_EVENTS,
        )

    def _end(self, event_type: CBEventType, payload: dict[str, Any], event_id: str) -> None:
        recorder = self._recorder
        if _CURRENT_LLM.get() is not None:
            _CURRENT_LLM.set(None)
        error = payload.get(EventPayload.EXCEPTION)
        error = error if isinstance(error, BaseException) else None
        if event_type == CBEventType.LLM:
            target = self._alias.pop(event_id, None)
            response = payload.get(EventPayload.RESPONSE) or payload.get(EventPayload.COMPLETION)
            if target is not None:
                outer = self._llm.get(target)
                if outer is not None and response is not None:
                    outer.fallback = response
                return
            state = self._llm.pop(event_id, None)
            try:
                output, usage, model = read_llm_response(response, self._diag)
            except Exception as exc:  # noqa: BLE001 - a malformed response: still end the span
                self._diag.handler_error("llama_index_legacy.llm_response", exc)
                output = usage = model = None
            if state is not None:
                for inner in state.inner or ():
                    self._alias.pop(inner, None)
                if usage is None and state.fallback is not None:
                    usage, fallback_model = safe_usage_and_model(self._diag, state.fallback)
                    model = model or fallback_model
            recorder.end(event_id, output, error=error, usage=usage, model=model)  # type: ignore[union-attr]
            return
        nodes = payload.get(EventPayload.NODES)
        if event_type in (CBEventType.RETRIEVE, CBEventType.RERANKING) and isinstance(nodes, (list, tuple)):
            docs = retrieved_documents(list(nodes))
            recorder.end(event_id, {"documents": len(docs or ())}, error=error, documents=docs)  # type: ignore[union-attr]
            return
        if event_type == CBEventType.EMBEDDING:
            chunks = payload.get(EventPayload.CHUNKS)
            span = recorder.get(event_id)  # type: ignore[union-attr]
            if span is not None and chunks is not None:
                span.input = list(chunks) if isinstance(chunks, (list, tuple)) else chunks
            embeddings = payload.get(EventPayload.EMBEDDINGS)
            output = None
            if isinstance(embeddings, list) and embeddings:
                output = {"embeddings": len(embeddings), "dimensions": _size(embeddings[0])}
            recorder.end(event_id, output, error=error)  # type: ignore[union-attr]
            return
        if event_type == CBEventType.FUNCTION_CALL:
            output = payload.get(EventPayload.FUNCTION_OUTPUT)
            recorder.end(event_id, output, error=error)  # type: ignore[union-attr]
            return
        span = recorder.end(event_id, _end_output(payload), error=error)  # type: ignore[union-attr]
        stream = getattr(payload.get(EventPayload.RESPONSE), "response_gen", None)
        if span is not None and isinstance(stream, GeneratorType):
            self._gen_links.register(span, stream)

    def _prompt_template(self, text: Any) -> PromptTemplate | None:
        if not isinstance(text, str):
            return None
        identity = self._prompts.get(text)
        if identity is None:
            if len(self._prompts) >= _PROMPT_CACHE_MAX:
                self._prompts.clear()
            identity = self._prompts[text] = prompt_identity(text, None)
        return identity


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _start_input(payload: dict[str, Any]) -> Any:
    for key in (EventPayload.QUERY_STR, EventPayload.SUB_QUESTION, EventPayload.MESSAGES):
        value = payload.get(key)
        if value is not None:
            return payload_value(value)
    chunks = payload.get(EventPayload.CHUNKS)
    if chunks is not None:
        return {"chunks": _size(chunks)}
    documents = payload.get(EventPayload.DOCUMENTS)
    if documents is not None:
        return {"documents": _size(documents)}
    return None


def _end_output(payload: dict[str, Any]) -> Any:
    for key in (EventPayload.RESPONSE, EventPayload.SUB_QUESTION, EventPayload.COMPLETION):
        value = payload.get(key)
        if value is not None:
            return payload_value(value)
    for key, label in ((EventPayload.NODES, "nodes"), (EventPayload.CHUNKS, "chunks")):
        value = payload.get(key)
        if value is not None:
            return {label: _size(value)}
    return None


def _size(value: Any) -> int | None:
    try:
        return len(value)
    except Exception:  # noqa: BLE001 - not a sized collection: no count rather than no span
        return None


def _messages(messages: Any) -> Any:
    return ChatMessages(list(messages)) if isinstance(messages, (list, tuple)) else messages


__all__ = ["LlamaIndexCallbackHandler"]
