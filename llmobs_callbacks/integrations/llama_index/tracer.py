"""The instrumentation API's spans and events → Recorder calls (see the package docstring: tree,
kinds, merged inner spans, streams, context)."""

from __future__ import annotations

import contextlib
import sys
import time
import weakref
from collections import deque
from types import AsyncGeneratorType, GeneratorType
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts.base import BasePromptTemplate
from llama_index.core.tools.types import BaseTool

from ...diagnostics import Diagnostics
from ...model import PromptTemplate, SpanKind
from ...prepare.prompts import prompt_identity
from ...recorder import Recorder
from .payloads import (
    CACHE_MAX,
    FRAMEWORK,
    arguments_input,
    declared_context,
    embedding_output,
    has_tool_calls,
    is_ingestion,
    llm_input_of,
    model_of,
    payload_value,
    provider_of,
    query_text_of,
    read_llm_response,
    retrieved_documents,
    safe_usage_and_model,
    span_name_of,
    tool_call_input,
    tool_result_of,
    usage_and_model,
)
from .streams import GeneratorLinks

_LLM_METHODS = frozenset(
    {
        "chat",
        "achat",
        "stream_chat",
        "astream_chat",
        "complete",
        "acomplete",
        "stream_complete",
        "astream_complete",
    }
)
_TOOL_METHODS = frozenset({"call", "acall", "__call__"})
_AGENT_CLASSES = frozenset({"BaseWorkflowAgent", "AgentWorkflow"})
# A span directly inside an open span of the same kind (other than chain/agent) is the same
# logical operation and is merged into it. LLM and tool wrappers may delegate to another
# instance (call_tool → FunctionTool.acall); a retriever, embedding or reranker nested in
# another *instance* is a real sub-operation (fusion retrievers), so those merge only within
# one instance (retrieve → _retrieve).
_MERGE_ANY_INSTANCE = frozenset({SpanKind.LLM, SpanKind.TOOL})
_TRIM_AT = 20_000  # bookkeeping entries before a sweep for spans the recorder no longer has


class _Open:
    """Our bookkeeping for an open span of a kind other than chain/agent."""

    __slots__ = ("error", "fallback", "inner", "kind", "last", "owner", "pending", "ref")

    def __init__(self, kind: str, owner: int) -> None:
        self.kind = kind
        self.owner = owner  # id() of the instance, for same-instance merges
        self.inner: list[str] | None = None  # merged inner span ids
        self.fallback: Any = None  # the inner call's response (usage when the outer has none)
        self.pending = False  # an LLM stream: exited, waiting for the end of the stream
        self.last: Any = None  # a stream's latest response (accumulated text, partial usage)
        self.ref: Any = None  # weakref to a pending stream's generator
        self.error: BaseException | None = None  # an inner call's error (tools)


class LlamaIndexTracer:
    """Turns LlamaIndex span and event notifications into Recorder calls (framework-aware core).

    ``LlamaIndexSpanHandler`` and ``LlamaIndexEventHandler`` are the thin pydantic shells the
    dispatcher calls; both delegate here.
    """

    def __init__(self, recorder: Recorder | None, diagnostics: Diagnostics) -> None:
        self._recorder = recorder
        self._diag = diagnostics
        self._open: dict[str, _Open] = {}
        self._alias: dict[str, str] = {}  # merged inner span id → the span that records it
        self._gen_links = GeneratorLinks()
        self._stream_links = GeneratorLinks()  # pending LLM streams' generators
        self._kinds: dict[tuple[type | None, str], str] = {}
        self._prompts: dict[tuple[str, Any], PromptTemplate] = {}
        self._event_methods: dict[type, Any] = {}
        self._abandoned: deque[tuple[str, int]] = deque()  # streams collected unfinished

    def bind(self, recorder: Recorder | None, diagnostics: Diagnostics | None = None) -> None:
        self._recorder = recorder
        if diagnostics is not None:
            self._diag = diagnostics
        if recorder is None:
            self._open.clear()
            self._alias.clear()
            self._gen_links.clear()
            self._stream_links.clear()

    # -- spans ------------------------------------------------------------------------------

    def span_enter(
        self,
        id_: str,
        bound_args: Any,
        instance: Any,
        parent_id: str | None,
        tags: dict[str, Any] | None,
    ) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        if self._abandoned:
            self.drain()
        name = span_name_of(id_)
        link = None
        if parent_id is not None:
            parent_id = self._alias.get(parent_id, parent_id)
        else:
            if self._gen_links:
                link = self._gen_links.find()
                if link is not None:
                    parent_id = link.span_id
            if parent_id is None:
                parent_id = _langchain_parent(recorder)
        cls = type(instance) if instance is not None else None
        kind = self._kinds.get((cls, name))
        if kind is None:
            kind = self._classify(cls, name)
        arguments = bound_args.arguments
        if kind is SpanKind.LLM and self._stream_links:
            # An LLM method called while another one's stream is being iterated (CustomLLM's
            # ``astream_complete`` runs ``stream_complete`` lazily, inside its generator): the
            # same call, whatever parent LlamaIndex reports.
            streaming = self._stream_links.find()
            if streaming is not None and streaming.span_id in self._open:
                parent_id = streaming.span_id
        if kind is not SpanKind.CHAIN and parent_id is not None:
            parent = self._open.get(parent_id)
            if (
                parent is not None
                and parent.kind is kind
                and (kind in _MERGE_ANY_INSTANCE or parent.owner == id(instance))
            ):
                self._alias[id_] = parent_id
                if parent.inner is None:
                    parent.inner = []
                parent.inner.append(id_)
                return
        metadata, tag_list = declared_context(tags)
        if link is not None:
            metadata, tag_list = self._gen_links.merge_into(link, metadata, tag_list)
        model = provider = params = template = None
        if kind is SpanKind.CHAIN:
            payload = arguments_input(arguments)
            prompt = arguments.get("prompt")
            if prompt is not None and isinstance(prompt, BasePromptTemplate):
                template = self._prompt_template(prompt, instance)
        elif kind is SpanKind.LLM:
            payload, params = llm_input_of(arguments, instance)
            model = model_of(instance)
            provider = provider_of(cls)
        elif kind is SpanKind.RETRIEVER or kind is SpanKind.RERANKER:
            payload = query_text_of(arguments.get("str_or_query_bundle") or arguments.get("query_bundle"))
            if payload is None:
                payload = arguments_input(arguments)
            model = model_of(instance) if kind is SpanKind.RERANKER else None
        elif kind is SpanKind.EMBEDDING:
            payload = arguments_input(arguments)
            model = model_of(instance)
            provider = provider_of(cls)
        elif kind is SpanKind.TOOL:
            name, payload = tool_call_input(name, arguments, instance)
        else:  # agent
            start_event = arguments.get("start_event")
            user_msg = getattr(start_event, "user_msg", None)
            payload = user_msg if user_msg is not None else payload_value(start_event)
        recorder.start(
            id_,
            parent_id,
            kind,
            name,
            FRAMEWORK,
            payload,
            tag_list,
            metadata,
            model=model,
            provider=provider,
            invocation_params=params,
            prompt_template=template,
            internal=parent_id is None and is_ingestion(cls),
        )
        if kind is not SpanKind.CHAIN and kind is not SpanKind.AGENT:
            if len(self._open) >= _TRIM_AT:
                self._trim()
            self._open[id_] = _Open(kind, id(instance))

    def span_exit(self, id_: str, instance: Any, result: Any) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        state = self._open.get(id_)
        if state is None:
            target = self._alias.get(id_)
            if target is not None:
                self._inner_exit(id_, target, result)
                return
            if isinstance(result, (GeneratorType, AsyncGeneratorType)):
                span = recorder.end(id_, None)
                if span is not None:
                    self._gen_links.register(span, result)
                return
            recorder.end(id_, payload_value(result))
            return
        kind = state.kind
        if kind is SpanKind.LLM:
            if isinstance(result, (GeneratorType, AsyncGeneratorType)):
                state.pending = True
                state.ref = weakref.ref(result, _abandoned_callback(self, id_))
                span = recorder.get(id_)
                if span is not None:
                    self._stream_links.register(span, result)
                return
            self._end_llm(id_, state, result)
            return
        del self._open[id_]
        self._drop_aliases(state)
        if kind is SpanKind.RETRIEVER or kind is SpanKind.RERANKER:
            docs = retrieved_documents(result)
            output = {"documents": len(docs)} if docs is not None else payload_value(result)
            recorder.end(id_, output, documents=docs)
        elif kind is SpanKind.EMBEDDING:
            recorder.end(id_, embedding_output(result))
        else:  # tool
            output, error = tool_result_of(result)
            recorder.end(id_, output, error=error or (state.error if output is None else None))

    def span_drop(self, id_: str, err: BaseException | None) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        state = self._open.pop(id_, None)
        if state is None:
            target = self._alias.pop(id_, None)
            if target is not None:
                outer = self._open.get(target)
                if outer is not None and err is not None:
                    outer.error = err
                return
            recorder.end(id_, error=err)
            return
        self._drop_aliases(state)
        if state.kind is SpanKind.LLM:
            usage, model = safe_usage_and_model(self._diag, state.fallback)
            recorder.end(id_, error=err, usage=usage, model=model)
        else:
            recorder.end(id_, error=err)

    # -- events -----------------------------------------------------------------------------

    def handle(self, event: Any) -> None:
        if self._recorder is None:
            return
        method = self._event_methods.get(type(event))
        if method is None:
            method = self._event_methods[type(event)] = _EVENT_METHODS.get(
                type(event).__name__, _ignore_event
            )
        method(self, event)

    def end_anyway(self, id_: str) -> None:
        """A span's exit failed on its result: still store the span (without it) if open."""
        with contextlib.suppress(Exception):
            self._open.pop(id_, None)
            recorder = self._recorder
            if recorder is not None and recorder.get(id_) is not None:
                recorder.end(id_)

    def _on_in_progress(self, event: Any) -> None:
        response = event.response
        span_id = event.span_id
        target = self._alias.get(span_id)
        if target is None:
            state = self._open.get(span_id)
            if state is not None:
                state.last = response
        else:
            span_id = target
        if response is not None and (response.delta or has_tool_calls(response)):
            self._recorder.first_token(span_id)  # type: ignore[union-attr]

    def _on_llm_end(self, event: Any) -> None:
        span_id = event.span_id
        target = self._alias.get(span_id)
        if target is not None:
            outer = self._open.get(target)
            if outer is not None and event.response is not None:
                outer.fallback = event.response
            return
        state = self._open.get(span_id)
        if state is not None and state.pending:  # else not streamed: the span's exit ends it
            self._end_llm(span_id, state, event.response)

    def _on_exception(self, event: Any) -> None:
        span_id = event.span_id
        if span_id in self._alias:
            return  # the outer stream reports the same exception
        state = self._open.get(span_id)
        if state is not None and state.pending:
            self._end_llm(span_id, state, state.last, error=event.exception)

    def _on_rerank_start(self, event: Any) -> None:
        span_id = event.span_id
        span_id = self._alias.get(span_id, span_id)
        span = self._recorder.get(span_id)  # type: ignore[union-attr]
        if span is None:
            return
        if span.kind == SpanKind.CHAIN:  # a reranker whose class name does not say so
            span.kind = SpanKind.RERANKER
            if span_id not in self._open:
                self._open[span_id] = _Open(SpanKind.RERANKER, -1)
        model = getattr(event, "model_name", None)
        if isinstance(model, str) and model and not span.request_model:
            span.request_model = model  # the model asked for; the preparer derives span.model

    # -- helpers ----------------------------------------------------------------------------

    def _end_llm(
        self,
        span_id: str,
        state: _Open,
        response: Any,
        error: BaseException | None = None,
        end_ns: int | None = None,
    ) -> None:
        if self._open.pop(span_id, None) is None:
            return
        self._drop_aliases(state)
        state.ref = None
        try:
            output, usage, model = read_llm_response(response, self._diag)
            if usage is None and state.fallback is not None:
                usage, fallback_model = usage_and_model(state.fallback, self._diag)
                model = model or fallback_model
            if output is None and error is None and state.fallback is not None:
                output = read_llm_response(state.fallback)[0]
        except Exception as exc:  # noqa: BLE001 - a malformed response: still end (and store) the span
            self._diag.handler_error("llama_index.llm_response", exc)
            output = usage = model = None
        self._recorder.end(  # type: ignore[union-attr]
            span_id, output, error=error, usage=usage, model=model, end_ns=end_ns
        )

    def _inner_exit(self, id_: str, target: str, result: Any) -> None:
        outer = self._open.get(target)
        if outer is None:
            self._alias.pop(id_, None)
            return
        if outer.kind is SpanKind.LLM:
            # The alias stays until the outer span ends: a stream's events come later.
            if not isinstance(result, (GeneratorType, AsyncGeneratorType)) and result is not None:
                outer.fallback = result
            return
        self._alias.pop(id_, None)

    def _drop_aliases(self, state: _Open) -> None:
        if state.inner:
            alias = self._alias
            for inner in state.inner:
                alias.pop(inner, None)

    def drain(self) -> None:
        """Close the pending streams whose generator was garbage collected unfinished.

        The weakref callback only queues them: it runs inside the garbage collector, possibly
        while this thread holds the recorder's or the processor's lock, so it must not call
        them. The queue is drained at the next span (and when the handle is closed).
        """
        deferred = self._abandoned
        while deferred:
            try:
                span_id, end_ns = deferred.popleft()
            except IndexError:
                return
            state = self._open.get(span_id)
            if state is not None and state.pending and self._recorder is not None:
                reason = (
                    "the stream was closed before its end" if state.last else "the stream was never consumed"
                )
                self._end_llm(span_id, state, state.last, error=GeneratorExit(reason), end_ns=end_ns)

    def _classify(self, cls: type | None, name: str) -> str:
        method = name.rpartition(".")[2]
        kind = SpanKind.CHAIN
        if cls is None:
            if method == "call_tool":  # a workflow agent's tool step (an unbound step function)
                kind = SpanKind.TOOL
        elif issubclass(cls, BaseLLM):
            kind = SpanKind.LLM if method in _LLM_METHODS else SpanKind.CHAIN
        elif issubclass(cls, BaseEmbedding):
            kind = SpanKind.EMBEDDING
        elif issubclass(cls, BaseRetriever):
            kind = SpanKind.RETRIEVER
        elif issubclass(cls, BaseNodePostprocessor):
            kind = SpanKind.RERANKER if "rerank" in cls.__name__.lower() else SpanKind.CHAIN
        elif issubclass(cls, BaseTool):
            kind = SpanKind.TOOL if method in _TOOL_METHODS else SpanKind.CHAIN
        elif method == "run" and any(c.__name__ in _AGENT_CLASSES for c in cls.__mro__):
            kind = SpanKind.AGENT
        elif method == "call_tool":
            kind = SpanKind.TOOL
        if len(self._kinds) >= CACHE_MAX:
            self._kinds.clear()
        self._kinds[(cls, name)] = kind
        return kind

    def _prompt_template(self, prompt: Any, llm: Any) -> PromptTemplate | None:
        """The identity of a LlamaIndex prompt template, as the LLM renders it."""
        try:
            text = prompt.get_template(llm=llm) if isinstance(llm, BaseLLM) else prompt.get_template()
        except Exception:  # noqa: BLE001 - a template type that cannot say; no identity then
            return None
        if not isinstance(text, str):
            return None
        prompt_type = (prompt.metadata or {}).get("prompt_type")
        name = getattr(prompt_type, "value", prompt_type)
        name = None if name is None else str(name)
        key = (text, name)
        identity = self._prompts.get(key)
        if identity is None:
            if len(self._prompts) >= CACHE_MAX:
                self._prompts.clear()
            identity = self._prompts[key] = prompt_identity(text, name)
        return identity

    def _trim(self) -> None:
        """Forget bookkeeping of spans the recorder closed without us (TTL eviction)."""
        recorder = self._recorder
        if recorder is None:
            return
        for span_id in [s for s in list(self._open) if recorder.get(s) is None]:
            state = self._open.pop(span_id, None)
            if state is not None:
                self._drop_aliases(state)
        self._diag.event("llama_index_bookkeeping_trimmed")


def _abandoned_callback(tracer: LlamaIndexTracer, span_id: str) -> Any:
    deferred = tracer._abandoned

    def callback(_ref: Any) -> None:
        recorder = tracer._recorder
        now = recorder.clock() if recorder is not None else time.time_ns()
        deferred.append((span_id, now))  # atomic; no locks inside the collector

    return callback


def _ignore_event(tracer: LlamaIndexTracer, event: Any) -> None:
    return None


_EVENT_METHODS: dict[str, Any] = {
    "LLMChatInProgressEvent": LlamaIndexTracer._on_in_progress,
    "LLMCompletionInProgressEvent": LlamaIndexTracer._on_in_progress,
    "LLMChatEndEvent": LlamaIndexTracer._on_llm_end,
    "LLMCompletionEndEvent": LlamaIndexTracer._on_llm_end,
    "ExceptionEvent": LlamaIndexTracer._on_exception,
    "ReRankStartEvent": LlamaIndexTracer._on_rerank_start,
}


def _langchain_parent(recorder: Recorder) -> Any:
    """The LangChain run this LlamaIndex call runs inside (a LangGraph node or tool calling a
    query engine), when this recorder records that run: the call then joins its trace."""
    module = sys.modules.get("langchain_core.runnables.config")
    if module is None:
        return None
    var = getattr(module, "var_child_runnable_config", None)
    config = var.get() if var is not None else None
    if not config:
        return None
    parent = getattr(config.get("callbacks"), "parent_run_id", None)
    if parent is not None and recorder.get(parent) is not None:
        return parent
    return None
