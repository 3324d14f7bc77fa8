"""The SQL exporter: prepared spans in, rows out, one transaction per batch.

Spans, documents and branch decisions are inserted with ``ON CONFLICT DO NOTHING`` on their
primary keys, so replaying a batch is harmless; prompt versions are upserted so ``first_seen``
/ ``last_seen`` stay true whichever process saw them first. User scores keep one current row
per (trace, user, name): the earlier ones get ``superseded_at`` (``_write_scores``).
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..model import SpanKind, SpanRecord
from ..scores import SOURCE_USER
from .bulk import BulkInserter
from .schema import ensure_schema, make_engine
from .tables import BranchDecisionRow, PromptVersionRow, RetrievedDocumentRow, ScoreRow, SpanRow

_SPANS = SpanRow.__table__
_DOCS = RetrievedDocumentRow.__table__
_PROMPTS = PromptVersionRow.__table__
_BRANCHES = BranchDecisionRow.__table__
_SCORES = ScoreRow.__table__
_BRANCH_NAMESPACE = uuid.UUID("5b1e4c1e-8a59-4c43-9f0e-0d3c7f1c2a10")
# 6 columns × 4,096 rows stays under SQLite's (32,766) and PostgreSQL's (65,535) parameter limits.
_PROMPT_ROWS_PER_STATEMENT = 4096


def _bound_tcp(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    """A PostgreSQL host that vanishes (a network partition: nothing is acknowledged) fails a
    connection within seconds instead of TCP's ~15 minutes of retransmissions (libpq's
    ``tcp_user_timeout``, milliseconds, and keepalives); the URL's own settings win."""
    cparams.setdefault("tcp_user_timeout", 5000)
    cparams.setdefault("keepalives", 1)
    cparams.setdefault("keepalives_idle", 10)
    cparams.setdefault("keepalives_interval", 2)
    cparams.setdefault("keepalives_count", 3)


def _utc(ns: int | None) -> datetime | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


class SQLExporter:
    def __init__(
        self,
        url_or_engine: str | Engine,
        *,
        service: str | None = None,
        environment: str | None = None,
        create_schema: bool = True,
    ) -> None:
        """``create_schema=False`` defers ``ensure_schema`` to the caller (``sinks.durable``
        calls it once the database answers)."""
        self.engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self._service = service
        self._environment = environment
        if create_schema:
            ensure_schema(self.engine)
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:  # pragma: no cover - other databases get plain inserts
            dialect_insert = None
        self._insert = dialect_insert
        if dialect == "postgresql" and self.engine.dialect.driver in ("psycopg", "psycopg2"):
            sa.event.listen(self.engine, "do_connect", _bound_tcp)
        self._spans = BulkInserter(self.engine, _SPANS, ["span_id"])
        self._docs = BulkInserter(self.engine, _DOCS, ["span_id", "rank"])
        self._branches = BulkInserter(self.engine, _BRANCHES, ["id"])
        self._scores = BulkInserter(self.engine, _SCORES, ["id"])

    def export(self, spans: Sequence[SpanRecord]) -> None:
        self.write_rows(self.batch_rows(spans))

    def batch_rows(self, spans: Sequence[SpanRecord]) -> dict[str, list[dict[str, Any]]]:
        """The rows a batch of prepared spans becomes, by table (what ``write_rows`` stores;
        ``sinks.durable`` spools exactly these while the database is unreachable)."""
        span_rows = [self._span_row(s) for s in spans]
        doc_rows = [
            {
                "span_id": s.span_id,
                "rank": d.rank,
                "trace_id": s.trace_id,
                "document_id": d.document_id,
                "score": d.score,
                "content": d.content,
                "attributes": d.metadata,
            }
            for s in spans
            for d in s.documents or ()
        ]
        branch_rows = [
            {
                # Deterministic id: a replayed batch maps onto the same rows.
                "id": str(
                    uuid.uuid5(_BRANCH_NAMESPACE, f"{s.span_id}|{b.span_id}|{b.from_node}|{b.to_node}")
                ),
                "trace_id": s.trace_id,
                "span_id": b.span_id,
                "graph": b.graph,
                "from_node": b.from_node,
                "to_node": b.to_node,
                "condition": b.condition,
                "created_at": _utc(s.end_ns),
            }
            for s in spans
            for b in s.branch_decisions or ()
        ]
        return {
            "spans": span_rows,
            "retrieved_documents": doc_rows,
            "branch_decisions": branch_rows,
            "prompt_versions": _prompt_version_rows(spans),
        }

    def write_rows(self, rows: dict[str, list[dict[str, Any]]], timeout_s: float | None = None) -> None:
        """Store one batch's rows in one transaction; idempotent (a replay adds nothing).

        ``timeout_s`` bounds the wait for a lock (SQLite's busy timeout, PostgreSQL's
        ``lock_timeout``; PostgreSQL's ``statement_timeout`` is 4× it, at least 1 s): the durable
        writer turns a locked or stuck store into a quick failure and spools, never a stall."""
        with self.engine.begin() as conn:
            if timeout_s is not None:
                self._bound_waits(conn, timeout_s)
            self._spans.insert(conn, rows.get("spans", ()))
            self._docs.insert(conn, rows.get("retrieved_documents", ()))
            self._branches.insert(conn, rows.get("branch_decisions", ()))
            self._upsert_prompt_versions(conn, rows.get("prompt_versions", ()))
            self._write_scores(conn, rows.get("scores", ()))  # spooled scores (sinks/durable.py)

    def _bound_waits(self, conn: Connection, timeout_s: float) -> None:
        """Apply the write deadline to this transaction's connection."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            # Once per pooled connection, not per batch: each statement releases the GIL, and
            # getting it back beside a busy app thread costs up to 5 ms (see sinks/bulk.py).
            # Readers sharing the pool wait this long too; in WAL mode they rarely wait at all.
            info = conn.connection.info  # lives as long as the DBAPI connection
            if info.get("llmobs_busy_timeout_s") != timeout_s:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={max(1, int(timeout_s * 1000))}")
                info["llmobs_busy_timeout_s"] = timeout_s
        elif dialect == "postgresql":
            lock_ms = max(1, int(timeout_s * 1000))
            statement_ms = max(1000, 4 * lock_ms)
            # Local to this transaction (is_local=true), one round trip.
            conn.exec_driver_sql(
                f"SELECT set_config('lock_timeout', '{lock_ms}', true), "
                f"set_config('statement_timeout', '{statement_ms}', true)"
            )

    def _upsert_prompt_versions(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """One multi-row ``INSERT … ON CONFLICT DO UPDATE`` per batch (rows are distinct keys,
        which PostgreSQL requires of one statement), chunked only past the bound-parameter
        limit: thousands of versions in a batch cost one statement, not thousands."""
        if not rows:
            return
        if self._insert is None:  # pragma: no cover - other databases: plain inserts
            conn.execute(sa.insert(_PROMPTS), list(rows))
            return
        for i in range(0, len(rows), _PROMPT_ROWS_PER_STATEMENT):
            conn.execute(self._upsert_prompt_version(list(rows[i : i + _PROMPT_ROWS_PER_STATEMENT])))

    def shutdown(self) -> None:
        self.engine.dispose()

    # -- scores (judge, feedback, rules; written by ``scores.ScoreWriter``, not the span path) --

    def insert_scores(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``scores`` rows; a row whose ``id`` exists is left alone (idempotent)."""
        if rows:
            with self.engine.begin() as conn:
                self._write_scores(conn, rows)

    def _write_scores(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert, then keep one current user score per (trace, user, name), in the caller's
        transaction: the newest row (``created_at``, then ``id``) has ``superseded_at`` NULL,
        each older one the ``created_at`` of the row after it. Computed from every stored row
        of the key, so rows arriving out of order (a spool replay) end up right too."""
        if not rows:
            return
        keys = _user_score_keys(rows)
        if keys and self.engine.dialect.name == "postgresql":
            # Two writers rating the same key at once: the second waits for the first's commit,
            # so its read below sees the first's row. Sorted: no lock-order deadlock.
            for key in sorted(keys):
                conn.execute(_ADVISORY_LOCK, {"key": _lock_key(key)})
        self._scores.insert(conn, rows)
        if keys:
            _supersede(conn, keys)

    def known_traces(self, trace_ids: Sequence[str]) -> dict[str, str | None]:
        """The stored traces among ``trace_ids``, each with its root's prompt_version."""
        found: dict[str, str | None] = {}
        ids = sorted(set(trace_ids))
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                query = sa.select(_SPANS.c.trace_id, _SPANS.c.prompt_version, _SPANS.c.parent_span_id).where(
                    _SPANS.c.trace_id.in_(ids[i : i + 500])
                )
                for trace_id, version, parent in conn.execute(query):
                    if parent is None or found.get(trace_id) is None:
                        found[trace_id] = version
        return found

    def _span_row(self, s: SpanRecord) -> dict[str, Any]:
        u = s.usage
        # Metadata keys at the top level (``attributes->>'team'`` in SQL), the model's
        # invocation parameters under one key so they cannot collide with them.
        attributes: dict[str, Any] = dict(s.metadata) if s.metadata else {}
        if s.invocation_params:
            attributes["invocation_params"] = s.invocation_params
        if s.price_context:
            attributes["price_context"] = s.price_context
        return {
            "span_id": s.span_id,
            "trace_id": s.trace_id,
            "parent_span_id": s.parent_span_id,
            "kind": s.kind,
            "name": s.name[:255],
            "framework": s.framework,
            "status": s.status,
            "error_type": s.error_type,
            "error_message": s.error_message,
            "start_time": _utc(s.start_ns),
            "end_time": _utc(s.end_ns),
            "latency_ms": s.latency_ms,
            "ttft_ms": s.ttft_ms,
            "model": s.model,
            "request_model": s.request_model,
            "response_model": s.response_model,
            "provider": s.provider,
            "prompt_name": s.prompt_name,
            "prompt_version": s.prompt_version,
            "template_hash": s.prompt_template.template_hash if s.prompt_template is not None else None,
            "input_tokens": u.input_tokens if u else None,
            "output_tokens": u.output_tokens if u else None,
            "cached_input_tokens": u.cached_input_tokens if u else None,
            "cache_write_tokens": u.cache_write_tokens if u else None,
            "reasoning_tokens": u.reasoning_tokens if u else None,
            "total_tokens": u.total_tokens if u else None,
            "cost_usd": s.cost_usd,
            "price_source": s.price_source,
            "session_id": s.session_id,
            "user_id": s.user_id,
            "service": self._service,
            "environment": self._environment,
            "internal": True if s.internal else None,
            "tags": s.tags or None,
            "attributes": attributes or None,
            "input": s.input,
            "output": s.output,
        }

    def _upsert_prompt_version(self, rows: list[dict[str, Any]]) -> Any:
        assert self._insert is not None
        stmt = self._insert(_PROMPTS).values(rows)
        excluded = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=["prompt_name", "prompt_version", "template_hash"],
            set_={
                "template": sa.func.coalesce(_PROMPTS.c.template, excluded.template),
                "first_seen": sa.case(
                    (excluded.first_seen < _PROMPTS.c.first_seen, excluded.first_seen),
                    else_=_PROMPTS.c.first_seen,
                ),
                "last_seen": sa.case(
                    (excluded.last_seen > _PROMPTS.c.last_seen, excluded.last_seen),
                    else_=_PROMPTS.c.last_seen,
                ),
            },
        )


# -- user scores: one current per (trace, user, name) --------------------------------------------

_ADVISORY_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")
_LOCK_NAMESPACE = b"llmobs-user-score|"

ScoreKey = tuple[str, str, str]  # trace_id, user_id, name


def _user_score_keys(rows: Sequence[dict[str, Any]]) -> set[ScoreKey]:
    return {
        (r["trace_id"], r["user_id"], r["name"])
        for r in rows
        if r.get("user_id") is not None and r.get("source") == SOURCE_USER
    }


def _lock_key(key: ScoreKey) -> int:
    """A signed 64-bit advisory lock id for one key (stable across processes)."""
    digest = hashlib.sha256(_LOCK_NAMESPACE + "\x1f".join(key).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _supersede(conn: Connection, keys: set[ScoreKey]) -> None:
    c = _SCORES.c
    history: dict[ScoreKey, list[Any]] = defaultdict(list)
    trace_ids = sorted({k[0] for k in keys})
    for i in range(0, len(trace_ids), 500):
        query = sa.select(c.trace_id, c.user_id, c.name, c.created_at, c.id, c.superseded_at).where(
            c.trace_id.in_(trace_ids[i : i + 500]), c.source == SOURCE_USER, c.user_id.is_not(None)
        )
        for row in conn.execute(query):
            key = (row.trace_id, row.user_id, row.name)
            if key in keys:
                history[key].append(row)
    updates: list[dict[str, Any]] = []
    for rows in history.values():
        rows.sort(key=lambda r: (r.created_at, r.id))
        for older, newer in itertools.pairwise(rows):
            if older.superseded_at != newer.created_at:
                updates.append({"score_id": older.id, "until": newer.created_at})
        if rows[-1].superseded_at is not None:  # the row that superseded it is gone (deleted)
            updates.append({"score_id": rows[-1].id, "until": None})
    if updates:
        conn.execute(
            sa.update(_SCORES)
            .where(c.id == sa.bindparam("score_id"))
            .values(superseded_at=sa.bindparam("until")),
            updates,
        )


def _prompt_version_rows(spans: Sequence[SpanRecord]) -> list[dict[str, Any]]:
    """One row per distinct (name, version, template hash) in the batch, sorted (stable lock
    order in PG). A span that rendered a template (or an LLM call a template fed) lists it; an
    LLM call under a version that no seen template fed lists ``template_hash = ''``. Other spans
    (the root, chains) list nothing: their version's templates are listed by the spans that
    used them, so a declared version whose template is seen has no misleading '' row."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for s in spans:
        if not s.prompt_version:
            continue
        t = s.prompt_template
        digest = t.template_hash if t is not None else None
        if not digest and s.kind != SpanKind.LLM:
            continue
        key = (s.prompt_name or "", s.prompt_version, digest or "")
        seen = _utc(s.start_ns)
        row = rows.get(key)
        if row is None:
            rows[key] = {
                "prompt_name": key[0],
                "prompt_version": key[1],
                "template_hash": key[2],
                "template": t.template if digest else None,  # type: ignore[union-attr]
                "first_seen": seen,
                "last_seen": seen,
            }
        else:
            row["first_seen"] = min(row["first_seen"], seen)
            row["last_seen"] = max(row["last_seen"], seen)
    return [rows[k] for k in sorted(rows)]
