"""LangChain adapter: callback events in, Recorder calls out. Knows LangChain; nothing else does.

Every method is wrapped so that no exception reaches the user's chain: failures are counted
in ``Diagnostics`` and logged once per kind.

``run_inline = True`` on purpose: our methods do no I/O and take microseconds, so running
them in the event-loop thread is cheaper than LangChain's default of a ``run_in_executor``
hop per event during async runs (the thread-pool hand-off costs more than our work, and is a
known source of contention in other tracers). The recorder is locked, so sync runs on many
threads stay safe.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextvars import ContextVar, copy_context
from dataclasses import replace
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from ..diagnostics import Diagnostics
from ..model import PromptTemplate, RetrievedDocument, SpanKind
from ..prepare.prompts import prompt_identity
from ..prepare.usage import from_provider_usage, from_usage_metadata, truthy
from ..recorder import GRAPH_END, Recorder

FRAMEWORK = "langchain"
_SCORE_KEYS = ("score", "relevance_score", "similarity_score", "_score", "distance")
_DOC_ID_KEYS = ("id", "doc_id", "document_id", "source")
_TEMPLATE_CACHE_MAX = 1024

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
                name = _run_name(serialized, kwargs, "chain")
            run_type = kwargs.get("run_type")
            template = None
            if run_type is None:
                if metadata and metadata.get("langgraph_node") == name and _has_tag(tags, "graph:step:"):
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
                _shallow(inputs),
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
                _root_ending(recorder, run_id, outputs)
            span = recorder.end(run_id, _shallow(outputs))
            if span is None or span.parent_span_id is None or not _may_route(outputs):
                return
            if span.kind == SpanKind.GRAPH_NODE:
                goto = _command_destinations(outputs)
                if goto:
                    recorder.add_branch_candidates(span, goto, "Command", span.span_id)
            elif span.kind == SpanKind.CHAIN and _has_tag(span.tags, "seq:step:"):
                # A conditional edge's path function runs as a child of the source node and
                # returns the route(s) chosen; confirmed when the graph run ends.
                routes = _route_destinations(outputs)
                if routes:
                    node = recorder.get(span.parent_span_id)
                    recorder.add_branch_candidates(node, routes, span.name, span.span_id)
        except Exception as exc:  # noqa: BLE001
            self._diag.handler_error("langchain.on_chain_end", exc)
            _end_anyway(recorder, run_id)

    @_guarded
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if self._recorder is not None:
            if type(error).__name__ in _INTERRUPTS:
                _interrupted(self._recorder, run_id)
            if kwargs.get("parent_run_id") is None:
                _root_ending(self._recorder, run_id, None)
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
            _run_name(serialized, kwargs, "llm"),
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
        if (token if type(token) is str else truthy(token)) or _chunk_has_content(chunk):
            recorder.first_token(run_id)

    @_guarded
    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if self._recorder is None:
            return
        # A malformed result raises here; _guarded counts it and still ends the run, without it.
        output, usage, model = _read_llm_result(response, self._diag)
        self._recorder.end(
            run_id, output=output, usage=usage, model=model, price_context=_price_context(response)
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
                _, usage, model = _read_llm_result(response, self._diag)
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
        name = _run_name(serialized, kwargs, "tool")
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
        name = _run_name(serialized, kwargs, "retriever")
        self._start(run_id, parent_run_id, SpanKind.RETRIEVER, name, tags, metadata, query)

    @_guarded
    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        if self._recorder is None:
            return
        docs = [_document(rank, doc) for rank, doc in enumerate(documents or ())]
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
            base = prompt_identity(_template_text(serialized), None)
            if len(self._template_cache) >= _TEMPLATE_CACHE_MAX:
                self._template_cache.clear()
            # Keep a reference to ``serialized`` so its id cannot be reused while cached.
            self._template_cache[id(serialized)] = (serialized, base)
        ids = serialized.get("id")
        if isinstance(ids, list) and ids and name == ids[-1]:
            return base
        return replace(base, prompt_name=name)


# -- helpers (pure functions over LangChain objects) ------------------------------------------


def _run_name(serialized: dict[str, Any] | None, kwargs: dict[str, Any], default: str) -> str:
    name = kwargs.get("name")
    if name:
        return _str_or(name, default)
    if isinstance(serialized, dict):
        if serialized.get("name"):
            return _str_or(serialized["name"], default)
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return _str_or(ids[-1], default)
    return default


def _str_or(value: Any, default: str) -> str:
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a name whose __str__ raises must not cost the run
        return default


def _has_tag(tags: Sequence[str] | None, prefix: str) -> bool:
    return bool(tags) and any(isinstance(t, str) and t.startswith(prefix) for t in tags)  # type: ignore[union-attr]


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _shallow(value: Any) -> Any:
    """A shallow copy of containers, so later mutation by the app (graph state) is not seen."""
    if type(value) is dict:
        return dict(value)
    if type(value) is list:
        return list(value)
    return value


def _chunk_has_content(chunk: Any) -> bool:
    if chunk is None:
        return False
    try:
        message = getattr(chunk, "message", None)
        if message is None:
            return bool(getattr(chunk, "text", None))
        return bool(message.content) or bool(getattr(message, "tool_call_chunks", None))
    except Exception:  # noqa: BLE001 - an unreadable chunk still is the model answering
        return True


def _read_llm_result(response: Any, diag: Diagnostics | None = None) -> tuple[Any, Any, str | None]:
    """(output, usage, model) from an ``LLMResult``; usage prefers ``usage_metadata``."""
    generations = getattr(response, "generations", None) or []
    first = generations[0][0] if generations and generations[0] else None
    message = getattr(first, "message", None)
    output: Any = message if message is not None else getattr(first, "text", None)
    usage = None
    model = None
    response_metadata: dict[str, Any] = {}
    if message is not None:
        usage = from_usage_metadata(getattr(message, "usage_metadata", None), diag)
        response_metadata = getattr(message, "response_metadata", None) or {}
    llm_output = getattr(response, "llm_output", None) or {}
    if usage is None and isinstance(llm_output, dict):
        usage = from_provider_usage(llm_output.get("token_usage") or llm_output.get("usage"), diag)
    if usage is None and response_metadata:
        usage = from_provider_usage(
            response_metadata.get("token_usage")
            or response_metadata.get("usage")
            or response_metadata.get("usage_metadata"),
            diag,
        )
    if usage is None and first is not None:
        info = getattr(first, "generation_info", None) or {}
        usage = from_provider_usage(info.get("token_usage") or info.get("usage"), diag)
    for source in (response_metadata, llm_output if isinstance(llm_output, dict) else {}):
        candidate = source.get("model_name") or source.get("model")
        if isinstance(candidate, str) and candidate:
            model = candidate
            break
    return output, usage, model


def _price_context(response: Any) -> dict[str, str] | None:
    """The service tier the provider says it served (priority and flex are priced apart)."""
    generations = getattr(response, "generations", None) or []
    message = getattr(generations[0][0], "message", None) if generations and generations[0] else None
    metadata = getattr(message, "response_metadata", None) or {}
    tier = metadata.get("service_tier")
    if tier is None:
        llm_output = getattr(response, "llm_output", None)
        tier = llm_output.get("service_tier") if isinstance(llm_output, dict) else None
    if isinstance(tier, str) and tier and tier != "default":
        return {"service_tier": tier}
    return None


def _document(rank: int, doc: Any) -> RetrievedDocument:
    try:
        return _read_document(rank, doc)
    except Exception:  # noqa: BLE001 - one odd document must not cost the others (or the span)
        return RetrievedDocument(rank=rank, document_id=None, content=None, score=None, metadata=None)


def _read_document(rank: int, doc: Any) -> RetrievedDocument:
    metadata = getattr(doc, "metadata", None)
    metadata = dict(metadata) if isinstance(metadata, dict) else None
    score = None
    doc_id = getattr(doc, "id", None)
    if metadata:
        for key in _SCORE_KEYS:
            value = metadata.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                score = float(value)
                break
        if doc_id is None:
            for key in _DOC_ID_KEYS:
                if metadata.get(key) is not None:
                    doc_id = metadata[key]
                    break
    content = getattr(doc, "page_content", None)
    return RetrievedDocument(
        rank=rank,
        document_id=None if doc_id is None else str(doc_id),
        content=content if content is not None else doc,
        score=score,
        metadata=metadata,
    )


def _may_route(outputs: Any) -> bool:
    """Cheap pre-check on every chain end: only these output types can carry a route."""
    return isinstance(outputs, (str, list, tuple)) or type(outputs).__name__ in ("Send", "Command")


def _destination(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if type(item).__name__ == "Send":
        node = getattr(item, "node", None)
        return node if isinstance(node, str) else None
    return None


def _route_destinations(outputs: Any) -> list[str] | None:
    """Node names a path function returned: a str, a Send, or a list of them."""
    items = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    if not items:
        return None
    names = [_destination(item) for item in items]
    if any(n is None for n in names):
        return None
    return names  # type: ignore[return-value]


def _command_destinations(outputs: Any) -> list[str] | None:
    """Destinations of a LangGraph ``Command(goto=...)`` returned by a node."""
    commands = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    names: list[str] = []
    for command in commands:
        if type(command).__name__ != "Command":
            continue
        goto = getattr(command, "goto", None)
        if not goto:
            continue
        routes = _route_destinations(goto)
        names.extend(routes or ())
    return names or None


# -- LangGraph interrupts and resumes ------------------------------------------------------------

_INTERRUPTS = frozenset({"GraphInterrupt", "NodeInterrupt"})
_MAX_INTERRUPTED_SESSIONS = 10_000


class _Interrupted:
    """Per recorder: the last interrupted root trace of each session (bounded, oldest out)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_session: OrderedDict[str, str] = OrderedDict()


_INTERRUPTED: weakref.WeakKeyDictionary[Recorder, _Interrupted] = weakref.WeakKeyDictionary()
_INTERRUPTED_LOCK = threading.Lock()


def _interrupted_sessions(recorder: Recorder) -> _Interrupted:
    state = _INTERRUPTED.get(recorder)
    if state is None:
        with _INTERRUPTED_LOCK:
            state = _INTERRUPTED.setdefault(recorder, _Interrupted())
    return state


def _interrupted(recorder: Recorder, run_id: Any) -> None:
    """A run raised LangGraph's interrupt: its trace's root (still open) is marked."""
    span = recorder.get(run_id)
    root = recorder.get(span.trace_id) if span is not None else None
    if root is not None and root.parent_span_id is None:
        if root.metadata is None:
            root.metadata = {}
        root.metadata["interrupted"] = True


def _root_ending(recorder: Recorder, run_id: Any, outputs: Any) -> None:
    """Before a root run ends: an interrupted graph run is remembered for its session; a run
    resuming it (input ``Command(resume=...)``) gets ``resumed_from_trace_id`` naming it.

    LangGraph 1.x returns normally from an interrupted run (the node raised ``GraphInterrupt``,
    the result carries ``__interrupt__``); older versions raise it out of the root. The map is
    in this process: a resume served by another process has ``resumed`` but no link."""
    root = recorder.get(run_id)
    if root is None or root.parent_span_id is not None:
        return
    metadata = root.metadata
    interrupted = bool(metadata and metadata.get("interrupted")) or (
        isinstance(outputs, dict) and "__interrupt__" in outputs
    )
    command = root.input
    resumed = type(command).__name__ == "Command" and getattr(command, "resume", None) is not None
    if not (interrupted or resumed):
        return
    if metadata is None:
        metadata = root.metadata = {}
    session = root.session_id
    state = _interrupted_sessions(recorder)
    with state.lock:
        if resumed:
            metadata["resumed"] = True
            earlier = state.by_session.pop(session, None) if session is not None else None
            if earlier is not None:
                metadata["resumed_from_trace_id"] = earlier
        if interrupted:
            metadata["interrupted"] = True
            if session is not None:
                state.by_session[session] = str(root.trace_id)
                state.by_session.move_to_end(session)
                if len(state.by_session) > _MAX_INTERRUPTED_SESSIONS:
                    state.by_session.popitem(last=False)


def _template_text(serialized: dict[str, Any]) -> str | None:
    """Each message's role and template, in order: what a prompt version should mean."""
    parts: list[str] = []

    def walk(node: Any, role: str | None) -> None:
        if isinstance(node, dict):
            ids = node.get("id")
            kind = ids[-1] if isinstance(ids, list) and ids else role
            kwargs = node.get("kwargs")
            if isinstance(kwargs, dict):
                if isinstance(kwargs.get("template"), str):
                    parts.append(f"[{role or kind}] {kwargs['template']}")
                elif kind == "MessagesPlaceholder":
                    parts.append(f"[MessagesPlaceholder] {{{kwargs.get('variable_name')}}}")
                for key in ("messages", "prompt", "prompts", "example_prompt", "suffix", "prefix"):
                    if key in kwargs:
                        walk(kwargs[key], kind if key == "prompt" else None)
        elif isinstance(node, list):
            for item in node:
                walk(item, role)

    walk(serialized, None)
    return "\n".join(parts) if parts else None


# -- process-wide instrumentation -------------------------------------------------------------

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


# Imported lazily by LLMObs; re-exported for type checkers and users who subclass it.
__all__ = ["GRAPH_END", "LangChainCallbackHandler", "call_unrecorded", "global_handler", "unbind_global"]
