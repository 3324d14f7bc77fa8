"""One definition of a request: user-facing root traces, everywhere a reader counts them.

The judge's evaluations and LlamaIndex index building are recorded as internal traces; the
store, ``llmobs report``, anomaly detection and the gate leave them out unless told otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone

import pytest
from conftest import fetch
from judge_fakes import JUDGE_PRICES, rag_chain, scripted
from langchain_core.runnables import RunnableLambda
from lc_fakes import ai, chat
from li_fakes import (  # noqa: F401 - fixtures: li_settings, clean_dispatcher
    UsageMockLLM,
    clean_dispatcher_fixture,
    knowledge_index,
    li_settings_fixture,
)
from llama_index.core import Settings
from llama_index.core.callbacks import CallbackManager
from prometheus_client import CollectorRegistry

from llmobs_callbacks import Judge, LLMObs
from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.analysis.anomalies import requests as anomaly_requests
from llmobs_callbacks.analysis.report import summarize
from llmobs_callbacks.analysis.times import parse_duration, parse_time
from llmobs_callbacks.cli import main

pytest.importorskip("pandas")


def _ask(obs: LLMObs, chain, version: str = "v1") -> str:
    run_id = uuid.uuid4()
    chain.invoke(
        "How long do refunds take?",
        config={
            "callbacks": [obs.langchain_handler()],
            "run_id": run_id,
            "metadata": {"prompt_version": version},
        },
    )
    return str(run_id)


@pytest.fixture
def judged(db_url: str) -> Iterator[tuple[str, list[str]]]:
    """Three user requests, each judged: three judge traces beside them in the store."""
    judge = Judge(scripted(), sample_rate=1.0, workers=1)
    registry = CollectorRegistry()
    with LLMObs(db_url, judge=judge, price_overrides=JUDGE_PRICES, prometheus_registry=registry) as obs:
        ids = [_ask(obs, rag_chain()) for _ in range(3)]
        assert obs.flush()
    # Prometheus counts the requests too, not the judge's traces
    traces = [s for m in registry.collect() if m.name == "llmobs_traces" for s in m.samples]
    assert sum(s.value for s in traces if s.name == "llmobs_traces_total") == 3
    assert {s.labels["root"] for s in traces} == {"RunnableSequence"}
    yield db_url, ids


def test_judge_traces_are_internal_and_not_requests(judged: tuple[str, list[str]]) -> None:
    url, ids = judged
    roots = fetch(url, "spans", parent_span_id=None)
    judge_roots = [r for r in roots if r["kind"] == "judge"]
    assert len(roots) == 6 and len(judge_roots) == 3
    assert all(r["internal"] is True for r in judge_roots)
    assert all(r["internal"] is None for r in roots if r["kind"] != "judge")  # a user's: not marked

    with TraceStore(url) as ts:
        traces = ts.traces()
        assert sorted(traces["trace_id"]) == sorted(ids)
        assert not traces["internal"].any()
        everything = ts.traces(include_internal=True)
        assert len(everything) == 6 and int(everything["internal"].sum()) == 3
        summary = ts.summary()
        assert summary.loc["v1", "requests"] == 3
        # the judge's scores are on the user's traces, and count there
        assert summary.loc["v1", "score_faithfulness"] == 4.0
        assert ts.summary(include_internal=True)["requests"].sum() == 6
        frame = anomaly_requests(ts, datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
        assert sorted(frame["trace_id"]) == sorted(ids)
        # spans() stays every row; internal=False / True selects
        assert len(ts.spans(kind="judge")) == 3
        assert ts.spans(kind="judge", internal=False).empty
        assert len(ts.spans(internal=True)) == 3

    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        (group,) = summarize(engine)
        assert (group.group, group.requests) == ("v1", 3)
        assert sum(g.requests for g in summarize(engine, include_internal=True)) == 6
    finally:
        engine.dispose()


def test_report_cli_counts_requests_and_takes_include_internal(
    judged: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    url, _ = judged
    assert main(["report", "--database-url", url, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["group"], r["requests"]) for r in rows] == [("v1", 3)]
    assert main(["report", "--database-url", url, "--format", "json", "--include-internal"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["group"], r["requests"]) for r in rows) == [("(none)", 3), ("v1", 3)]


def test_report_cli_bad_time_is_one_line_and_exit_2(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    LLMObs(sqlite_url, prometheus_registry=None).shutdown()
    assert main(["report", "--database-url", sqlite_url, "--since", "yesterday"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a time: 'yesterday'" in err and "Traceback" not in err


def test_request_metrics_tokens_cost_and_unpriced_calls(db_url: str) -> None:
    """Tokens and cost are sums over the request's LLM calls; a call with tokens and no price is
    counted, so an incomplete cost is visible."""
    obs = LLMObs(
        db_url, prometheus_registry=None, price_overrides={"priced-model": {"input": 1.0, "output": 2.0}}
    )
    priced = chat(ai("a", 100, 10), model_name="priced-model")
    unknown = chat(ai("b", 200, 20), model_name="my-finetune")

    def both(question: str) -> str:
        return priced.invoke(question).content + unknown.invoke(question).content

    run_id = uuid.uuid4()
    RunnableLambda(both, name="two_calls").invoke(
        "q",
        config={
            "callbacks": [obs.langchain_handler()],
            "run_id": run_id,
            "metadata": {"prompt_version": "v7"},
        },
    )
    assert obs.flush()
    obs.shutdown()
    with TraceStore(db_url) as ts:
        (row,) = ts.traces().to_dict("records")
    assert row["trace_id"] == str(run_id) and row["name"] == "two_calls"
    assert (row["input_tokens"], row["output_tokens"], row["tokens"], row["llm_calls"]) == (300, 30, 330, 2)
    assert row["cost_usd"] == pytest.approx((100 * 1.0 + 10 * 2.0) / 1e6)
    assert (row["unpriced_calls"], row["unpriced_model"]) == (1, "my-finetune")
    assert row["prompt_version"] == "v7"


def test_llama_index_building_is_internal_and_the_query_is_the_request(
    db_url: str, li_settings: None, clean_dispatcher: None
) -> None:
    obs = LLMObs(db_url, prometheus_registry=None)
    handle = obs.instrument_llama_index()
    try:
        index = knowledge_index()  # parsing + embedding: roots of their own
        index.as_query_engine(llm=UsageMockLLM(), similarity_top_k=1).query("How long do refunds take?")
        assert obs.flush()
    finally:
        handle.close()
        obs.shutdown()
    roots = fetch(db_url, "spans", parent_span_id=None)
    internal = sorted(r["name"] for r in roots if r["internal"])
    assert internal == ["SentenceSplitter.__call__", "WordHashEmbedding.get_text_embedding_batch"]
    with TraceStore(db_url) as ts:
        assert list(ts.traces()["name"]) == ["RetrieverQueryEngine.query"]
        assert len(ts.traces(include_internal=True)) == 3


def test_legacy_llama_index_building_is_internal(
    db_url: str, li_settings: None, clean_dispatcher: None
) -> None:
    obs = LLMObs(db_url, prometheus_registry=None)
    Settings.callback_manager = CallbackManager([obs.llama_index_callback_handler()])
    index = knowledge_index()
    index.as_query_engine(llm=UsageMockLLM(), similarity_top_k=1).query("How long do refunds take?")
    assert obs.flush()
    obs.shutdown()
    roots = fetch(db_url, "spans", parent_span_id=None)
    assert {r["name"] for r in roots if not r["internal"]} == {"query"}
    assert {r["kind"] for r in roots if r["internal"]} <= {"chain", "embedding"}
    assert any(r["internal"] for r in roots)


def test_internal_work_inside_a_users_request_stays_part_of_it(db_url: str) -> None:
    """Children inherit ``internal`` from their parent, never the other way round."""
    obs = LLMObs(db_url, prometheus_registry=None)
    root = obs.recorder.start("r", None, "chain", "request", "manual")
    obs.recorder.start("e", "r", "embedding", "embed", "manual", internal=False)
    obs.recorder.end("e")
    obs.recorder.end("r")
    judge = obs.recorder.start("j", None, "judge", "judge", "manual", internal=True)
    obs.recorder.start("j-llm", "j", "llm", "call", "manual")
    obs.recorder.end("j-llm")
    obs.recorder.end("j")
    assert root is not None and judge is not None
    assert obs.flush()
    obs.shutdown()
    flags = {r["span_id"]: r["internal"] for r in fetch(db_url, "spans")}
    assert flags == {"r": None, "e": None, "j": True, "j-llm": True}


# -- the one time parser ------------------------------------------------------------------------

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("30m", NOW - timedelta(minutes=30)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("now", NOW),
        ("2026-01-15", datetime(2026, 1, 15, tzinfo=timezone.utc)),
        ("2026-01-15T10:00:00+02:00", datetime(2026, 1, 15, 8, tzinfo=timezone.utc)),
        ("2026-01-15T10:00:00Z", datetime(2026, 1, 15, 10, tzinfo=timezone.utc)),
        ("", None),
    ],
)
def test_parse_time_forms(text: str, expected: datetime | None) -> None:
    assert parse_time(text, now=NOW) == expected


def test_parse_time_objects_and_errors() -> None:
    assert parse_time(None) is None
    assert parse_time(date(2026, 1, 2)) == datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert parse_time(datetime(2026, 1, 2, 3)) == datetime(2026, 1, 2, 3, tzinfo=timezone.utc)  # naive = UTC
    with pytest.raises(ValueError, match=r"not a time: 'yesterday' \(e\.g\. 30m, 24h, 7d"):
        parse_time("yesterday")
    with pytest.raises(ValueError, match="not a time"):
        parse_time("24 hours")


def test_parse_duration() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration(timedelta(hours=1)) == timedelta(hours=1)
    for bad in ("0h", "-1h", "abc", "1y", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)
