"""obs.feedback(): in-flight, stored and unknown traces; rows and metric samples."""

from __future__ import annotations

import uuid

from conftest import fetch
from prometheus_client import CollectorRegistry

from llmobs_callbacks import LLMObs


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
