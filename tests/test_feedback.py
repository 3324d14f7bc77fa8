"""obs.feedback(): in-flight, stored and unknown traces; rows and metric samples; one current
score per (trace, user, name)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

import sqlalchemy as sa
from conftest import fetch
from prometheus_client import CollectorRegistry

from llmobs_callbacks import LLMObs
from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.redaction import hash_user_id
from llmobs_callbacks.scores import feedback_row
from llmobs_callbacks.sinks.sql import SQLExporter


def test_feedback_on_in_flight_old_and_unknown_traces(db_url: str) -> None:
    reg = CollectorRegistry()
    old = str(uuid.uuid4())
    with LLMObs(db_url, prometheus_registry=None) as first:
        first.recorder.start(old, None, "chain", "app", "manual", metadata={"prompt_version": "v1"})
        first.recorder.end(old, output="answer")
    with LLMObs(db_url, prometheus_registry=reg) as obs:
        running = uuid.uuid4()
        obs.recorder.start(running, None, "chain", "app", "manual", metadata={"prompt_version": "v2"})
        obs.feedback(running, score=1.0, comment="great")  # still being written
        obs.feedback(old, score=0.0)
        obs.feedback("no-such-trace", score=1.0, comment="typo?")
        obs.feedback(old, score=4, name="stars", rating="4_stars")
        obs.recorder.end(running, output="answer")
        assert obs.flush()
    rows = {(r["trace_id"], r["name"]): r for r in fetch(db_url, "scores")}
    assert len(rows) == 4
    assert all(r["source"] == "user" and r["judge_model"] is None for r in rows.values())
    got = {k: (r["value"], r["label"], r["comment"]) for k, r in rows.items()}
    assert got == {
        (str(running), "user_feedback"): (1.0, "positive", "great"),
        (old, "user_feedback"): (0.0, "negative", None),
        ("no-such-trace", "user_feedback"): (1.0, "unknown_trace", "typo?"),
        (old, "stars"): (4.0, "4_stars", None),
    }
    assert reg.get_sample_value("llmobs_feedback_total", {"rating": "positive"}) == 2
    assert reg.get_sample_value("llmobs_feedback_total", {"rating": "negative"}) == 1
    assert reg.get_sample_value("llmobs_feedback_total", {"rating": "4_stars"}) == 1
    labels = {"metric": "user_feedback", "prompt_version": "v1"}
    assert reg.get_sample_value("llmobs_quality_score_count", labels) == 1
    assert reg.get_sample_value("llmobs_quality_score_count", {**labels, "prompt_version": "v2"}) == 1


def test_feedback_only_enqueues(sqlite_url: str) -> None:
    with LLMObs(sqlite_url, prometheus_registry=None) as obs:
        score_id = obs.feedback("t-1", score=0.5)
        assert isinstance(score_id, str)
        assert obs.flush()
        (row,) = fetch(sqlite_url, "scores")
        assert (row["id"], row["label"]) == (score_id, "unknown_trace")


# -- one current score per (trace, user, name) --------------------------------------------------

T0 = 1_750_000_000 * 10**9  # epoch ns: the recorder's clock stamps feedback rows


class Clock:
    def __init__(self) -> None:
        self.ns = T0

    def __call__(self) -> int:
        return self.ns

    def at(self, seconds: float) -> Clock:
        self.ns = T0 + int(seconds * 1e9)
        return self


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp((T0 + int(seconds * 1e9)) / 1e9, tz=timezone.utc)


def _trace(obs: LLMObs, name: str = "app", version: str = "v1", **metadata: str) -> str:
    trace_id = str(uuid.uuid4())
    obs.recorder.start(
        trace_id, None, "chain", name, "manual", metadata={"prompt_version": version, **metadata}
    )
    obs.recorder.end(trace_id, output="answer")
    return trace_id


def _history(url: str, trace_id: str) -> list[tuple]:
    rows = fetch(url, "scores", order_by="created_at", trace_id=trace_id)
    return [(r["user_id"], r["name"], r["value"], r["created_at"], r["superseded_at"]) for r in rows]


def test_a_flipped_rating_replaces_the_earlier_one(db_url: str) -> None:
    reg = CollectorRegistry()
    clock = Clock()
    with LLMObs(db_url, clock=clock, prometheus_registry=reg) as obs:
        flipped, other = _trace(obs), _trace(obs)
        obs.feedback(flipped, 0.0, user_id="u1")  # 👎
        assert obs.flush()
        clock.at(60)
        obs.feedback(flipped, 1.0, user_id="u1")  # then 👍
        obs.feedback(other, 0.0, user_id="u2")
        assert obs.flush()
    assert _history(db_url, flipped) == [
        ("u1", "user_feedback", 0.0, _utc(0), _utc(60)),  # kept as history, not counted
        ("u1", "user_feedback", 1.0, _utc(60), None),
    ]
    with TraceStore(db_url) as ts:
        traces = ts.traces().set_index("trace_id")
        assert traces.at[flipped, "score_user_feedback"] == 1.0
        assert traces.at[other, "score_user_feedback"] == 0.0
        assert ts.summary().at["v1", "score_user_feedback"] == 0.5  # 0.25 if both rows counted
        current = ts.scores()
        assert sorted(zip(current["trace_id"], current["value"], strict=True)) == sorted(
            [(flipped, 1.0), (other, 0.0)]
        )
    # the counter counts submissions: the flip is one negative and one positive rating
    assert reg.get_sample_value("llmobs_feedback_total", {"rating": "negative"}) == 2
    assert reg.get_sample_value("llmobs_feedback_total", {"rating": "positive"}) == 1


def test_each_user_counts_and_anonymous_feedback_always_counts(db_url: str) -> None:
    clock = Clock()
    with LLMObs(db_url, clock=clock, prometheus_registry=None) as obs:
        trace_id = _trace(obs)
        for second, (score, user) in enumerate([(1.0, "u1"), (0.0, "u2"), (1.0, None), (1.0, None)]):
            clock.at(second)
            obs.feedback(trace_id, score, user_id=user)
        clock.at(10)
        obs.feedback(trace_id, 4, name="stars", user_id="u1")  # another name: not a flip
        assert obs.flush()
    rows = _history(db_url, trace_id)
    assert len(rows) == 5 and all(r[4] is None for r in rows)
    with TraceStore(db_url) as ts:
        (row,) = ts.traces().to_dict("records")
        assert row["score_user_feedback"] == 0.75 and row["score_stars"] == 4.0


def test_rows_arriving_out_of_order_keep_the_newest_current(db_url: str) -> None:
    clock = Clock()
    with LLMObs(db_url, clock=clock, prometheus_registry=None) as obs:
        a, b = _trace(obs), _trace(obs)
        clock.at(30)
        obs.feedback(a, 1.0, user_id="u1")
        assert obs.flush()
        clock.at(10)  # an older rating stored later (another process, a late replay)
        obs.feedback(a, 0.0, user_id="u1")
        assert obs.flush()
        for second, score in ((20, 0.2), (5, 0.05), (40, 0.4)):  # one batch, shuffled
            clock.at(second)
            obs.feedback(b, score, user_id="u1")
        assert obs.flush()
        clock.at(20)
        obs.feedback(a, 0.5, user_id="u1")  # in between: supersedes the 10 s row, not the 30 s one
        assert obs.flush()
    assert _history(db_url, a) == [
        ("u1", "user_feedback", 0.0, _utc(10), _utc(20)),
        ("u1", "user_feedback", 0.5, _utc(20), _utc(30)),
        ("u1", "user_feedback", 1.0, _utc(30), None),
    ]
    assert [(r[2], r[4]) for r in _history(db_url, b)] == [(0.05, _utc(20)), (0.2, _utc(40)), (0.4, None)]


def _cut_off(engine: sa.engine.Engine) -> Callable[[], None]:
    """This LLMObs's database connections fail (as during an outage); others' still work.
    Returns the function that ends the outage."""
    if engine.dialect.name == "postgresql":
        import psycopg

        error: type[Exception] = psycopg.OperationalError
    else:
        error = sqlite3.OperationalError

    def refuse(*args: object, **kwargs: object) -> None:
        raise error("connection refused (test outage)")  # the driver's own error: transient

    sa.event.listen(engine, "do_connect", refuse)
    engine.dispose()

    def restore() -> None:
        sa.event.remove(engine, "do_connect", refuse)
        engine.dispose()

    return restore


def test_an_outage_replay_keeps_the_current_score_right(db_url: str, tmp_path) -> None:
    clock = Clock()
    options = {"prometheus_registry": None, "database_timeout_s": 0.5}
    cut = LLMObs(db_url, clock=clock, spool_dir=tmp_path / "spool-a", replay_interval_s=0.5, **options)
    other = LLMObs(db_url, clock=clock, spool_dir=tmp_path / "spool-b", **options)
    try:
        trace_id = _trace(cut)
        assert cut.flush()
        restore = _cut_off(cut.sql.engine)
        clock.at(10)
        cut.feedback(trace_id, 0.0, user_id="u1")  # spooled: older than the row below
        clock.at(11)
        cut.feedback(trace_id, 0.0, user_id="u2")
        assert cut.flush(timeout=1.0) is False
        clock.at(12)
        cut.feedback(trace_id, 1.0, user_id="u2")  # u2 flips during the outage: a second spooled batch
        assert cut.flush(timeout=1.0) is False
        assert cut.stats()["spool"]["spooled_scores"] == 3
        clock.at(20)
        other.feedback(trace_id, 1.0, user_id="u1")  # another process stores a newer rating meanwhile
        assert other.flush()
        restore()
        assert cut.flush(timeout=30) is True  # replayed through write_rows
        assert cut.stats()["spans_dropped"] == {}
    finally:
        cut.shutdown()
        other.shutdown()
    assert _history(db_url, trace_id) == [
        ("u1", "user_feedback", 0.0, _utc(10), _utc(20)),
        ("u2", "user_feedback", 0.0, _utc(11), _utc(12)),
        ("u2", "user_feedback", 1.0, _utc(12), None),
        ("u1", "user_feedback", 1.0, _utc(20), None),
    ]
    with TraceStore(db_url) as ts:
        assert ts.traces().at[0, "score_user_feedback"] == 1.0


def test_feedback_user_ids_are_hashed_and_redacted_as_spans_are(db_url: str) -> None:
    key = "feedback-key"
    with LLMObs(db_url, hash_user_ids=key, prometheus_registry=None) as obs:
        trace_id = _trace(obs, user_id="alice")
        obs.feedback(trace_id, 0.0, user_id="alice")
        assert obs.flush()
        obs.feedback(trace_id, 1.0, user_id="alice")
        assert obs.flush()
    hashed = hash_user_id(key.encode(), "alice")
    (span,) = fetch(db_url, "spans", trace_id=trace_id)
    assert span["user_id"] == hashed
    assert [(r[0], r[2], r[4] is None) for r in _history(db_url, trace_id)] == [
        (hashed, 0.0, False),
        (hashed, 1.0, True),
    ]
    assert "alice" not in str(fetch(db_url, "scores"))
    with LLMObs(db_url, redact=["email"], prometheus_registry=None) as obs:  # no key: redacted
        trace_id = _trace(obs, user_id="bob@example.com")
        obs.feedback(trace_id, 1.0, user_id="bob@example.com")
        assert obs.flush()
    (span,) = fetch(db_url, "spans", trace_id=trace_id)
    (score,) = fetch(db_url, "scores", trace_id=trace_id)
    assert score["user_id"] == span["user_id"] == "[REDACTED:email]"


def test_two_writers_rating_one_key_at_once_leave_one_current_row(db_url: str) -> None:
    writers = [SQLExporter(db_url), SQLExporter(db_url)]
    traces = [f"t-{i}" for i in range(30)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def rate(writer: SQLExporter, value: float) -> None:
        try:
            for second, trace_id in enumerate(traces):
                at = _utc(second + value)  # each writer's row differs in time: one must be older
                row = feedback_row(trace_id, value, "", "user_feedback", None, created_at=at, user_id="u1")
                barrier.wait(10)
                writer.insert_scores([row])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=rate, args=(w, v)) for w, v in zip(writers, (0.0, 0.5), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for w in writers:
        w.shutdown()
    assert not errors
    rows = fetch(db_url, "scores")
    assert len(rows) == 60
    current = {r["trace_id"]: r["value"] for r in rows if r["superseded_at"] is None}
    assert current == dict.fromkeys(traces, 0.5)  # one current row per key: the newer one
