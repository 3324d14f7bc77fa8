"""The live judge: sampled traces scored off the request path, exact rows and metric samples."""

from __future__ import annotations

import threading
import uuid

import pytest
from conftest import fetch
from judge_fakes import DOC, GOOD, JUDGE_PRICES, rag_chain, scripted
from prometheus_client import CollectorRegistry

from llmobs_callbacks import Judge, LLMObs

QUESTION = "How long do refunds take?"


def _run(obs: LLMObs, chain, version: str = "v1") -> str:
    run_id = uuid.uuid4()
    chain.invoke(
        QUESTION,
        config={
            "callbacks": [obs.langchain_handler()],
            "run_id": run_id,
            "metadata": {"prompt_version": version},
        },
    )
    return str(run_id)


def _obs(url: str, judge: Judge, reg: CollectorRegistry | None = None) -> LLMObs:
    return LLMObs(
        url, judge=judge, price_overrides=JUDGE_PRICES, prometheus_registry=reg or CollectorRegistry()
    )


def test_judge_scores_rows_span_and_metrics(db_url: str) -> None:
    reg = CollectorRegistry()
    llm = scripted("```json\n" + GOOD.replace(": 4", ': "4"') + "\n```")
    with _obs(db_url, Judge(llm, sample_rate=1.0, workers=1), reg) as obs:
        trace_id = _run(obs, rag_chain())
        assert obs.flush()
        assert obs.flush()  # a second flush finds nothing new to judge (judge traces are never judged)
        assert obs.judge is not None and dict(obs.judge.counts) == {"ok": 1}
    rows = fetch(db_url, "scores", order_by="name")
    assert [(r["name"], r["value"], r["label"]) for r in rows] == [
        ("completeness", 3.0, None),
        ("faithfulness", 4.0, None),
        ("hallucination", 0.0, "no"),
        ("relevance", 5.0, None),
    ]
    for r in rows:
        assert (r["trace_id"], r["span_id"], r["source"], r["comment"]) == (trace_id, trace_id, "judge", "ok")
        assert r["judge_model"] == "judge-model" and r["cost_usd"] == pytest.approx(0.05)
    (judge_span,) = fetch(db_url, "spans", kind="judge")
    assert (
        judge_span["trace_id"] == judge_span["span_id"] != trace_id and judge_span["parent_span_id"] is None
    )
    assert (judge_span["input_tokens"], judge_span["output_tokens"]) == (100, 20)
    assert judge_span["cost_usd"] == pytest.approx(0.2) and judge_span["model"] == "judge-model"
    assert judge_span["attributes"]["judged_trace_id"] == trace_id
    assert judge_span["attributes"]["judge_status"] == "ok"
    assert (
        QUESTION in llm.prompts[0]
        and DOC in llm.prompts[0]
        and "Refunds take 5 business days." in llm.prompts[0]
    )
    assert len(fetch(db_url, "spans", trace_id=judge_span["trace_id"])) == 1
    assert reg.get_sample_value("llmobs_judge_evaluations_total", {"status": "ok"}) == 1
    labels = {"metric": "faithfulness", "prompt_version": "v1"}
    assert reg.get_sample_value("llmobs_quality_score_count", labels) == 1
    assert reg.get_sample_value("llmobs_quality_score_sum", labels) == 4.0
    hall = {"metric": "hallucination", "prompt_version": "v1"}
    assert reg.get_sample_value("llmobs_quality_score_sum", hall) == 0.0
    # the judge's call is not an ordinary LLM request
    assert reg.get_sample_value("llmobs_llm_requests_total", {**_judge_llm_labels(), "status": "ok"}) is None


def _judge_llm_labels() -> dict:
    return {"model": "judge-model", "provider": "openai", "prompt_version": ""}


def test_malformed_output_and_errors_are_counted_never_scored(sqlite_url: str) -> None:
    reg = CollectorRegistry()
    llm = scripted(
        "The answer looks fine to me.",
        GOOD.replace('"faithfulness": 4', '"faithfulness": 9'),
        RuntimeError("judge down"),
    )
    with _obs(sqlite_url, Judge(llm, sample_rate=1.0, workers=1), reg) as obs:
        for _ in range(3):
            _run(obs, rag_chain())
            assert obs.flush()
        assert obs.judge is not None and dict(obs.judge.counts) == {"invalid": 2, "error": 1}
    assert fetch(sqlite_url, "scores") == []
    spans = fetch(sqlite_url, "spans", order_by="start_time", kind="judge")
    assert [(s["status"], s["attributes"]["judge_status"]) for s in spans] == [
        ("ok", "invalid"),
        ("ok", "invalid"),
        ("error", "error"),
    ]
    assert spans[2]["error_message"] == "judge down"
    assert reg.get_sample_value("llmobs_judge_evaluations_total", {"status": "invalid"}) == 2
    assert reg.get_sample_value("llmobs_judge_evaluations_total", {"status": "error"}) == 1


def test_budget_stops_sampling(sqlite_url: str) -> None:
    reg = CollectorRegistry()
    judge = Judge(scripted(), sample_rate=1.0, budget_usd_per_day=0.3, workers=1)
    with _obs(sqlite_url, judge, reg) as obs:
        for _ in range(4):
            _run(obs, rag_chain())
            assert obs.flush()
        assert dict(judge.counts) == {"ok": 2, "budget_exhausted": 2}
        assert judge.budget.spent_today() == pytest.approx(0.4)
    assert len(fetch(sqlite_url, "scores")) == 8
    assert len(fetch(sqlite_url, "spans", kind="judge")) == 2
    assert reg.get_sample_value("llmobs_judge_evaluations_total", {"status": "budget_exhausted"}) == 2


def test_slow_judge_never_blocks_invoke_and_full_queue_drops(sqlite_url: str) -> None:
    gate = threading.Event()
    llm = scripted(gate=gate)
    judge = Judge(llm, sample_rate=1.0, workers=1, max_queue_size=1)
    with _obs(sqlite_url, judge) as obs:
        _run(obs, rag_chain())
        assert obs.processor.flush()
        assert llm.started.wait(10)  # the worker is inside the (blocked) judge call
        for _ in range(2):  # invoke returns while the judge is stuck: queued, then dropped
            _run(obs, rag_chain())
            assert obs.processor.flush()
        assert dict(judge.counts) == {"dropped": 1}
        assert obs.stats()["spans_dropped"]["judge_queue_full"] == 1
        gate.set()
        assert obs.flush()
        assert dict(judge.counts) == {"dropped": 1, "ok": 2}
    assert len(fetch(sqlite_url, "scores")) == 8


def _manual_traces(obs: LLMObs, n: int) -> list[str]:
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"trace-{i}")) for i in range(n)]
    for tid in ids:
        obs.recorder.start(tid, None, "chain", "app", "manual", input="question")
        obs.recorder.end(tid, output="answer")
    return ids


def test_thousand_traces_at_five_percent_same_ones_twice(tmp_path) -> None:
    judged = []
    for run in range(2):
        url = f"sqlite:///{tmp_path / f'run{run}.db'}"
        judge = Judge(lambda prompt: GOOD, sample_rate=0.05, workers=2)
        with LLMObs(url, judge=judge, prometheus_registry=None) as obs:
            _manual_traces(obs, 1000)
            assert obs.flush(timeout=30)
        judged.append({r["trace_id"] for r in fetch(url, "scores", name="faithfulness")})
    assert 35 <= len(judged[0]) <= 65
    assert judged[0] == judged[1]


def test_rule_scores_without_llm(sqlite_url: str) -> None:
    with LLMObs(sqlite_url, judge=Judge(sample_rate=1.0, rules=True), prometheus_registry=None) as obs:
        trace_id = _run(obs, rag_chain("Refunds are processed within 5 business days."))
        assert obs.flush()
    rows = {
        r["name"]: (r["value"], r["label"], r["source"])
        for r in fetch(sqlite_url, "scores", trace_id=trace_id)
    }
    assert rows == {
        "empty_answer": (0.0, "non_empty", "rule"),
        "grounded": (1.0, "grounded", "rule"),
        "refusal": (0.0, "answer", "rule"),
    }
    assert fetch(sqlite_url, "spans", kind="judge") == []
