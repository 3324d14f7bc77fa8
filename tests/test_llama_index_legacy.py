"""The legacy ``CallbackManager`` path: ``obs.llama_index_callback_handler()`` gives the same rows
for LLM, retrieve, embedding, reranking and function-call events."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
from conftest import fetch
from fake_openai import FakeOpenAIServer, fake_openai  # noqa: F401 - the fixture
from li_fakes import (  # noqa: F401 - fixtures: li_settings, clean_dispatcher
    SNAPSHOT,
    UsageMockLLM,
    clean_dispatcher_fixture,
    knowledge_index,
    li_settings_fixture,
)
from llama_index.core import Settings
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.llms import ChatMessage
from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT_TMPL
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai import OpenAI

from llmobs_callbacks import LLMObs

QUESTION = "How long do refunds take?"


def _cost(prompt: int, completion: int, cached: int = 0) -> float:
    return ((prompt - cached) * 0.15 + cached * 0.075 + completion * 0.60) / 1e6


@pytest.fixture
def legacy(obs: LLMObs, li_settings: None, clean_dispatcher: None) -> Iterator[LLMObs]:
    """``Settings.callback_manager`` with our handler (set before any object is created: a
    ``CallbackManager`` copies the global handlers when it is built); restored afterwards."""
    handler = obs.llama_index_callback_handler()
    assert obs.llama_index_callback_handler() is handler
    Settings.callback_manager = CallbackManager([handler])
    yield obs


def _rows(obs: LLMObs, **where) -> list[dict]:
    assert obs.flush()
    return fetch(obs.database_url, "spans", order_by="start_time", **where)


def _trace(rows: list[dict], root_name: str) -> list[dict]:
    (root,) = [r for r in rows if r["name"] == root_name and r["parent_span_id"] is None]
    return [r for r in rows if r["trace_id"] == root["span_id"]]


def test_query_rows_tree_tokens_documents_and_prompt(legacy: LLMObs) -> None:
    index = knowledge_index()
    response = index.as_query_engine(llm=UsageMockLLM(cached_tokens=20), similarity_top_k=2).query(QUESTION)
    assert str(response) == "Refunds take 5 business days."
    spans = _trace(_rows(legacy), "query")
    by_id = {s["span_id"]: s for s in spans}
    kinds = sorted((s["kind"], s["name"]) for s in spans if s["kind"] != "chain")
    assert kinds == [
        ("embedding", "WordHashEmbedding"),
        ("llm", "UsageMockLLM"),
        ("prompt", "templating"),
        ("retriever", "retrieve"),
    ]
    (llm,) = [s for s in spans if s["kind"] == "llm"]
    (retriever,) = [s for s in spans if s["kind"] == "retriever"]
    (embedding,) = [s for s in spans if s["kind"] == "embedding"]
    assert by_id[llm["parent_span_id"]]["name"] == "synthesize"
    assert by_id[embedding["parent_span_id"]] is retriever
    assert by_id[retriever["parent_span_id"]]["name"] == "query"
    assert all(s["framework"] == "llama_index" and s["status"] == "ok" for s in spans)
    assert (llm["input_tokens"], llm["output_tokens"], llm["cached_input_tokens"]) == (120, 30, 20)
    assert llm["model"] == SNAPSHOT
    assert llm["cost_usd"] == pytest.approx(_cost(120, 30, cached=20), rel=1e-12)
    assert llm["output"] == "Refunds take 5 business days."
    # the templating event's template gives the LLM call its derived version
    assert llm["prompt_version"] == hashlib.sha256(DEFAULT_TEXT_QA_PROMPT_TMPL.encode()).hexdigest()[:12]
    docs = fetch(legacy.database_url, "retrieved_documents", "rank", span_id=retriever["span_id"])
    assert [(d["document_id"], d["score"]) for d in docs] == [
        (n.node.node_id, pytest.approx(n.score, rel=1e-12)) for n in response.source_nodes
    ]
    assert json.loads(embedding["input"]) == [QUESTION]


def test_nested_llm_events_are_one_span_and_streams_are_timed_to_their_end(legacy: LLMObs) -> None:
    llm = UsageMockLLM(chunk_delay=0.01, answer="one two three four")
    messages = [ChatMessage(role="user", content="hi")]
    llm.chat(messages)  # chat → complete: two LLM events
    assert "".join(r.delta for r in llm.stream_chat(messages)) == "one two three four"
    rows = _rows(legacy)
    assert [(r["kind"], r["name"], r["input_tokens"], r["output_tokens"]) for r in rows] == [
        ("llm", "UsageMockLLM", 120, 30),
        ("llm", "UsageMockLLM", 120, 30),
    ]
    assert rows[1]["output"] == "one two three four" and rows[1]["latency_ms"] >= 4 * 10 * 0.9
    assert json.loads(rows[0]["input"]) == [{"role": "user", "content": "hi"}]


def test_a_call_made_while_a_stream_is_open_is_its_own_span(legacy: LLMObs) -> None:
    llm = UsageMockLLM(answer="one two")
    stream = llm.stream_chat([ChatMessage(role="user", content="hi")])  # stream_chat → stream_complete
    assert llm.complete("other").text == "one two"  # same context, same parent: not a nested call
    assert "".join(r.delta for r in stream) == "one two"
    rows = _rows(legacy)
    assert sorted((r["input"], r["input_tokens"]) for r in rows) == [
        ('[{"role":"user","content":"hi"}]', 120),
        ("other", 120),
    ]


def test_streamed_query_llm_joins_the_query_trace(legacy: LLMObs) -> None:
    response = knowledge_index().as_query_engine(llm=UsageMockLLM(), streaming=True).query(QUESTION)
    assert "".join(response.response_gen) == "Refunds take 5 business days."
    spans = _trace(_rows(legacy), "query")
    (llm,) = [s for s in spans if s["kind"] == "llm"]
    assert llm["input_tokens"] == 120 and llm["prompt_version"] is not None


def test_function_call_and_llm_error_events(legacy: LLMObs) -> None:
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    tool = FunctionTool.from_defaults(fn=multiply)
    manager = Settings.callback_manager
    with manager.event(
        CBEventType.FUNCTION_CALL,
        payload={EventPayload.FUNCTION_CALL: {"a": 6, "b": 7}, EventPayload.TOOL: tool.metadata},
    ) as event:
        event.on_end(payload={EventPayload.FUNCTION_OUTPUT: str(tool.call(a=6, b=7))})
    boom = RuntimeError("model is down")
    with pytest.raises(RuntimeError) as info:
        UsageMockLLM(fail_with=boom).complete("hi")
    assert info.value is boom
    tool_row, llm_row = _rows(legacy)
    assert (tool_row["kind"], tool_row["name"], tool_row["status"]) == ("tool", "multiply", "ok")
    assert json.loads(tool_row["input"]) == {"a": 6, "b": 7} and tool_row["output"] == "42"
    assert (llm_row["kind"], llm_row["status"], llm_row["error_type"], llm_row["error_message"]) == (
        "llm",
        "error",
        "RuntimeError",
        "model is down",
    )


def test_openai_through_the_legacy_handler(legacy: LLMObs, fake_openai: FakeOpenAIServer) -> None:  # noqa: F811
    fake_openai.enqueue_chat("Five days.", prompt_tokens=1000, completion_tokens=100, cached_tokens=400)
    llm = OpenAI(model="gpt-4o-mini", api_key="test", api_base=fake_openai.base_url, max_retries=0)
    assert str(knowledge_index().as_query_engine(llm=llm).query(QUESTION)) == "Five days."
    (row,) = _rows(legacy, kind="llm")
    assert (row["name"], row["model"], row["provider"]) == ("openai_llm", "gpt-4o-mini", "openai")
    assert (row["request_model"], row["response_model"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert (row["input_tokens"], row["output_tokens"], row["cached_input_tokens"]) == (1000, 100, 400)
    assert row["cost_usd"] == pytest.approx(0.00018, rel=1e-12)


def test_shutdown_switches_the_handler_off(legacy: LLMObs) -> None:
    handler = legacy.llama_index_callback_handler()
    legacy.shutdown()
    UsageMockLLM().complete("hi")  # no error, nothing recorded
    assert handler._recorder is None
