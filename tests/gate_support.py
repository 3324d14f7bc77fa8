"""Requests of realistic shape written straight into the store for the release-gate tests: one
root span (the request) with one LLM call under it per request, as the handler writes them, so a
study over many seeded samples takes seconds, not minutes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import sqlalchemy as sa

from llmobs_callbacks.sinks.schema import ensure_schema, make_engine
from llmobs_callbacks.sinks.tables import ScoreRow, SpanRow

T0 = datetime(2025, 3, 3, tzinfo=timezone.utc)
PRICE_PER_TOKEN = 2e-6  # USD


@dataclass
class Requests:
    """Per-request values of one version (arrays of one length)."""

    version: str
    latency_ms: Sequence[float]
    tokens: Sequence[float]
    cost_usd: Sequence[float | None] | None = None  # None: tokens × PRICE_PER_TOKEN
    errors: Sequence[bool] | None = None
    model: str = "gpt-4o-mini"
    input_ids: Sequence[str] | None = None  # written as metadata input_id of the root
    inputs: Sequence[str] | None = None  # the root's input text
    scores: dict[str, Sequence[float | None]] | None = None  # name -> value per request
    internal: bool = False
    start: datetime | None = None  # the first request's start (default: after the previous side)


def write(url: str, *sides: Requests, start: datetime = T0) -> dict[str, list[str]]:
    """Write each side's requests a second apart, from the side's ``start`` (else after the
    previous side), in one transaction; returns the trace ids per version."""
    spans, scores, ids = [], [], {}
    moment = start
    for side in sides:
        moment = side.start or moment
        n = len(side.latency_ms)
        costs = side.cost_usd if side.cost_usd is not None else [t * PRICE_PER_TOKEN for t in side.tokens]
        errors = side.errors if side.errors is not None else [False] * n
        trace_ids = ids.setdefault(side.version, [])
        for i in range(n):
            trace_id = str(uuid.uuid4())
            trace_ids.append(trace_id)
            latency = float(side.latency_ms[i])
            end = moment + timedelta(milliseconds=latency)
            status = "error" if errors[i] else "ok"
            attributes = {"prompt_name": "support", "prompt_version": side.version}
            if side.input_ids is not None:
                attributes["input_id"] = side.input_ids[i]
            tokens = int(side.tokens[i])
            common = dict(
                trace_id=trace_id,
                framework="langchain",
                prompt_name="support",
                prompt_version=side.version,
                service="svc",
                internal=side.internal,
            )
            spans.append(
                dict(
                    common,
                    span_id=trace_id,
                    parent_span_id=None,
                    kind="chain",
                    name="support",
                    status=status,
                    error_type="ValueError" if errors[i] else None,
                    start_time=moment,
                    end_time=end,
                    latency_ms=latency,
                    attributes=attributes,
                    input=side.inputs[i] if side.inputs is not None else None,
                )
            )
            spans.append(
                dict(
                    common,
                    span_id=str(uuid.uuid4()),
                    parent_span_id=trace_id,
                    kind="llm",
                    name="ChatOpenAI",
                    status="ok",
                    start_time=moment + timedelta(milliseconds=1),
                    end_time=end,
                    latency_ms=max(latency - 2, 0.0),
                    model=side.model,
                    request_model=side.model,
                    provider="openai",
                    input_tokens=int(tokens * 0.8),
                    output_tokens=tokens - int(tokens * 0.8),
                    total_tokens=tokens,
                    cost_usd=None if costs[i] is None else float(costs[i]),
                )
            )
            for name, values in (side.scores or {}).items():
                if values[i] is not None:
                    scores.append(
                        dict(
                            id=str(uuid.uuid4()),
                            trace_id=trace_id,
                            name=name,
                            value=float(values[i]),
                            source="judge",
                            created_at=end,
                        )
                    )
            moment += timedelta(seconds=1)
    # one key set for every row (an executemany needs it): the columns not given are NULL
    columns = [c.name for c in SpanRow.__table__.columns]
    spans = [{name: span.get(name) for name in columns} for span in spans]
    engine = make_engine(url)
    try:
        ensure_schema(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(SpanRow.__table__), spans)
            if scores:
                conn.execute(sa.insert(ScoreRow.__table__), scores)
    finally:
        engine.dispose()
    return ids


# -- shapes of realistic traffic ---------------------------------------------------------------


def lognormal_latency(rng: np.random.Generator, n: int, sigma: float, scale: float = 1.0) -> np.ndarray:
    return rng.lognormal(np.log(1500.0), sigma, n) * scale


def gamma_tokens(rng: np.random.Generator, n: int, shape: float, scale: float = 1.0) -> np.ndarray:
    return np.maximum(np.round(rng.gamma(shape, 1200.0 / shape, n) * scale), 1)
