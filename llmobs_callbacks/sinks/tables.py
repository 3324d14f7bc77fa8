"""The store's schema: SQLModel tables that double as its documentation.

These names and columns are a public contract (users' SQL and Grafana panels read them);
add columns, never rename. ``SCHEMA_VERSION`` counts changes; ``schema.py`` migrates.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, text
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 2


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _json() -> Any:
    # A new Column per field: SQLAlchemy Column objects cannot be shared between tables.
    return Field(default=None, sa_column=Column(JSON, nullable=True))


def _text() -> Any:
    return Field(default=None, sa_column=Column(Text, nullable=True))


class SpanRow(SQLModel, table=True):
    """One run of a chain, LLM, retriever, tool, graph node… (``span_id`` = LangChain run_id)."""

    __tablename__ = "spans"
    __table_args__ = (
        Index("ix_spans_trace_start", "trace_id", "start_time"),
        Index("ix_spans_start_time", "start_time"),
        Index("ix_spans_kind_start", "kind", "start_time"),
        Index("ix_spans_prompt_start", "prompt_name", "prompt_version", "start_time"),
        # Partial indexes for the analysis reads (TraceStore.traces / summary): the roots in
        # start order and each trace's LLM calls in start order. Each holds a fraction of the
        # spans, so the writer pays little for them; the constant leading column gives SQLite's
        # planner an equality to pick them by. On SQLite they also carry every column those
        # reads take, so the reads never touch the (wide) rows; PostgreSQL keeps them narrow
        # (its B-tree entries are limited to ~2.7 kB, which long multi-byte names could exceed).
        Index(
            # v2 (was ix_spans_root_start): also covers ``internal`` and ``prompt_name``.
            "ix_spans_roots",
            *("parent_span_id", "start_time", "trace_id", "name", "latency_ms", "status", "error_type"),
            *("prompt_name", "prompt_version", "session_id", "user_id", "internal"),
            sqlite_where=text("parent_span_id IS NULL"),
        ).ddl_if(dialect="sqlite"),
        Index(
            # v2 (was ix_spans_llm_trace): also covers ``prompt_name``.
            "ix_spans_llm_calls",
            *("kind", "trace_id", "start_time", "span_id", "ttft_ms", "prompt_name", "prompt_version"),
            *("model", "input_tokens", "output_tokens", "cost_usd"),
            sqlite_where=text("kind = 'llm'"),
        ).ddl_if(dialect="sqlite"),
        Index(
            "ix_spans_root_start_pg",
            "parent_span_id",
            "start_time",
            "trace_id",
            postgresql_where=text("parent_span_id IS NULL"),
        ).ddl_if(dialect="postgresql"),
        Index(
            "ix_spans_llm_trace_pg",
            *("kind", "trace_id", "start_time", "span_id"),
            postgresql_where=text("kind = 'llm'"),
        ).ddl_if(dialect="postgresql"),
        # The UI's slowest requests first (``queries.trace_page_query(sort="latency")``): a walk
        # of the roots in that order instead of reading and sorting every root row. SQLite's
        # covering ix_spans_roots already holds latency_ms (its sort reads no row).
        Index(
            "ix_spans_root_latency_pg",
            text("latency_ms DESC NULLS LAST"),
            text("start_time DESC"),
            "trace_id",
            postgresql_where=text("parent_span_id IS NULL"),
        ).ddl_if(dialect="postgresql"),
    )

    span_id: str = Field(primary_key=True, max_length=255)
    trace_id: str = Field(max_length=255)
    parent_span_id: str | None = Field(default=None, max_length=255)
    kind: str = Field(max_length=32)
    name: str = Field(max_length=255)
    framework: str = Field(max_length=32)
    status: str = Field(max_length=16)
    error_type: str | None = Field(default=None, max_length=255)
    error_message: str | None = _text()
    start_time: datetime
    end_time: datetime | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    # ``model`` is the grouping key (the requested model, else the response's without its date
    # snapshot), so a failed call and a successful one of one model share it; the two names as
    # the provider saw them are kept apart (OpenTelemetry's gen_ai.request/response.model).
    model: str | None = Field(default=None, max_length=255)
    request_model: str | None = Field(default=None, max_length=255)
    response_model: str | None = Field(default=None, max_length=255)
    provider: str | None = Field(default=None, max_length=64)
    prompt_name: str | None = Field(default=None, max_length=255)
    prompt_version: str | None = Field(default=None, max_length=255)
    # sha-256 of the template this span rendered (prompt runs and the LLM calls they fed).
    template_hash: str | None = Field(default=None, max_length=64)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    price_source: str | None = Field(default=None, max_length=255)
    session_id: str | None = Field(default=None, max_length=255, index=True)
    user_id: str | None = Field(default=None, max_length=255)
    service: str | None = Field(default=None, max_length=255)
    environment: str | None = Field(default=None, max_length=64)
    # True for work that is not a user's request: the judge's evaluations, index building and
    # ingestion, the library's own calls. Readers leave these traces out of "requests".
    internal: bool | None = None
    tags: list[str] | None = _json()
    attributes: dict[str, Any] | None = _json()
    input: str | None = _text()
    output: str | None = _text()


class RetrievedDocumentRow(SQLModel, table=True):
    """One document a retriever returned, in rank order (0 = first)."""

    __tablename__ = "retrieved_documents"

    span_id: str = Field(primary_key=True, max_length=255)
    rank: int = Field(primary_key=True)
    trace_id: str = Field(max_length=255, index=True)
    document_id: str | None = Field(default=None, max_length=255)
    score: float | None = None
    content: str | None = _text()
    attributes: dict[str, Any] | None = _json()


class ScoreRow(SQLModel, table=True):
    """A quality score: LLM-as-judge, user feedback or a rule."""

    __tablename__ = "scores"

    id: str = Field(primary_key=True, max_length=64)
    trace_id: str = Field(max_length=255, index=True)
    span_id: str | None = Field(default=None, max_length=255)
    name: str = Field(max_length=128)
    value: float | None = None
    label: str | None = Field(default=None, max_length=255)
    source: str = Field(max_length=32)
    comment: str | None = _text()
    judge_model: str | None = Field(default=None, max_length=255)
    cost_usd: float | None = None
    created_at: datetime = Field(default_factory=_utcnow, index=True)
    # Who gave a user score; one current score per (trace, user, name): a changed rating sets
    # ``superseded_at`` on the earlier row (kept as history, never counted).
    user_id: str | None = Field(default=None, max_length=255)
    superseded_at: datetime | None = None


class PromptVersionRow(SQLModel, table=True):
    """Every distinct template seen under each (prompt_name, prompt_version).

    Keyed by the template's hash: a declared version whose template was edited gets a second
    row (and a ``prompt_drift`` anomaly); ``template_hash = ''`` is a version declared in
    metadata whose template was never seen.
    """

    __tablename__ = "prompt_versions"

    prompt_name: str = Field(primary_key=True, max_length=255)
    prompt_version: str = Field(primary_key=True, max_length=255)
    template_hash: str = Field(default="", primary_key=True, max_length=64)
    template: str | None = _text()
    first_seen: datetime
    last_seen: datetime


class BranchDecisionRow(SQLModel, table=True):
    """One routing decision in a LangGraph graph: from a node to the node it chose."""

    __tablename__ = "branch_decisions"
    __table_args__ = (Index("ix_branch_decisions_graph_created", "graph", "created_at"),)

    id: str = Field(primary_key=True, max_length=64)
    trace_id: str = Field(max_length=255, index=True)
    span_id: str = Field(max_length=255)
    graph: str = Field(max_length=255)
    from_node: str = Field(max_length=255)
    to_node: str = Field(max_length=255)
    condition: str | None = Field(default=None, max_length=255)
    created_at: datetime


class SchemaVersionRow(SQLModel, table=True):
    """One row: the schema version this database is at."""

    __tablename__ = "llmobs_schema"

    id: int = Field(default=1, primary_key=True)
    version: int
    updated_at: datetime = Field(default_factory=_utcnow)


TABLES = [
    SpanRow.__table__,
    RetrievedDocumentRow.__table__,
    ScoreRow.__table__,
    PromptVersionRow.__table__,
    BranchDecisionRow.__table__,
    SchemaVersionRow.__table__,
]
