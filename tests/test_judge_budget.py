"""The judge's daily budget is read from the store: restarts and worker processes share one cap;
an unpriced judge model is limited by calls instead (and says so once)."""

from __future__ import annotations

import logging
import sqlite3
import uuid

import pytest
import sqlalchemy as sa
from conftest import fetch
from judge_fakes import JUDGE_PRICES, scripted

from llmobs_callbacks import Judge, LLMObs
from llmobs_callbacks.judge import DEFAULT_UNPRICED_CALLS_PER_DAY


def _obs(url: str, *, priced: bool = True, service: str | None = None, **budget: object) -> LLMObs:
    # budget_refresh_s=0: every call reads the store (the default is every 5 s at most)
    judge = Judge(scripted(), sample_rate=1.0, workers=1, budget_refresh_s=0, **budget)
    return LLMObs(
        url,
        judge=judge,
        service=service,
        price_overrides=JUDGE_PRICES if priced else None,
        prometheus_registry=None,
    )


def _judge_one(obs: LLMObs) -> None:
    trace_id = str(uuid.uuid4())
    obs.recorder.start(trace_id, None, "chain", "app", "manual", input="question")
    obs.recorder.end(trace_id, output="answer")
    assert obs.flush()


def _counts(obs: LLMObs) -> dict[str, int]:
    assert obs.judge is not None
    return dict(obs.judge.counts)


def test_two_processes_and_a_restart_share_one_daily_cap(db_url: str) -> None:
    # 0.2 USD per evaluation (judge_fakes.JUDGE_PRICES), 0.5 USD per day
    a, b = _obs(db_url, budget_usd_per_day=0.5), _obs(db_url, budget_usd_per_day=0.5)
    try:
        for obs in (a, b, a, b):  # 0.2, 0.4, 0.6 spent; then the cap is reached for both
            _judge_one(obs)
        assert _counts(a) == {"ok": 2}
        assert _counts(b) == {"ok": 1, "budget_exhausted": 1}  # alone, b would have judged both
        assert b.judge is not None and b.judge.budget.spent_today() == pytest.approx(0.6)
    finally:
        a.shutdown()
        b.shutdown()
    with _obs(db_url, budget_usd_per_day=0.5) as restarted:
        _judge_one(restarted)
        assert _counts(restarted) == {"budget_exhausted": 1}
    with _obs(db_url, budget_usd_per_day=0.5, service="other-service") as other:
        _judge_one(other)  # another service on the same store keeps its own cap
        assert _counts(other) == {"ok": 1}
    spans = fetch(db_url, "spans", kind="judge")
    assert len(spans) == 4 and sum(s["cost_usd"] for s in spans) == pytest.approx(0.8)


def test_unpriced_judge_warns_once_and_stops_at_the_call_cap(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llmobs_callbacks")
    with _obs(db_url, priced=False, budget_usd_per_day=1.0, max_calls_per_day=2) as obs:
        for _ in range(3):
            _judge_one(obs)
        assert _counts(obs) == {"ok": 2, "budget_exhausted": 1}
        stats = obs.stats()
        assert stats["judge"]["unpriced_calls"] == 2 and stats["judge"]["calls_today"] == 2
        assert stats["events"]["judge_unpriced_calls"] == 2
    warnings = [r.getMessage() for r in caplog.records if "cannot bind" in r.getMessage()]
    assert warnings == [
        "llmobs judge: no price for judge model 'judge-model', so budget_usd_per_day=1.0 cannot bind; "
        "judge calls are limited to 2 per day instead (set Judge(max_calls_per_day=...), "
        "or price it with LLMObs(price_overrides=...))"
    ]
    assert [s["cost_usd"] for s in fetch(db_url, "spans", kind="judge")] == [None, None]
    with _obs(db_url, priced=False, budget_usd_per_day=1.0, max_calls_per_day=2) as restarted:
        _judge_one(restarted)  # the stored calls count: nothing left today
        assert _counts(restarted) == {"budget_exhausted": 1}


def test_an_unpriced_model_with_only_a_usd_budget_gets_the_default_call_cap(sqlite_url: str) -> None:
    with _obs(sqlite_url, priced=False, budget_usd_per_day=1.0) as obs:
        assert obs.judge is not None
        budget = obs.judge.budget
        assert budget.call_cap is None  # not known to be unpriced yet
        _judge_one(obs)
        assert budget.call_cap == DEFAULT_UNPRICED_CALLS_PER_DAY == 1000
    with _obs(sqlite_url, budget_usd_per_day=1.0) as priced:
        _judge_one(priced)
        assert priced.judge is not None and priced.judge.budget.call_cap is None


def test_calls_not_stored_yet_count_from_memory_and_once_stored_once(sqlite_url: str, tmp_path) -> None:
    judge = Judge(scripted(), sample_rate=1.0, workers=1, budget_refresh_s=0, budget_usd_per_day=0.3)
    obs = LLMObs(
        sqlite_url,
        judge=judge,
        price_overrides=JUDGE_PRICES,
        prometheus_registry=None,
        spool_dir=tmp_path / "spool",
        database_timeout_s=0.5,
    )
    engine = obs.sql.engine

    def refuse(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("unable to open database file (test outage)")

    sa.event.listen(engine, "do_connect", refuse)  # the store is down: judge spans are spooled
    engine.dispose()
    try:
        for _ in range(3):
            trace_id = str(uuid.uuid4())
            obs.recorder.start(trace_id, None, "chain", "app", "manual", input="question")
            obs.recorder.end(trace_id, output="answer")
            assert obs.flush(timeout=1.0) is False
        assert dict(judge.counts) == {"ok": 2, "budget_exhausted": 1}  # 0.2 + 0.2, from memory
        assert fetch(sqlite_url, "spans", kind="judge") == []
        sa.event.remove(engine, "do_connect", refuse)
        engine.dispose()
        assert obs.flush(timeout=30)  # replayed
        judge.budget.refresh(force=True)  # the stored spans replace the memory of them
        assert (judge.budget.spent_today(), judge.budget.calls_today()) == (pytest.approx(0.4), 2)
    finally:
        obs.shutdown()
    assert len(fetch(sqlite_url, "spans", kind="judge")) == 2
