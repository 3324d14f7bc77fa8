"""The open-span map: start/end symmetry, parent links, context inheritance, eviction.

Ids are kept as the framework hands them over (LangChain's ``UUID`` run ids, LlamaIndex's
strings): hashing a UUID is cheaper than formatting it, so ``str()`` happens on the processor
thread.

Adapters call ``start``/``end`` from whatever thread the framework uses (LangChain calls sync
handlers from executor threads during async runs), so the map is guarded by one lock. Work
under the lock is a few dict operations; pricing and serialisation happen later, on the
processor thread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .diagnostics import Diagnostics
from .model import (
    STATUS_ERROR,
    STATUS_OK,
    BranchDecision,
    PromptTemplate,
    RetrievedDocument,
    SpanId,
    SpanKind,
    SpanRecord,
    TokenUsage,
)

GRAPH_END = "__end__"
# Exceptions that stop a run on purpose: LangGraph interrupts and parent commands, a caller
# that stops reading a stream (GeneratorExit), a cancelled task. Not errors for error rates;
# the reason is kept in error_type.
CONTROL_FLOW_ERRORS = frozenset(
    {"GraphInterrupt", "NodeInterrupt", "ParentCommand", "GraphBubbleUp", "GeneratorExit", "CancelledError"}
)
_MAX_ERROR_MESSAGE = 4000
EVICT_SLICE = 1_000  # orphans evicted per housekeeping pass (see evict_expired)


class SpanSink(Protocol):
    def on_end(self, span: SpanRecord) -> None: ...


class Recorder:
    def __init__(
        self,
        processor: SpanSink,
        diagnostics: Diagnostics,
        *,
        open_span_ttl_s: float = 3600.0,
        recent_ended_capacity: int = 20_000,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """``clock`` returns epoch nanoseconds; replaying or simulating traffic (the demo's
        simulated day, tests) passes its own."""
        self._processor = processor
        self._diag = diagnostics
        self._lock = threading.Lock()
        self._open: dict[SpanId, SpanRecord] = {}
        # Ended spans' trace ids (bounded, oldest first out): a child that starts after its
        # parent ended still joins the right trace, and a second end is known as a duplicate.
        self._recent_ended: OrderedDict[SpanId, SpanId] = OrderedDict()
        self._recent_capacity = recent_ended_capacity
        self._ttl_ns = int(open_span_ttl_s * 1e9)
        self.clock = clock

    # -- hot path ---------------------------------------------------------------------------

    def start(
        self,
        span_id: SpanId,
        parent_span_id: SpanId | None,
        kind: str,
        name: str,
        framework: str,
        input: Any = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        model: str | None = None,
        provider: str | None = None,
        invocation_params: dict[str, Any] | None = None,
        prompt_template: PromptTemplate | None = None,
        internal: bool = False,
    ) -> SpanRecord | None:
        """Open a span; returns None (and counts it) for a duplicate start of an open span.

        Declared context comes from ``metadata`` (``prompt_name``, ``prompt_version``,
        ``session_id``, ``user_id``); what a span does not declare it inherits from its parent.
        ``model`` is the model asked for (``end`` takes the one that answered); ``internal``
        marks work that is not a user's request (children inherit it).
        """
        if metadata:
            get = metadata.get
            prompt_name, prompt_version = get("prompt_name"), get("prompt_version")
            session_id, user_id = get("session_id"), get("user_id")
            if prompt_name is not None or prompt_version is not None or user_id is not None:
                prompt_name, prompt_version = _text(prompt_name), _text(prompt_version)
                user_id = _text(user_id)
            if session_id is None:  # else conversation_id, else LangGraph's thread_id
                session_id = get("conversation_id")
                if session_id is None:
                    session_id = get("thread_id")
            if session_id is not None:
                session_id = _text(session_id)
        else:
            prompt_name = prompt_version = session_id = user_id = None
        start_ns = self.clock()
        with self._lock:
            if span_id in self._open:
                duplicate = True
            else:
                duplicate = False
                parent = self._open.get(parent_span_id) if parent_span_id is not None else None
                handed = None
                if parent is not None:
                    trace_id = parent.trace_id
                    internal = internal or parent.internal
                    fed = None
                    if kind == SpanKind.LLM and prompt_template is None:
                        # The template that fed this call: the prompt its sequence rendered just
                        # before it (LangChain), else the span around it that rendered one
                        # (LlamaIndex's LLM.predict) or handed it down (structured_predict).
                        fed = prompt_template = parent.last_prompt or parent.prompt_template
                    elif parent.prompt_template is not None and parent.kind != SpanKind.LLM:
                        handed = parent.prompt_template  # for the LLM calls of the steps it runs
                    if prompt_version is None:
                        source = fed or parent
                        prompt_name = prompt_name or source.prompt_name
                        prompt_version = source.prompt_version
                    session_id = session_id or parent.session_id
                    user_id = user_id or parent.user_id
                    if kind == SpanKind.GRAPH_NODE:
                        if parent.child_node_names is None:
                            parent.child_node_names = set()
                        parent.child_node_names.add(name)
                elif parent_span_id is not None:
                    # Parent unknown or already ended: join its trace if we saw it, else a
                    # trace named after the nearest ancestor we were told of.
                    trace_id = self._recent_ended.get(parent_span_id, parent_span_id)
                else:
                    trace_id = span_id
                if prompt_template is not None or (prompt_version is not None and not prompt_name):
                    prompt_name, prompt_version, prompt_template = _resolve_prompt(
                        name, parent, prompt_name, prompt_version, prompt_template
                    )
                    if kind == SpanKind.PROMPT and parent is not None and prompt_template is not None:
                        parent.last_prompt = prompt_template  # it feeds the next sibling LLM
                span = SpanRecord(span_id, trace_id, parent_span_id, kind, name, framework, start_ns)
                span.prompt_name = prompt_name
                span.prompt_version = prompt_version
                span.prompt_template = prompt_template
                span.last_prompt = handed
                span.session_id = session_id
                span.user_id = user_id
                span.tags = tags
                span.metadata = metadata
                span.input = input
                span.request_model = model
                span.provider = provider
                span.internal = internal
                span.invocation_params = invocation_params
                self._open[span_id] = span  # published complete: children may read it at once
        if duplicate:
            self._diag.event("duplicate_start")
            return None
        return span

    def first_token(self, span_id: SpanId) -> None:
        span = self._open.get(span_id)
        if span is not None and span.first_token_ns is None:
            # max(): a wall clock stepped back (NTP) must not give a negative time to first token
            span.first_token_ns = max(self.clock(), span.start_ns)

    def get(self, span_id: SpanId | None) -> SpanRecord | None:
        return self._open.get(span_id)

    def end(
        self,
        span_id: SpanId,
        output: Any = None,
        *,
        error: BaseException | None = None,
        usage: TokenUsage | None = None,
        model: str | None = None,
        provider: str | None = None,
        documents: list[RetrievedDocument] | None = None,
        end_ns: int | None = None,
        price_context: dict[str, str] | None = None,
    ) -> SpanRecord | None:
        """Close a span and hand it to the processor; None for an unknown or duplicate end.
        ``model`` is the model that answered (the response's, often a dated snapshot).

        ``price_context`` carries what selects a price beyond the model (OpenAI's
        ``service_tier``: priority and flex requests cost differently)."""
        with self._lock:
            span = self._open.pop(span_id, None)
            if span is None:
                duplicate = span_id in self._recent_ended
            else:
                self._remember_ended(span)
        if span is None:
            if duplicate:
                self._diag.event("duplicate_end")
            else:
                self._diag.handler_error("end_of_unknown_run")
            return None
        span.end_ns = end = max(end_ns or self.clock(), span.start_ns)
        if span.first_token_ns is not None and span.first_token_ns > end:
            span.first_token_ns = end  # the clock stepped back between first token and end
        if output is not None:
            span.output = output
        if error is not None:
            set_error(span, error)
        if usage is not None:
            span.usage = usage
        if model:
            span.response_model = model
        if provider and not span.provider:
            span.provider = provider
        if documents is not None:
            span.documents = documents
        if price_context:
            span.price_context = price_context
        if span.branch_candidates:
            span.branch_decisions = _confirmed_branches(span)
        self._processor.on_end(span)
        return span

    def add_branch_candidates(
        self,
        node: SpanRecord | None,
        destinations: Iterable[str],
        condition: str | None,
        decided_by: SpanId,
    ) -> None:
        """A routing result of graph node ``node`` (open or just ended); confirmed when its
        graph run ends."""
        if node is None or node.kind != SpanKind.GRAPH_NODE or not node.parent_span_id:
            return
        with self._lock:
            graph = self._open.get(node.parent_span_id)
            if graph is None:
                return
            if graph.branch_candidates is None:
                graph.branch_candidates = []
            seen: set[str] = set()
            for to_node in destinations:
                if to_node in seen:
                    continue  # a fan-out of N Sends to one node is one routing decision
                seen.add(to_node)
                graph.branch_candidates.append(
                    BranchDecision(graph.name, node.name, to_node, condition, decided_by)
                )

    # -- housekeeping (processor thread) ----------------------------------------------------

    def evict_expired(self, now_ns: int | None = None, limit: int = EVICT_SLICE) -> int:
        """Close spans open for longer than the TTL as errors (``SpanNotEnded``) and store them,
        so a service cannot leak. At most ``limit`` per call, and no more than the processor's
        queue has room for under its high-water mark: an eviction never drops a span (its own
        or the app's). Returns how many were evicted; a truthy result asks the processor to
        run it again on its next pass (the rest of the slice)."""
        now_ns = now_ns or self.clock()
        room = getattr(self._processor, "room", None)
        budget = min(limit, room()) if room is not None else limit
        if budget <= 0:
            return 0
        with self._lock:
            expired: list[SpanRecord] = []
            for span in self._open.values():
                if now_ns - span.start_ns > self._ttl_ns:
                    expired.append(span)
                    if len(expired) >= budget:
                        break
            for span in expired:
                del self._open[span.span_id]
                self._remember_ended(span)
        for span in expired:
            span.end_ns = now_ns
            span.status = STATUS_ERROR
            span.error_type = "SpanNotEnded"
            span.error_message = "the run never ended; evicted after the open-span TTL"
            self._processor.on_end(span)
        if expired:
            self._diag.event("evicted_open_spans", len(expired))
        return len(expired)

    def recently_ended(self, span_id: SpanId) -> bool:
        """Whether ``span_id`` ended recently in this process (bounded memory of ended spans)."""
        return span_id in self._recent_ended

    def open_span_count(self) -> int:
        return len(self._open)

    def _remember_ended(self, span: SpanRecord) -> None:
        recent = self._recent_ended
        recent[span.span_id] = span.trace_id
        if len(recent) > self._recent_capacity:
            recent.popitem(last=False)  # O(1); deleting a plain dict's first key degrades to O(n)


def _resolve_prompt(
    name: str,
    parent: SpanRecord | None,
    prompt_name: str | None,
    prompt_version: str | None,
    template: PromptTemplate | None,
) -> tuple[str | None, str | None, PromptTemplate | None]:
    """A span's prompt (name, version) and the template identity stored with it.

    A declared or inherited version wins over the template's derived one. A version without a
    name takes the template's name, else the name it carries up the tree (the root's, where it
    was declared), else the span's own: never ''. The template is re-labelled with the span's
    (name, version), so ``prompt_versions`` lists it under the version it served.
    """
    if template is not None:
        if prompt_version is None:
            prompt_version = template.prompt_version
        prompt_name = prompt_name or template.prompt_name
    if prompt_version is not None and not prompt_name:
        if parent is not None and parent.prompt_version == prompt_version:
            prompt_name = parent.prompt_name
        prompt_name = prompt_name or name
    labels = (prompt_name, prompt_version)
    if template is not None and (template.prompt_name, template.prompt_version) != labels:
        template = PromptTemplate(prompt_name, prompt_version, template.template_hash, template.template)
    return prompt_name, prompt_version, template


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a declared id whose __str__ raises: keep the span, not the id
        return None


def set_error(span: SpanRecord, error: BaseException) -> None:
    error_type = type(error).__name__
    span.error_type = error_type
    try:
        message = str(error)
    except Exception:  # noqa: BLE001
        message = f"<unprintable {error_type}>"
    span.error_message = message[:_MAX_ERROR_MESSAGE]
    span.status = STATUS_OK if error_type in CONTROL_FLOW_ERRORS else STATUS_ERROR


def _confirmed_branches(graph: SpanRecord) -> list[BranchDecision]:
    """Candidates whose destination is a node that ran in this graph (or the graph's end)."""
    names = graph.child_node_names or set()
    return [b for b in graph.branch_candidates or () if b.to_node == GRAPH_END or b.to_node in names]
