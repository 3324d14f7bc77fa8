"""The reads behind the session page: a session's turns, the text of their messages. No function
here writes."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..analysis.queries import (
    SCORES,
    current_score,
)
from ..analysis.store import TraceStore
from .data import as_datetime
from .overview_data import as_number, read_rows

_INPUT_KEYS = ("question", "input", "query", "query_str", "message", "prompt", "text", "content")
_OUTPUT_KEYS = ("answer", "output", "response", "result", "text", "content", "generation")


def _from_messages(items: list[Any], want_human: bool) -> str | None:
    """The last human (or AI) message's content of a chat message list."""
    picked = None
    for m in items:
        if not isinstance(m, dict):
            continue
        role = str(m.get("role") or m.get("type") or "").lower()
        human = role in ("human", "user")
        ai = role in ("ai", "assistant")
        if (want_human and human) or (not want_human and ai):
            picked = m.get("content")
    return None if picked is None else str(picked)


def message_text(raw: Any, keys: tuple[str, ...], want_human: bool) -> str | None:
    """What a person would read from a stored input or output: the question (or answer) field
    of a JSON object, the last human (or AI) message of a message list, else the text as is.
    None when the content was not captured."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    text = str(raw)
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return text
    for _ in range(3):  # {"input": {"messages": [...]}} and the like
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            found = _from_messages(value, want_human)
            return found if found is not None else text
        if not isinstance(value, dict):
            return text
        if isinstance(value.get("messages"), list):
            found = _from_messages(value["messages"], want_human)
            if found is not None:
                return found
        nested = next((value[k] for k in keys if k in value and value[k] not in (None, "")), None)
        if nested is None:
            return text
        value = nested
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@dataclass
class Turn:
    trace_id: str
    start_time: datetime | None
    question: str | None
    answer: str | None
    latency_ms: float | None
    cost_usd: float | None
    tokens: int
    status: str
    error_type: str | None
    prompt_version: str | None
    feedback: list[tuple[float, str | None]]  # (value, comment) of current user scores


def session_turns(store: TraceStore, session_id: str) -> list[Turn]:
    """A conversation turn by turn (``TraceStore.session``) with each turn's user feedback."""
    frame = store.session(session_id)
    if frame.empty:
        return []
    ids = [str(v) for v in frame["trace_id"]]
    c = SCORES.c
    feedback: dict[str, list[tuple[float, str | None]]] = defaultdict(list)
    query = (
        sa.select(c.trace_id, c.value, c.comment)
        .where(c.trace_id.in_(ids), c.source == "user", current_score(), c.value.is_not(None))
        .order_by(c.created_at)
    )
    for r in read_rows(store, query):
        feedback[str(r.trace_id)].append((float(r.value), r.comment))
    turns = []
    for row in frame.to_dict("records"):
        tid = str(row["trace_id"])
        turns.append(
            Turn(
                trace_id=tid,
                start_time=as_datetime(row.get("start_time")),
                question=message_text(row.get("input"), _INPUT_KEYS, want_human=True),
                answer=message_text(row.get("output"), _OUTPUT_KEYS, want_human=False),
                latency_ms=as_number(row.get("latency_ms")),
                cost_usd=as_number(row.get("cost_usd")),
                tokens=int(row.get("tokens") or 0),
                status=str(row.get("status")),
                error_type=None if _num_or_none(row.get("error_type")) is None else str(row["error_type"]),
                prompt_version=None
                if _num_or_none(row.get("prompt_version")) is None
                else str(row["prompt_version"]),
                feedback=feedback.get(tid, []),
            )
        )
    return turns


def _num_or_none(value: Any) -> Any:
    """None for a missing value (None or NaN), else the value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value
