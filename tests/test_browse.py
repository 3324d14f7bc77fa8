"""Browsing the store: pages of requests with filters, search and sorting, trace-id prefixes,
sessions and a session's turns (what ``llmobs traces`` / ``sessions`` and the UI read)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from langchain_core.runnables import RunnableLambda
from lc_fakes import ai, chat

from llmobs_callbacks import LLMObs
from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.analysis.queries import TraceFilter

pytest.importorskip("pandas")

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc)
PRICES = {"m-small": {"input": 1.0, "output": 2.0}, "m-big": {"input": 10.0, "output": 20.0}}


class Clock:
    def __init__(self) -> None:
        self.ns = int(T0.timestamp() * 1e9)

    def __call__(self) -> int:
        now = self.ns
        self.ns += 1_000_000  # 1 ms per reading: every span has a latency
        return now


@pytest.fixture
def store(db_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Six requests in two sessions, two models, one failure, known texts and costs."""
    clock = Clock()
    obs = LLMObs(db_url, prometheus_registry=None, price_overrides=PRICES, clock=clock)
    ids: dict[str, str] = {}
    plan = [
        # name, session, user, model, question, tokens in/out, fails
        ("t1", "s-a", "u-1", "m-small", "How long do refunds take?", (100, 10), False),
        ("t2", "s-a", "u-1", "m-small", "And for EXPRESS shipping?", (200, 20), False),
        ("t3", "s-b", "u-2", "m-big", "Where is my order 42?", (300, 30), False),
        ("t4", "s-b", "u-2", "m-big", "Cancel order 42 please", (50, 5), True),
        ("t5", None, "u-3", "m-small", "What is 100% cotton?", (10, 1), False),
        ("t6", "s-a", "u-1", "m-small", "Thanks, bye", (20, 2), False),
    ]
    for i, (key, session, user, model, question, (tin, tout), fails) in enumerate(plan):
        clock.ns = int((T0 + timedelta(minutes=10 * i)).timestamp() * 1e9)
        llm = chat(ai(f"answer to {key}", tin, tout), model_name=model)

        def handle(q: str, _llm=llm, _fails=fails) -> str:
            answer = _llm.invoke(q).content
            if _fails:
                raise RuntimeError("order service unavailable")
            return answer

        # t1 and t2 share the prefix "ab": an ambiguous prefix is known in advance
        run_id = uuid.UUID(f"{'ab' if i < 2 else f'c{i}'}{i:06d}-0000-4000-8000-{uuid.uuid4().hex[:12]}")
        metadata = {"prompt_version": "v1" if i < 3 else "v2", "user_id": user}
        if session:
            metadata["session_id"] = session
        with contextlib.suppress(RuntimeError):
            RunnableLambda(handle, name="support").invoke(
                question,
                config={"callbacks": [obs.langchain_handler()], "run_id": run_id, "metadata": metadata},
            )
        ids[key] = str(run_id)
    obs.feedback(ids["t1"], 0.0, user_id="u-1")
    obs.feedback(ids["t1"], 1.0, user_id="u-1")  # a changed mind: only the 👍 counts
    obs.feedback(ids["t3"], 0.0, user_id="u-2")
    assert obs.flush()
    obs.shutdown()
    yield db_url, ids


def _keys(frame, ids: dict[str, str]) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[t] for t in frame["trace_id"]]


def test_pages_newest_first_with_filters(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    with TraceStore(url) as ts:
        assert _keys(ts.find_traces(), ids) == ["t6", "t5", "t4", "t3", "t2", "t1"]
        assert _keys(ts.find_traces(limit=2), ids) == ["t6", "t5"]
        assert _keys(ts.find_traces(limit=2, offset=2), ids) == ["t4", "t3"]
        assert _keys(ts.find_traces(prompt_version="v1"), ids) == ["t3", "t2", "t1"]
        assert _keys(ts.find_traces(model="m-big"), ids) == ["t4", "t3"]
        assert _keys(ts.find_traces(status="error"), ids) == ["t4"]
        assert _keys(ts.find_traces(session_id="s-a"), ids) == ["t6", "t2", "t1"]
        assert _keys(ts.find_traces(user_id="u-2"), ids) == ["t4", "t3"]
        assert _keys(
            ts.find_traces(since=T0 + timedelta(minutes=15), until=T0 + timedelta(minutes=35)), ids
        ) == [
            "t4",
            "t3",
        ]
        # costs: m-small $1/$2 per 1M, m-big $10/$20 per 1M
        assert _keys(ts.find_traces(min_cost=300 * 10e-6), ids) == ["t3"]
        assert _keys(ts.find_traces(TraceFilter(model="m-small"), sort="cost"), ids) == [
            "t2",
            "t1",
            "t6",
            "t5",
        ]
        assert _keys(ts.find_traces(sort="tokens", descending=False), ids)[:2] == ["t5", "t6"]
        row = ts.find_traces(prompt_version="v1", limit=1).iloc[0]
        assert row["cost_usd"] == pytest.approx((300 * 10 + 30 * 20) / 1e6)
        assert (row["tokens"], row["session_id"], row["user_id"]) == (330, "s-b", "u-2")
        with pytest.raises(ValueError, match="sort must be one of"):
            ts.find_traces(sort="price")


def test_search_finds_text_in_inputs_outputs_and_errors(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    with TraceStore(url) as ts:
        assert _keys(ts.find_traces(search="express"), ids) == ["t2"]  # case-insensitive
        assert _keys(ts.find_traces(search="answer to t3"), ids) == ["t3"]  # an LLM's output
        assert _keys(ts.find_traces(search="service unavailable"), ids) == ["t4"]  # an error
        assert _keys(ts.find_traces(search="order 42"), ids) == ["t4", "t3"]
        assert _keys(ts.find_traces(search="100%"), ids) == ["t5"]  # % is a character, not a wildcard
        assert _keys(ts.find_traces(search="1_0"), ids) == []
        assert _keys(ts.find_traces(search="order", status="ok"), ids) == ["t3"]


def test_trace_id_prefixes(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    with TraceStore(url) as ts:
        full = ids["t3"]
        assert ts.resolve_trace_id(full) == full
        assert ts.resolve_trace_id(full[:12]) == full
        with pytest.raises(KeyError, match="no trace id starts with 'zzz'"):
            ts.resolve_trace_id("zzz")
        with pytest.raises(ValueError, match=f"prefix 'ab' is ambiguous: {ids['t1']}, {ids['t2']}"):
            ts.resolve_trace_id("ab")
        assert ts.resolve_trace_id("ab000001") == ids["t2"]
        assert ts.trace(ts.resolve_trace_id(full[:8])).root.span["trace_id"] == full


def test_sessions_and_a_conversation_turn_by_turn(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    with TraceStore(url) as ts:
        sessions = ts.sessions()
        assert list(sessions["session_id"]) == ["s-a", "s-b"]  # most recently active first
        a, b = sessions.to_dict("records")
        assert (a["requests"], a["errors"], a["user_id"], a["tokens"]) == (3, 0, "u-1", 110 + 220 + 22)
        assert a["first_seen"] == T0 and a["last_seen"] == T0 + timedelta(minutes=50)
        assert (a["feedback"], a["feedback_count"]) == (1.0, 1)  # the superseded 👎 does not count
        assert (b["requests"], b["errors"], b["feedback"], b["feedback_count"]) == (2, 1, 0.0, 1)
        assert a["cost_usd"] == pytest.approx((100 + 200 + 20) * 1e-6 + (10 + 20 + 2) * 2e-6)
        assert list(ts.sessions(user_id="u-2")["session_id"]) == ["s-b"]
        assert list(ts.sessions(since=T0 + timedelta(minutes=45))["session_id"]) == ["s-a"]

        turns = ts.session("s-a")
        assert _keys(turns, ids) == ["t1", "t2", "t6"]  # oldest first
        assert list(turns["input"]) == [
            "How long do refunds take?",
            "And for EXPRESS shipping?",
            "Thanks, bye",
        ]
        assert turns["output"].iloc[0] == "answer to t1"
        assert turns["score_user_feedback"].iloc[0] == 1.0
        assert ts.session("nope").empty
