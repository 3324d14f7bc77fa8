"""Framework-free records: what the hot path builds and what sinks receive.

Records use ``__slots__`` dataclasses because the hot path creates one per run: attribute
access and construction are cheaper than dicts or pydantic models, and nothing here validates.
Raw payloads (inputs, outputs, documents) are kept as references and turned into text by
the processor thread (see ``prepare/serialize.py``), never on the caller's thread.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

# A span id as the framework gives it (UUID, str); the preparer turns ids into str.
SpanId = Hashable


class SpanKind:
    CHAIN = "chain"
    LLM = "llm"
    PROMPT = "prompt"
    PARSER = "parser"
    RETRIEVER = "retriever"
    TOOL = "tool"
    EMBEDDING = "embedding"
    AGENT = "agent"
    GRAPH_NODE = "graph_node"
    RERANKER = "reranker"
    JUDGE = "judge"


STATUS_OK = "ok"
STATUS_ERROR = "error"


@dataclass(slots=True)
class TokenUsage:
    """Token counts of one LLM call. ``None`` means "not reported", never zero.

    ``input_tokens`` includes cached tokens and ``output_tokens`` includes reasoning tokens,
    as LangChain's ``UsageMetadata`` and genai-prices both count them.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None

    def is_empty(self) -> bool:
        return self.input_tokens is None and self.output_tokens is None and self.total_tokens is None


@dataclass(slots=True)
class RetrievedDocument:
    rank: int
    document_id: str | None
    content: Any
    score: float | None
    metadata: dict[str, Any] | None


@dataclass(slots=True)
class BranchDecision:
    graph: str
    from_node: str
    to_node: str
    condition: str | None
    span_id: SpanId


@dataclass(slots=True)
class PromptTemplate:
    """A prompt identity seen in a run: declared name/version and/or a template fingerprint."""

    prompt_name: str | None
    prompt_version: str | None
    template_hash: str | None
    template: str | None


class SpanRecord:
    """One run. Times are epoch nanoseconds (``time.time_ns``) until the sink converts them.

    A hand-written ``__slots__`` class rather than a dataclass: the hot path builds one per
    run, and setting the seven identifying fields positionally (the rest start as None) costs
    a third of a 30-field dataclass ``__init__``.
    """

    __slots__ = (
        # identity and timing
        "span_id",
        "trace_id",
        "parent_span_id",
        "kind",
        "name",
        "framework",
        "start_ns",
        "end_ns",
        "first_token_ns",
        "status",
        "error_type",
        "error_message",
        # LLM call: the model asked for, the one that answered, and (after preparation) the
        # normalised grouping key stored as ``model``
        "model",
        "request_model",
        "response_model",
        "provider",
        "usage",
        "cost_usd",
        "price_source",
        "price_context",
        "invocation_params",
        # context
        "prompt_name",
        "prompt_version",
        "prompt_template",
        "session_id",
        "user_id",
        "tags",
        "metadata",
        "internal",  # not a user's request (the judge, index building): inherited by children
        # payloads (raw on the hot path, text after preparation)
        "input",
        "output",
        "documents",
        "branch_decisions",
        # recorder bookkeeping, not stored: graph-node children (to confirm branch
        # candidates), routing candidates waiting for the graph run to end, and the last
        # prompt a child rendered (it feeds the next sibling LLM)
        "child_node_names",
        "branch_candidates",
        "last_prompt",
    )

    span_id: SpanId
    trace_id: SpanId
    parent_span_id: SpanId | None
    kind: str
    name: str
    framework: str
    start_ns: int
    end_ns: int | None
    first_token_ns: int | None
    status: str
    error_type: str | None
    error_message: str | None
    model: str | None
    request_model: str | None
    response_model: str | None
    provider: str | None
    usage: TokenUsage | None
    cost_usd: float | None
    price_source: str | None
    price_context: dict[str, str] | None  # e.g. {"service_tier": "priority"}: selects the price
    invocation_params: dict[str, Any] | None
    prompt_name: str | None
    prompt_version: str | None
    prompt_template: PromptTemplate | None
    session_id: str | None
    user_id: str | None
    tags: list[str] | None
    metadata: dict[str, Any] | None
    internal: bool
    input: Any
    output: Any
    documents: list[RetrievedDocument] | None
    branch_decisions: list[BranchDecision] | None
    child_node_names: set[str] | None
    branch_candidates: list[BranchDecision] | None
    last_prompt: PromptTemplate | None

    def __init__(
        self,
        span_id: SpanId,
        trace_id: SpanId,
        parent_span_id: SpanId | None,
        kind: str,
        name: str,
        framework: str,
        start_ns: int,
    ) -> None:
        self.span_id = span_id
        self.trace_id = trace_id
        self.parent_span_id = parent_span_id
        self.kind = kind
        self.name = name
        self.framework = framework
        self.start_ns = start_ns
        self.status = STATUS_OK
        self.end_ns = self.first_token_ns = self.error_type = self.error_message = None
        self.model = self.request_model = self.response_model = None
        self.provider = self.usage = self.cost_usd = self.price_source = None
        self.internal = False
        self.price_context = None
        self.invocation_params = self.prompt_name = self.prompt_version = self.prompt_template = None
        self.session_id = self.user_id = self.tags = self.metadata = None
        self.input = self.output = self.documents = self.branch_decisions = None
        self.child_node_names = self.branch_candidates = self.last_prompt = None

    def __repr__(self) -> str:
        return f"SpanRecord({self.kind} {self.name!r} span_id={self.span_id} trace_id={self.trace_id})"

    @property
    def latency_ms(self) -> float | None:
        if self.end_ns is None:
            return None
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_ns is None:
            return None
        return (self.first_token_ns - self.start_ns) / 1e6
