"""Prompt identity (issue 14): names for versions declared without one, every template of a
request, the template hash on the spans it fed, and ``prompt_drift`` for a template edited under
the same declared version. Real langchain-core / llama-index-core runs, a simulated clock for
"hours later", SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from conftest import fetch
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from lc_fakes import ai, chat
from li_fakes import (  # noqa: F401 - fixtures: li, li_settings, clean_dispatcher
    UsageMockLLM,
    clean_dispatcher_fixture,
    knowledge_index,
    li_fixture,
    li_settings_fixture,
)
from llama_index.core.prompts import PromptTemplate as LIPromptTemplate
from llama_index.core.prompts.default_prompts import DEFAULT_REFINE_PROMPT_TMPL, DEFAULT_TEXT_QA_PROMPT_TMPL
from pydantic import BaseModel

from llmobs_callbacks import LLMObs
from llmobs_callbacks.alerts import Alert
from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.cli import main
from llmobs_callbacks.demo import SimulatedClock

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=timezone.utc)
SUPPORT = {"prompt_name": "support", "prompt_version": "v2"}
CLASSIFY = [("system", "Classify the question as billing or shipping."), ("human", "{q}")]
ANSWER = [("system", "You answer {label} questions briefly."), ("human", "{q}")]
ANSWER_EDITED = [("system", "You answer {label} questions briefly and politely."), ("human", "{q}")]


def _text(messages: list[tuple[str, str]]) -> str:
    roles = {"system": "SystemMessagePromptTemplate", "human": "HumanMessagePromptTemplate"}
    return "\n".join(f"[{roles[role]}] {text}" for role, text in messages)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _answer_chain(answer: list[tuple[str, str]], n: int = 1):
    prompt = ChatPromptTemplate.from_messages(answer)
    return {"label": lambda x: "billing", "q": lambda x: x["q"]} | prompt | chat(*[ai("ok", 10, 2)] * n)


def _two_prompt_chain(answer: list[tuple[str, str]], n: int = 1):
    """Classify with one template, answer with another: two prompts in one request."""
    classify = (
        ChatPromptTemplate.from_messages(CLASSIFY) | chat(*[ai("billing", 8, 1)] * n) | StrOutputParser()
    )
    reply = ChatPromptTemplate.from_messages(answer) | chat(*[ai("answer", 12, 3)] * n) | StrOutputParser()
    return {"label": classify, "q": lambda x: x["q"]} | reply


def _serve(url: str, at: datetime, chain, requests: int = 3, metadata: dict | None = None) -> None:
    """``requests`` requests through ``chain`` from ``at`` on (one a minute), by a process of its own."""
    clock = SimulatedClock(at)
    obs = LLMObs(url, clock=clock, prometheus_registry=None)
    try:
        for i in range(requests):
            clock.advance(60)
            chain.invoke(
                {"q": f"question {i}"},
                config={"callbacks": [obs.langchain_handler()], "metadata": dict(metadata or SUPPORT)},
            )
        assert obs.flush()
    finally:
        obs.shutdown()


def _drifts(url: str, now: datetime) -> list:
    return [a for a in TraceStore(url).anomalies(now=now) if a.type == "prompt_drift"]


# ---------------------------------------------------------------------- names


def test_declared_version_without_a_name_takes_the_roots_name(obs: LLMObs) -> None:
    chain = ChatPromptTemplate.from_messages(CLASSIFY) | chat(ai("billing", 8, 1)) | StrOutputParser()
    chain.with_config(run_name="support_bot").invoke(
        {"q": "x"}, config={"callbacks": [obs.langchain_handler()], "metadata": {"prompt_version": "v2"}}
    )
    assert obs.flush()
    spans = fetch(obs.database_url, "spans")
    assert len(spans) == 4
    assert {(s["prompt_name"], s["prompt_version"]) for s in spans} == {("support_bot", "v2")}
    (row,) = fetch(obs.database_url, "prompt_versions")
    digest = _hash(_text(CLASSIFY))
    assert (row["prompt_name"], row["prompt_version"], row["template_hash"]) == ("support_bot", "v2", digest)
    assert row["template"] == _text(CLASSIFY)


def test_declared_version_without_a_name_takes_a_named_templates_name(obs: LLMObs) -> None:
    prompt = ChatPromptTemplate.from_messages(CLASSIFY).with_config(run_name="classifier")
    (prompt | chat(ai("billing", 8, 1)) | StrOutputParser()).with_config(run_name="support_bot").invoke(
        {"q": "x"}, config={"callbacks": [obs.langchain_handler()], "metadata": {"prompt_version": "v2"}}
    )
    assert obs.flush()
    names = {s["kind"]: (s["prompt_name"], s["prompt_version"]) for s in fetch(obs.database_url, "spans")}
    assert names == {
        "chain": ("support_bot", "v2"),
        "prompt": ("classifier", "v2"),
        "llm": ("classifier", "v2"),  # the call the template fed
        "parser": ("support_bot", "v2"),
    }
    rows = fetch(obs.database_url, "prompt_versions")
    assert [(r["prompt_name"], r["prompt_version"], r["template_hash"]) for r in rows] == [
        ("classifier", "v2", _hash(_text(CLASSIFY)))
    ]


def test_llama_index_declared_version_without_a_name_takes_the_templates_names(li: LLMObs) -> None:
    engine = knowledge_index().as_query_engine(llm=UsageMockLLM(), response_mode="refine", similarity_top_k=2)
    with li.context(prompt_version="v2"):
        engine.query("How long do refunds take?")
    assert li.flush()
    spans = [s for s in fetch(li.database_url, "spans") if s["prompt_version"] is not None]
    assert spans and all(s["prompt_version"] == "v2" and s["prompt_name"] for s in spans)
    root = next(s for s in spans if s["parent_span_id"] is None)
    assert root["prompt_name"] == "RetrieverQueryEngine.query" and root["template_hash"] is None
    qa, refine = _hash(DEFAULT_TEXT_QA_PROMPT_TMPL), _hash(DEFAULT_REFINE_PROMPT_TMPL)
    llm_calls = [(s["prompt_name"], s["template_hash"]) for s in spans if s["kind"] == "llm"]
    assert llm_calls == [("text_qa", qa), ("refine", refine)]
    rows = fetch(li.database_url, "prompt_versions")
    assert sorted(
        (r["prompt_name"], r["prompt_version"], r["template_hash"], r["template"]) for r in rows
    ) == [
        ("refine", "v2", refine, DEFAULT_REFINE_PROMPT_TMPL),
        ("text_qa", "v2", qa, DEFAULT_TEXT_QA_PROMPT_TMPL),
    ]


def test_llama_index_structured_predict_llm_call_carries_its_template(li: LLMObs) -> None:
    class Name(BaseModel):
        name: str

    text = "Name a product for {topic}"
    with li.context(prompt_name="naming", prompt_version="n1"):
        result = UsageMockLLM(answer='{"name": "Refundr"}').structured_predict(
            Name, LIPromptTemplate(text), topic="refunds"
        )
    assert result.name == "Refundr"
    assert li.flush()
    spans = fetch(li.database_url, "spans")
    (llm,) = [s for s in spans if s["kind"] == "llm"]
    assert (llm["prompt_name"], llm["prompt_version"], llm["template_hash"]) == ("naming", "n1", _hash(text))
    # only the spans that rendered or were fed the template carry its hash
    assert {s["name"].split(".")[-1] for s in spans if s["template_hash"]} == {
        "structured_predict",
        "complete",
    }
    rows = fetch(li.database_url, "prompt_versions")
    assert [(r["prompt_name"], r["prompt_version"], r["template"]) for r in rows] == [("naming", "n1", text)]


# ---------------------------------------------------------------------- several templates


def test_two_prompts_in_one_request_are_both_recorded_and_feed_their_own_llm_call(db_url: str) -> None:
    _serve(db_url, T0, _two_prompt_chain(ANSWER, 3))
    _serve(db_url, T0 + timedelta(hours=3), _two_prompt_chain(ANSWER, 3))  # the same templates later
    spans = fetch(db_url, "spans", order_by="start_time")
    classify, answer = _hash(_text(CLASSIFY)), _hash(_text(ANSWER))
    first = [s for s in spans if s["trace_id"] == spans[0]["trace_id"]]
    fed = [(s["kind"], s["template_hash"]) for s in first if s["kind"] in ("prompt", "llm")]
    assert fed == [("prompt", classify), ("llm", classify), ("prompt", answer), ("llm", answer)]
    assert all(s["template_hash"] is None for s in first if s["kind"] not in ("prompt", "llm"))
    assert {(s["prompt_name"], s["prompt_version"]) for s in spans} == {("support", "v2")}
    rows = fetch(db_url, "prompt_versions", order_by="first_seen")
    assert [(r["prompt_name"], r["prompt_version"], r["template_hash"], r["template"]) for r in rows] == [
        ("support", "v2", classify, _text(CLASSIFY)),
        ("support", "v2", answer, _text(ANSWER)),
    ]
    assert all(r["last_seen"] - r["first_seen"] > timedelta(hours=3) for r in rows)
    assert _drifts(db_url, T0 + timedelta(hours=3, minutes=30)) == []


def test_a_template_joining_later_in_the_same_requests_is_not_drift(db_url: str) -> None:
    # v2 answers directly at first; hours later its requests also classify first (a new template,
    # used together with the one already serving): not an edit of it
    _serve(db_url, T0, _answer_chain(ANSWER, 3))
    _serve(db_url, T0 + timedelta(hours=3), _two_prompt_chain(ANSWER, 3))
    rows = fetch(db_url, "prompt_versions", order_by="first_seen")
    assert [r["template_hash"] for r in rows] == [_hash(_text(ANSWER)), _hash(_text(CLASSIFY))]
    assert _drifts(db_url, T0 + timedelta(hours=3, minutes=30)) == []


# ---------------------------------------------------------------------- drift


def test_template_edited_under_the_same_version_is_prompt_drift(db_url: str, capsys) -> None:
    _serve(db_url, T0, _answer_chain(ANSWER, 3))
    edit = T0 + timedelta(hours=5, minutes=2)
    _serve(db_url, edit, _answer_chain(ANSWER_EDITED, 3))
    old, new = _hash(_text(ANSWER)), _hash(_text(ANSWER_EDITED))

    rows = {r["template_hash"]: r for r in fetch(db_url, "prompt_versions")}
    assert set(rows) == {old, new}  # both templates kept, each with its own text
    assert {(r["prompt_name"], r["prompt_version"]) for r in rows.values()} == {("support", "v2")}
    assert rows[old]["template"] == _text(ANSWER) and rows[new]["template"] == _text(ANSWER_EDITED)
    assert rows[old]["last_seen"] < edit <= rows[new]["first_seen"]
    llm_hashes = {s["start_time"] >= edit: s["template_hash"] for s in fetch(db_url, "spans", kind="llm")}
    assert llm_hashes == {False: old, True: new}  # each call says which text it was sent

    now = edit + timedelta(minutes=30)
    (drift,) = _drifts(db_url, now)
    first_seen = rows[new]["first_seen"].replace(tzinfo=timezone.utc)
    assert drift.explanation == (
        f"support v2 changed its template at {first_seen:%Y-%m-%d %H:%M} without a new version "
        f"(template {old[:8]}… → {new[:8]}…, +1/−1 lines)"
    )
    assert (drift.severity, drift.prompt_version) == ("warning", "v2")
    assert drift.details["old_template_hash"] == old and drift.details["new_template_hash"] == new
    assert drift.as_dict()["details"]["changed_at"] == first_seen.isoformat()

    # the CLI prints it; the alert manager sends it
    assert main(["anomalies", "--database-url", db_url, "--now", now.isoformat()]) == 0
    assert f"{'WARNING':8} {'prompt_drift':18} {drift.explanation}" in capsys.readouterr().out
    received: list[Alert] = []
    obs = LLMObs(db_url, prometheus_registry=None)
    try:
        manager = obs.alerts(notify=[received.append])
        manager.check(now=now)
        assert manager.flush()
    finally:
        obs.shutdown()
    assert [(a.title, a.text) for a in received if a.anomaly and a.anomaly.type == "prompt_drift"] == [
        ("prompt_drift prompt_version=v2", drift.explanation)
    ]
    # flagged while the new template is new, not forever
    assert len(_drifts(db_url, edit + timedelta(hours=12))) == 1
    assert _drifts(db_url, edit + timedelta(hours=14)) == []


def test_edit_of_one_of_two_templates_names_the_one_it_replaced(db_url: str) -> None:
    _serve(db_url, T0, _two_prompt_chain(ANSWER, 3))
    _serve(db_url, T0 + timedelta(hours=4), _two_prompt_chain(ANSWER_EDITED, 3))
    (drift,) = _drifts(db_url, T0 + timedelta(hours=4, minutes=30))
    assert drift.details["old_template_hash"] == _hash(_text(ANSWER))
    assert drift.details["new_template_hash"] == _hash(_text(ANSWER_EDITED))
    assert len(fetch(db_url, "prompt_versions")) == 3


@pytest.mark.parametrize("later", ["unchanged", "new_version"])
def test_no_drift_for_an_unchanged_template_or_an_edit_shipped_as_a_new_version(db_url: str, later) -> None:
    _serve(db_url, T0, _answer_chain(ANSWER, 3))
    if later == "unchanged":
        _serve(db_url, T0 + timedelta(hours=5), _answer_chain(ANSWER, 3))
    else:
        v3 = {**SUPPORT, "prompt_version": "v3"}
        _serve(db_url, T0 + timedelta(hours=5), _answer_chain(ANSWER_EDITED, 3), metadata=v3)
    found = TraceStore(db_url).anomalies(now=T0 + timedelta(hours=5, minutes=30))
    assert [a for a in found if a.type == "prompt_drift"] == []
    if later == "new_version":
        assert [a.type for a in found] == ["new_prompt_version"]
    assert len(fetch(db_url, "prompt_versions")) == (1 if later == "unchanged" else 2)


def test_drift_is_seen_in_a_backtest_at_the_moment_of_the_edit(db_url: str) -> None:
    from llmobs_callbacks.analysis.anomalies import backtest

    _serve(db_url, T0, _answer_chain(ANSWER, 3))
    edit = T0 + timedelta(hours=5)
    _serve(db_url, edit, _answer_chain(ANSWER_EDITED, 3))
    checks = backtest(TraceStore(db_url), edit - timedelta(hours=1), edit + timedelta(hours=1), every="1h")
    flagged = [now for now, found in checks if any(a.type == "prompt_drift" for a in found)]
    assert flagged == [edit + timedelta(hours=1)]  # not before the edit happened


def test_declared_version_whose_llm_call_no_template_fed_lists_an_empty_hash(db_url: str) -> None:
    obs = LLMObs(db_url, prometheus_registry=None)
    try:
        step = RunnableLambda(lambda q: chat(ai("raw", 3, 1)).invoke(q), name="raw_step")
        step.invoke(
            "x", config={"callbacks": [obs.langchain_handler()], "metadata": {"prompt_version": "r1"}}
        )
        assert obs.flush()
    finally:
        obs.shutdown()
    assert {(s["prompt_name"], s["prompt_version"]) for s in fetch(db_url, "spans")} == {("raw_step", "r1")}
    (row,) = fetch(db_url, "prompt_versions")
    assert (row["prompt_name"], row["prompt_version"], row["template_hash"], row["template"]) == (
        "raw_step",
        "r1",
        "",
        None,
    )
