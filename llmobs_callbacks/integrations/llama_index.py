"""LlamaIndex adapter on the instrumentation API: spans and events in, Recorder calls out.

Attach with ``LLMObs.instrument_llama_index()``: one span handler and one event handler on
LlamaIndex's root dispatcher, which every module's dispatcher propagates to. Knows LlamaIndex;
nothing else does.

How LlamaIndex's spans become ours:

* **Tree.** A span's parent is the one LlamaIndex gives (its ``active_span_id`` ContextVar),
  so asyncio tasks and LlamaIndex's own context-copying threads keep the tree. A raw
  ``threading.Thread`` loses that context: its spans start a trace of their own (nothing here
  keeps per-thread "current span" state, so another trace cannot be corrupted).
* **Kinds.** From the instance's class and the method: ``llm`` (``chat``/``complete`` and
  their stream/async variants of an LLM), ``embedding``, ``retriever``, ``reranker``,
  ``tool`` (``BaseTool.call``/``acall`` and a workflow agent's ``call_tool`` step), ``agent``
  (a workflow agent's ``run``), ``chain`` for everything else (query and chat engines,
  synthesizers, ``LLM.predict``, workflow steps…).
* **One logical call, one span.** LlamaIndex nests an LLM method in another
  (``acomplete→complete``, ``stream_chat→stream_complete``), ``retrieve→_retrieve``,
  ``get_query_embedding→_get_query_embedding``, ``call_tool→FunctionTool.acall``. The inner
  span is merged into the outer one (never recorded, its children re-parented, its events
  routed to the outer span), so tokens, cost and call counts are never doubled. Usage is read
  from the outer call's response, else from the inner one's.
* **Streams.** LlamaIndex exits a ``stream_*`` span as soon as the generator is returned; our
  LLM span stays open until the stream's end (``LLM*EndEvent``), error (``ExceptionEvent``),
  early close (``GeneratorExit``, stored as ``ok`` with that reason) or, for a stream nobody
  ever iterates, until the generator is garbage collected. ``ttft_ms`` is the first non-empty
  delta.
* **Lazy streams.** A streaming synthesizer returns a generator that calls the LLM only when
  the app iterates it, after every span of the query has exited, so LlamaIndex gives that LLM
  call no parent. We remember the frames of generators returned by spans and, for a span
  LlamaIndex starts without a parent, look up the calling stack for one: the streamed LLM call
  joins the query's trace (and its declared session/user/prompt).
* **Inside LangChain.** A LlamaIndex call made inside a LangChain/LangGraph run that this
  store records (a node or tool calling a query engine) joins that run's trace, as its child.
* **Declared context** comes from ``instrument_tags({...})`` and ``LLMObs.context(...)``:
  ``prompt_name``, ``prompt_version``, ``session_id``, ``user_id`` and ``tags``; other keys are
  stored as attributes. A prompt template passed to ``LLM.predict``/``stream``/
  ``structured_predict`` (what ``LLMPredictStartEvent.template`` carries) gives a derived
  prompt version (its ``prompt_type`` as the name) unless a version was declared.

LlamaIndex swallows handler exceptions silently; every entry point here is guarded, counts
failures in ``Diagnostics`` and logs once. The hot path does dict operations and attribute
reads only: payloads are handed to the recorder as they are and serialised on the processor
thread.
"""

from __future__ import annotations

import contextlib
import sys
import time
import weakref
from collections import deque
from collections.abc import Mapping
from types import AsyncGeneratorType, GeneratorType
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts.base import BasePromptTemplate
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.tools.types import BaseTool

from ..diagnostics import Diagnostics
from ..model import PromptTemplate, RetrievedDocument, SpanKind
from ..obs import current_context, restore_context
from ..prompts import derived_version, prompt_identity
from ..recorder import Recorder
from ..usage import from_provider_usage

FRAMEWORK = "llama_index"

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
# Arguments never stored as span input: workflow contexts and memories are large, shared and
# mutated concurrently (a workflow ``Context.to_dict()`` must not run on another thread).
_SKIP_ARG_TYPES = frozenset({"Context", "ChatMemoryBuffer", "Memory", "CallbackManager"})
# Module of an LLM/embedding integration (``llama_index.llms.<x>``) → provider as stored.
_PROVIDER_MODULES = {
    "openai_like": None,  # vLLM, LM Studio…: the model name says nothing about a provider
    "azure_openai": "azure",
    "bedrock_converse": "bedrock",
    "bedrock": "bedrock",
    "gemini": "google_genai",
    "vertex": "google_vertexai",
}
_PROPAGATION_KEY = "llmobs_context"
_MAX_FRAME_WALK = 128
_CACHE_MAX = 4096
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
        if span.prompt_version is not None and not _derived(span):
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
                if generator is not None and _generator_frame(generator) is frame:
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
        name = _span_name(id_)
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
        metadata, tag_list = _declared(tags)
        if link is not None:
            metadata, tag_list = self._gen_links.merge_into(link, metadata, tag_list)
        model = provider = params = template = None
        if kind is SpanKind.CHAIN:
            payload = _arguments_input(arguments)
            prompt = arguments.get("prompt")
            if prompt is not None and isinstance(prompt, BasePromptTemplate):
                template = self._prompt_template(prompt, instance)
        elif kind is SpanKind.LLM:
            payload, params = _llm_input(arguments, instance)
            model = _model_of(instance)
            provider = _provider(cls)
        elif kind is SpanKind.RETRIEVER or kind is SpanKind.RERANKER:
            payload = _query_text(arguments.get("str_or_query_bundle") or arguments.get("query_bundle"))
            if payload is None:
                payload = _arguments_input(arguments)
            model = _model_of(instance) if kind is SpanKind.RERANKER else None
        elif kind is SpanKind.EMBEDDING:
            payload = _arguments_input(arguments)
            model = _model_of(instance)
            provider = _provider(cls)
        elif kind is SpanKind.TOOL:
            name, payload = _tool_call(name, arguments, instance)
        else:  # agent
            start_event = arguments.get("start_event")
            user_msg = getattr(start_event, "user_msg", None)
            payload = user_msg if user_msg is not None else _value(start_event)
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
            internal=parent_id is None and _is_ingestion(cls),
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
            recorder.end(id_, _value(result))
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
            docs = _documents(result)
            output = {"documents": len(docs)} if docs is not None else _value(result)
            recorder.end(id_, output, documents=docs)
        elif kind is SpanKind.EMBEDDING:
            recorder.end(id_, _embedding_output(result))
        else:  # tool
            output, error = _tool_result(result)
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
            usage, model = _safe_usage_and_model(self._diag, state.fallback)
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
        if response is not None and (response.delta or _has_tool_calls(response)):
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
            output, usage, model = _read_llm_response(response, self._diag)
            if usage is None and state.fallback is not None:
                usage, fallback_model = _usage_and_model(state.fallback, self._diag)
                model = model or fallback_model
            if output is None and error is None and state.fallback is not None:
                output = _read_llm_response(state.fallback)[0]
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
        if len(self._kinds) >= _CACHE_MAX:
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
            if len(self._prompts) >= _CACHE_MAX:
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


# -- the handlers the dispatcher calls ------------------------------------------------------


def _set_tracer(handler: Any, tracer: LlamaIndexTracer) -> None:
    """Keep the tracer in the instance ``__dict__``, not as a pydantic private attribute:
    those are read through ``BaseModel.__getattr__``, a microsecond per event on the hot path."""
    object.__setattr__(handler, "_tracer", tracer)


class LlamaIndexSpanHandler(BaseSpanHandler[Any]):
    """Span handler on the root dispatcher. Overrides ``span_enter/exit/drop`` directly: the
    base class's ``open_spans`` bookkeeping would duplicate the recorder's."""

    def __init__(self, tracer: LlamaIndexTracer) -> None:
        super().__init__(open_spans={}, completed_spans=[], dropped_spans=[], current_span_ids={})
        _set_tracer(self, tracer)

    @classmethod
    def class_name(cls) -> str:
        return "LLMObsSpanHandler"

    # Workflows carry these across the task (or process) that runs their steps.
    def capture_propagation_context(self) -> dict[str, Any]:
        declared = current_context()
        if declared is None:
            return {}
        return {_PROPAGATION_KEY: {"metadata": dict(declared[0]), "tags": list(declared[1])}}

    def restore_propagation_context(self, context: dict[str, Any]) -> None:
        try:
            declared = context.get(_PROPAGATION_KEY)
            if isinstance(declared, dict):
                restore_context(dict(declared.get("metadata") or {}), list(declared.get("tags") or ()))
        except Exception as exc:  # noqa: BLE001
            self._tracer._diag.handler_error("llama_index.restore_propagation_context", exc)

    def span_enter(
        self,
        id_: str,
        bound_args: Any,
        instance: Any | None = None,
        parent_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._tracer.span_enter(id_, bound_args, instance, parent_id, tags)
        except Exception as exc:  # noqa: BLE001
            self._tracer._diag.handler_error("llama_index.span_enter", exc)

    def span_exit(
        self, id_: str, bound_args: Any, instance: Any | None = None, result: Any | None = None, **kwargs: Any
    ) -> None:
        try:
            self._tracer.span_exit(id_, instance, result)
        except Exception as exc:  # noqa: BLE001
            self._tracer._diag.handler_error("llama_index.span_exit", exc)
            self._tracer.end_anyway(id_)

    def span_drop(
        self,
        id_: str,
        bound_args: Any,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._tracer.span_drop(id_, err)
        except Exception as exc:  # noqa: BLE001
            self._tracer._diag.handler_error("llama_index.span_drop", exc)
            self._tracer.end_anyway(id_)

    # Abstract in the base class; unused because the three methods above are overridden.
    def new_span(self, id_: str, bound_args: Any, instance: Any = None, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, id_: str, bound_args: Any, instance: Any = None, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, id_: str, bound_args: Any, instance: Any = None, **kwargs: Any) -> None:
        return None


class LlamaIndexEventHandler(BaseEventHandler):
    """Event handler on the root dispatcher: stream progress/end, exceptions, rerank info."""

    def __init__(self, tracer: LlamaIndexTracer) -> None:
        super().__init__()
        _set_tracer(self, tracer)

    @classmethod
    def class_name(cls) -> str:
        return "LLMObsEventHandler"

    def handle(self, event: Any, **kwargs: Any) -> None:
        try:
            self._tracer.handle(event)
        except Exception as exc:  # noqa: BLE001
            self._tracer._diag.handler_error("llama_index.event", exc)


class LlamaIndexInstrumentation:
    """Handle returned by ``LLMObs.instrument_llama_index()``; ``close()`` detaches."""

    def __init__(self, recorder: Recorder, diagnostics: Diagnostics) -> None:
        self.tracer = LlamaIndexTracer(recorder, diagnostics)
        self.span_handler = LlamaIndexSpanHandler(self.tracer)
        self.event_handler = LlamaIndexEventHandler(self.tracer)
        self._attached = False

    @property
    def attached(self) -> bool:
        return self._attached

    def attach(self) -> None:
        root = get_dispatcher()
        if not any(h is self.span_handler for h in root.span_handlers):
            root.add_span_handler(self.span_handler)
        if not any(h is self.event_handler for h in root.event_handlers):
            root.add_event_handler(self.event_handler)
        self._attached = True

    def close(self) -> None:
        """Detach both handlers from the root dispatcher (idempotent)."""
        try:
            self.tracer.drain()
        except Exception as exc:  # noqa: BLE001
            self.tracer._diag.handler_error("llama_index.close", exc)
        root = get_dispatcher()
        # New lists rather than in-place removal: a dispatch iterating the old list is unaffected.
        root.span_handlers = [h for h in root.span_handlers if h is not self.span_handler]
        root.event_handlers = [h for h in root.event_handlers if h is not self.event_handler]
        self._attached = False
        self.tracer.bind(None)


# -- pure helpers over LlamaIndex objects (shared with the legacy callback handler) -----------


def _span_name(id_: str) -> str:
    """``RetrieverQueryEngine.query-<uuid4>`` → ``RetrieverQueryEngine.query``."""
    if len(id_) > 37 and id_[-37] == "-":
        return id_[:-37]
    return id_


def _declared(tags: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, list[str] | None]:
    """Metadata and tags from ``instrument_tags`` and ``LLMObs.context`` (ours win)."""
    declared = current_context()
    if not tags and declared is None:
        return None, None
    metadata: dict[str, Any] = {}
    tag_list: list[str] = []
    if tags:
        for key, value in tags.items():
            if key.startswith("llamaindex."):
                continue  # the workflow runtime's own run/step tags
            if key == "tags":
                if isinstance(value, (list, tuple)):
                    tag_list.extend(t if type(t) is str else _safe_str(t) for t in value)
                elif value is not None:
                    tag_list.append(_safe_str(value))
                continue
            metadata[key] = value
    if declared is not None:
        metadata.update(declared[0])
        tag_list.extend(declared[1])
    return metadata or None, tag_list or None


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a tag whose __str__ raises must not cost the span
        return f"<{type(value).__name__}>"


def _model_name(value: Any) -> str | None:
    """A model name, or None for LlamaIndex's placeholder ``"unknown"``."""
    return value if isinstance(value, str) and value and value != "unknown" else None


_INGESTION: dict[type, bool] = {}


def _is_ingestion(cls: type | None) -> bool:
    """Whether a root span of this class is index building or ingestion, not a user's request:
    node parsers and other transformations, embedding batches, an ``IngestionPipeline`` run
    (``VectorStoreIndex.from_documents`` starts its parsing and embedding as separate roots)."""
    if cls is None:
        return False
    try:
        return _INGESTION[cls]
    except KeyError:
        pass
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.schema import TransformComponent

    found = issubclass(cls, (TransformComponent, BaseEmbedding, IngestionPipeline))
    if len(_INGESTION) < _CACHE_MAX:
        _INGESTION[cls] = found
    return found


_PROVIDERS: dict[type, str | None] = {}


def _provider(cls: type | None) -> str | None:
    """``llama_index.llms.openai`` → ``openai``; mocks and custom classes → None (the pricer
    then finds the provider from the model name)."""
    if cls is None:
        return None
    try:
        return _PROVIDERS[cls]
    except KeyError:
        pass
    provider = None
    for klass in cls.__mro__:
        parts = klass.__module__.split(".")
        if len(parts) >= 3 and parts[0] == "llama_index" and parts[1] in ("llms", "embeddings"):
            provider = _PROVIDER_MODULES.get(parts[2], parts[2])
            break
    _PROVIDERS[cls] = provider
    return provider


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


def _generator_frame(generator: Any) -> Any:
    return generator.gi_frame if type(generator) is GeneratorType else generator.ag_frame


class ChatMessages:
    """Chat messages as ``[{"role", "content"}]``, rendered on the processor thread."""

    __slots__ = ("messages",)

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages

    def to_dict(self) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            role = getattr(m, "role", None)
            item: dict[str, Any] = {"role": getattr(role, "value", role), "content": getattr(m, "content", m)}
            extra = getattr(m, "additional_kwargs", None)
            if extra:
                item["additional_kwargs"] = extra
            out.append(item)
        return out


def _llm_input(arguments: Mapping[str, Any], instance: Any) -> tuple[Any, dict[str, Any] | None]:
    """(input, invocation params) of a ``chat``/``complete`` call from its bound arguments."""
    kwargs = arguments.get("kwargs")
    messages = arguments.get("messages")
    if messages is not None:
        payload: Any = ChatMessages(list(messages))
    else:
        args = arguments.get("args")
        payload = args[0] if args else (kwargs or {}).get("prompt", arguments.get("prompt"))
    params: dict[str, Any] = {}
    for key in _fields_of(type(instance), ("temperature", "max_tokens")):
        value = getattr(instance, key, None)
        if value is not None:
            params[key] = value
    if kwargs:
        params.update((k, v) for k, v in kwargs.items() if k not in ("prompt", "formatted"))
    return payload, params or None


_FIELDS: dict[tuple[type, tuple[str, ...]], tuple[str, ...]] = {}


def _fields_of(cls: type, names: tuple[str, ...]) -> tuple[str, ...]:
    """Which of ``names`` a (pydantic) class declares: reading a missing attribute off a
    pydantic model raises inside ``__getattr__`` and costs microseconds on the hot path."""
    key = (cls, names)
    found = _FIELDS.get(key)
    if found is None:
        fields = getattr(cls, "model_fields", None)
        if isinstance(fields, dict):
            found = tuple(n for n in names if n in fields or isinstance(getattr(cls, n, None), property))
        else:
            found = names
        if len(_FIELDS) < _CACHE_MAX:
            _FIELDS[key] = found
    return found


def _model_of(instance: Any) -> str | None:
    """The model an LLM instance names (``model``, else ``model_name``)."""
    for name in _fields_of(type(instance), ("model", "model_name")):
        value = _model_name(getattr(instance, name, None))
        if value is not None:
            return value
    return None


def _query_text(value: Any) -> Any:
    if isinstance(value, QueryBundle):
        return value.query_str
    return value


def _value(value: Any) -> Any:
    """A cheap, readable stand-in for LlamaIndex objects; anything else as it is.

    What to do is decided once per type (``hasattr`` on a pydantic model that lacks the
    attribute raises internally and costs microseconds), then cached.
    """
    cls = type(value)
    if cls is str or value is None:
        return value
    convert = _VALUE_BY_TYPE.get(cls, _UNSEEN)
    if convert is _UNSEEN:
        convert = _value_converter(value)
        if len(_VALUE_BY_TYPE) < _CACHE_MAX:
            _VALUE_BY_TYPE[cls] = convert
    return value if convert is None else convert(value)


def _list_value(value: list[Any]) -> Any:
    if value and isinstance(value[0], (NodeWithScore, BaseNode)):
        return {"nodes": len(value)}
    return list(value)


def _response_text(value: Any) -> Any:
    response = value.response
    return response if isinstance(response, str) else value


def _value_converter(value: Any) -> Any:
    cls = type(value)
    if cls is list:
        return _list_value
    if cls is dict:
        return dict
    if isinstance(value, QueryBundle):
        return _query_bundle_text
    if isinstance(value, BasePromptTemplate):
        return _prompt_label  # the text is in prompt_versions, the rendered prompt on the LLM span
    if hasattr(value, "source_nodes"):  # Response, AgentChatResponse and their streaming kinds
        if hasattr(value, "response_gen"):
            return _none  # a stream: its text is not known yet (the LLM span gets it)
        if hasattr(value, "response"):
            return _response_text
    return _CONVERTERS.get(cls.__name__)


def _none(value: Any) -> None:
    return None


def _query_bundle_text(value: Any) -> Any:
    return value.query_str


def _derived(span: Any) -> bool:
    """Whether the span's prompt version is its template's derived one (not declared)."""
    t = span.prompt_template
    return t is not None and bool(t.template_hash) and span.prompt_version == derived_version(t.template_hash)


def _prompt_label(value: Any) -> str:
    prompt_type = (value.metadata or {}).get("prompt_type")
    return f"<{type(value).__name__} {getattr(prompt_type, 'value', prompt_type)}>"


_UNSEEN = object()
_VALUE_BY_TYPE: dict[type, Any] = {}


def _message_output(message: Any) -> Any:
    text = getattr(message, "content", None)
    tool_calls = (getattr(message, "additional_kwargs", None) or {}).get("tool_calls")
    return {"content": text, "tool_calls": list(tool_calls)} if tool_calls else text


def _has_tool_calls(response: Any) -> bool:
    message = getattr(response, "message", None)
    return bool(message is not None and (message.additional_kwargs or {}).get("tool_calls"))


# Workflow results, by class name (no import of llama-index-workflows needed).
_CONVERTERS: dict[str, Any] = {
    "StopEvent": lambda ev: _value(getattr(ev, "result", None)),
    "AgentOutput": lambda out: _message_output(out.response),
}


def _arguments_input(arguments: Mapping[str, Any]) -> Any:
    """A span's input: its one argument, or ``{name: value}`` of several."""
    if not arguments:
        return None
    if len(arguments) == 1:
        for value in arguments.values():
            return None if type(value).__name__ in _SKIP_ARG_TYPES else _value(value)
    return {k: _value(v) for k, v in arguments.items() if type(v).__name__ not in _SKIP_ARG_TYPES}


def _tool_call(name: str, arguments: Mapping[str, Any], instance: Any) -> tuple[str, Any]:
    """(tool name, arguments) of ``BaseTool.call/acall`` or a workflow agent's ``call_tool``."""
    event = arguments.get("ev")
    if event is not None and hasattr(event, "tool_name"):
        return str(event.tool_name), getattr(event, "tool_kwargs", None)
    metadata = getattr(instance, "metadata", None)
    tool_name = getattr(metadata, "name", None) or name
    args = arguments.get("args")
    kwargs = arguments.get("kwargs")
    if args:
        return tool_name, {"args": list(args), "kwargs": kwargs or {}}
    if kwargs is not None:
        return tool_name, {k: v for k, v in kwargs.items() if type(v).__name__ not in _SKIP_ARG_TYPES}
    return tool_name, _arguments_input(arguments)


class ToolError(Exception):
    """A tool call LlamaIndex reported as failed (``ToolOutput.is_error``) without an exception."""


def _tool_result(result: Any) -> tuple[Any, BaseException | None]:
    """(output, error) of a tool span: a ``ToolOutput`` or a workflow ``ToolCallResult``."""
    tool_output = getattr(result, "tool_output", None)
    if tool_output is None and hasattr(result, "is_error") and hasattr(result, "raw_output"):
        tool_output = result
    if tool_output is None:
        return _value(result), None
    content = getattr(tool_output, "content", None)
    if getattr(tool_output, "is_error", False):
        exc = getattr(tool_output, "exception", None)
        return None, exc if isinstance(exc, BaseException) else ToolError(str(content))
    return content, None


def _embedding_output(result: Any) -> Any:
    if type(result) is list and result:
        first = result[0]
        if isinstance(first, list):
            return {"embeddings": len(result), "dimensions": len(first)}
        if isinstance(first, (int, float)):
            return {"embeddings": 1, "dimensions": len(result)}
    return None


def _documents(result: Any) -> list[RetrievedDocument] | None:
    """Every ``NodeWithScore`` with its rank, node id, score, text and metadata."""
    if type(result) is not list:
        return None
    docs = []
    for rank, item in enumerate(result):
        node = getattr(item, "node", item)
        score = getattr(item, "score", None)
        text = getattr(node, "text", None)
        if not isinstance(text, str):
            try:
                text = node.get_content()
            except Exception:  # noqa: BLE001 - image nodes and other shapes
                text = None
        metadata = getattr(node, "metadata", None)
        node_id = getattr(node, "node_id", None) or getattr(node, "id_", None)
        docs.append(
            RetrievedDocument(
                rank=rank,
                document_id=None if node_id is None else str(node_id),
                content=text,
                score=float(score) if isinstance(score, (int, float)) and type(score) is not bool else None,
                metadata=dict(metadata) if isinstance(metadata, dict) and metadata else None,
            )
        )
    return docs


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _safe_usage_and_model(diag: Diagnostics, response: Any) -> tuple[Any, str | None]:
    if response is None:
        return None, None
    try:
        return _usage_and_model(response, diag)
    except Exception as exc:  # noqa: BLE001 - a malformed response: the span still ends
        diag.handler_error("llama_index.llm_response", exc)
        return None, None


def _usage_and_model(response: Any, diag: Diagnostics | None = None) -> tuple[Any, str | None]:
    """Token usage and the answering model from a ``ChatResponse``/``CompletionResponse``.

    ``raw.usage`` (OpenAI and compatibles: cached and reasoning details), ``raw.usage_metadata``
    (Gemini, LangChain-shaped), else ``additional_kwargs`` token counts (what LlamaIndex's
    integrations copy there), else — for a converted response — its message's.
    """
    if response is None:
        return None, None
    raw = getattr(response, "raw", None)
    usage = None
    model = None
    if raw is not None:
        usage = from_provider_usage(_get(raw, "usage"), diag) or from_provider_usage(
            _get(raw, "usage_metadata"), diag
        )
        candidate = _get(raw, "model") or _get(raw, "model_name") or _get(raw, "model_version")
        if isinstance(candidate, str) and candidate:
            model = candidate
    if usage is None:
        extra = getattr(response, "additional_kwargs", None)
        if extra:
            usage = from_provider_usage(extra, diag)
        if usage is None:
            message = getattr(response, "message", None)
            extra = getattr(message, "additional_kwargs", None)
            if extra:
                usage = from_provider_usage(extra, diag)
    return usage, model


def _read_llm_response(response: Any, diag: Diagnostics | None = None) -> tuple[Any, Any, str | None]:
    """(output, usage, model): output is the text, with tool calls when the LLM made some."""
    if response is None:
        return None, None, None
    usage, model = _usage_and_model(response, diag)
    message = getattr(response, "message", None)
    if message is None:
        return getattr(response, "text", None), usage, model
    return _message_output(message), usage, model


__all__ = [
    "FRAMEWORK",
    "ChatMessages",
    "LlamaIndexEventHandler",
    "LlamaIndexInstrumentation",
    "LlamaIndexSpanHandler",
    "LlamaIndexTracer",
    "ToolError",
]
