"""End to end through LlamaIndex's real OpenAI integrations: llama-index-llms-openai and
llama-index-embeddings-openai → openai → HTTP → the local fake server (``max_retries=0``).

Asserts the rows a user relies on: tokens as the server reported them (cached and reasoning
included), cost computed here by hand, the snapshot model the response named, streams timed to
their end, a function-calling agent's tool, and HTTP errors."""

from __future__ import annotations

import json

import openai
import pytest
from conftest import fetch
from fake_openai import FakeOpenAIServer, fake_openai  # noqa: F401 - the fixture
from li_fakes import clean_dispatcher_fixture, li_fixture, li_settings_fixture  # noqa: F401 - fixtures
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

from llmobs_callbacks import LLMObs

MINI_IN, MINI_CACHED, MINI_OUT = 0.15, 0.075, 0.60  # gpt-4o-mini, USD per 1M tokens
MINI_SNAPSHOT = "gpt-4o-mini-2024-07-18"
QUESTION = "How long do refunds take?"
# llama-index-workflows inspects pydantic models with inspect.getmembers (not our code).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")


@pytest.fixture
def server(fake_openai: FakeOpenAIServer) -> FakeOpenAIServer:  # noqa: F811 - the imported fixture
    return fake_openai


def _cost(prompt: int, completion: int, cached: int = 0) -> float:
    return ((prompt - cached) * MINI_IN + cached * MINI_CACHED + completion * MINI_OUT) / 1e6


def _llm(server: FakeOpenAIServer, *, stream_usage: bool = True) -> OpenAI:
    extra = {"stream_options": {"include_usage": True}} if stream_usage else {}
    return OpenAI(
        model="gpt-4o-mini", api_key="test", api_base=server.base_url, max_retries=0, additional_kwargs=extra
    )


def _index(server: FakeOpenAIServer) -> VectorStoreIndex:
    embed = OpenAIEmbedding(
        model="text-embedding-3-small", api_key="test", api_base=server.base_url, max_retries=0
    )
    docs = [
        Document(text="Refunds are issued within 5 business days.", id_="refunds"),
        Document(text="Standard shipping takes 3 to 5 days.", id_="shipping"),
    ]
    return VectorStoreIndex.from_documents(docs, embed_model=embed)


def _rows(obs: LLMObs, **where) -> list[dict]:
    assert obs.flush()
    return fetch(obs.database_url, "spans", order_by="start_time", **where)


def _query_trace(obs: LLMObs, root_name: str) -> list[dict]:
    rows = _rows(obs)
    root = next(r for r in rows if r["name"] == root_name)
    assert root["parent_span_id"] is None
    return [r for r in rows if r["trace_id"] == root["span_id"]]


def _tokens(row: dict) -> tuple:
    return tuple(
        row[c]
        for c in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "total_tokens")
    )


def _assert_priced(row: dict, prompt: int, completion: int, cached: int = 0) -> None:
    # the requested model is the key; the response's snapshot is kept (and priced)
    assert (row["model"], row["request_model"], row["response_model"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini",
        MINI_SNAPSHOT,
    )
    assert row["provider"] == "openai"
    assert row["cost_usd"] == pytest.approx(_cost(prompt, completion, cached), rel=1e-12)
    assert row["price_source"].startswith("genai-prices ")
    assert row["price_source"].endswith(":openai/gpt-4o-mini")


def test_vector_index_query_tokens_cost_and_retrieval(li: LLMObs, server: FakeOpenAIServer) -> None:
    index = _index(server)
    server.enqueue_chat(
        "Five business days.",
        prompt_tokens=1000,
        completion_tokens=100,
        cached_tokens=400,
        reasoning_tokens=30,
    )
    response = index.as_query_engine(llm=_llm(server), similarity_top_k=2).query(QUESTION)
    assert str(response) == "Five business days."
    assert server.last_request["model"] == "gpt-4o-mini"

    spans = _query_trace(li, "RetrieverQueryEngine.query")
    assert all(s["status"] == "ok" and s["framework"] == "llama_index" for s in spans)
    (llm,) = [s for s in spans if s["kind"] == "llm"]
    assert llm["name"] == "OpenAI.chat"  # a chat model: predict → chat
    assert _tokens(llm) == (1000, 100, 400, 30, 1100)
    _assert_priced(llm, 1000, 100, cached=400)
    assert llm["cost_usd"] == pytest.approx(0.00018, rel=1e-12)  # 600·0.15 + 400·0.075 + 100·0.60
    assert llm["ttft_ms"] is None and llm["output"] == "Five business days."
    messages = json.loads(llm["input"])
    assert [m["role"] for m in messages] == ["system", "user"] and QUESTION in messages[1]["content"]
    assert llm["attributes"]["invocation_params"]["temperature"] == 0.1
    assert llm["prompt_name"] == "text_qa" and len(llm["prompt_version"]) == 12

    (embedding,) = [s for s in spans if s["kind"] == "embedding"]
    assert (embedding["model"], embedding["provider"]) == ("text-embedding-3-small", "openai")
    assert json.loads(embedding["output"]) == {"embeddings": 1, "dimensions": 1536}
    assert embedding["cost_usd"] is None  # LlamaIndex does not hand on embedding usage

    (retriever,) = [s for s in spans if s["kind"] == "retriever"]
    docs = fetch(li.database_url, "retrieved_documents", "rank", span_id=retriever["span_id"])
    assert [(d["document_id"], d["content"]) for d in docs] == [
        (n.node.node_id, n.node.text) for n in response.source_nodes
    ]
    assert [d["score"] for d in docs] == [pytest.approx(n.score, rel=1e-12) for n in response.source_nodes]
    assert li.stats()["unpriced"] == {} and li.stats()["handler_errors"] == {}


@pytest.mark.parametrize("stream_usage", [True, False], ids=["with-usage", "without-usage"])
def test_streamed_query_is_timed_to_the_end_of_the_stream(
    li: LLMObs, server: FakeOpenAIServer, stream_usage: bool
) -> None:
    index = _index(server)
    server.enqueue_chat(
        "one two three four five", prompt_tokens=50, completion_tokens=8, cached_tokens=10, chunk_delay=0.02
    )
    engine = index.as_query_engine(llm=_llm(server, stream_usage=stream_usage), streaming=True)
    response = engine.query(QUESTION)
    assert "".join(response.response_gen) == "one two three four five"
    assert ("stream_options" in server.last_request) is stream_usage

    spans = _query_trace(li, "RetrieverQueryEngine.query")
    (llm,) = [s for s in spans if s["kind"] == "llm"]
    assert llm["name"] == "OpenAI.stream_chat" and llm["status"] == "ok"
    assert llm["output"] == "one two three four five"
    assert llm["latency_ms"] >= 5 * 20 * 0.9 and 0 < llm["ttft_ms"] < llm["latency_ms"]
    assert llm["model"] == "gpt-4o-mini" and llm["response_model"] == MINI_SNAPSHOT
    if stream_usage:  # the usage chunk comes last
        assert _tokens(llm) == (50, 8, 10, 0, 58)
        _assert_priced(llm, 50, 8, cached=10)
    else:
        assert _tokens(llm) == (None,) * 5 and llm["cost_usd"] is None  # unknown, not 0


def test_chat_engine_turns(li: LLMObs, server: FakeOpenAIServer) -> None:
    engine = SimpleChatEngine.from_defaults(llm=_llm(server))
    server.enqueue_chat("Hello!", prompt_tokens=20, completion_tokens=3)
    server.enqueue_chat("Five days.", prompt_tokens=40, completion_tokens=4)
    with li.context(session_id="chat-1", user_id="u-7"):
        assert str(engine.chat("hi")) == "Hello!"
        assert str(engine.chat(QUESTION)) == "Five days."
    rows = _rows(li)
    roots = [r for r in rows if r["parent_span_id"] is None]
    assert [r["name"] for r in roots] == ["SimpleChatEngine.chat", "SimpleChatEngine.chat"]
    llms = [r for r in rows if r["kind"] == "llm"]
    assert [(r["name"], r["input_tokens"], r["output_tokens"], r["output"]) for r in llms] == [
        ("OpenAI.chat", 20, 3, "Hello!"),
        ("OpenAI.chat", 40, 4, "Five days."),
    ]
    assert [r["trace_id"] for r in llms] == [r["span_id"] for r in roots]
    assert [m["role"] for m in json.loads(llms[1]["input"])][-3:] == ["user", "assistant", "user"]
    assert {(r["session_id"], r["user_id"]) for r in rows} == {("chat-1", "u-7")}
    assert sum(r["cost_usd"] for r in llms) == pytest.approx(_cost(20, 3) + _cost(40, 4), rel=1e-12)


def _add(a: int, b: int) -> int:
    """Add two numbers."""
    if a < 0:
        raise ValueError("only non-negative numbers")
    return a + b


@pytest.mark.parametrize("a", [2, -2], ids=["ok", "tool-error"])
async def test_function_calling_agent_with_a_tool(li: LLMObs, server: FakeOpenAIServer, a: int) -> None:
    server.enqueue_chat(
        None,
        tool_calls=[{"name": "_add", "arguments": {"a": a, "b": 3}, "id": "call_1"}],
        prompt_tokens=100,
        completion_tokens=20,
    )
    server.enqueue_chat("The answer is 5.", prompt_tokens=150, completion_tokens=10)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(_add)], llm=_llm(server))
    with li.context(session_id="agent-1", user_id="u-1"):  # reaches the workflow's step tasks
        result = await agent.run(f"what is {a}+3?")
    assert str(result) == "The answer is 5."
    assert server.requests[0]["stream"] is True  # the agent streams its LLM calls

    spans = _query_trace(li, "FunctionAgent.run")
    root = spans[0]
    assert (
        root["kind"] == "agent"
        and root["input"] == f"what is {a}+3?"
        and root["output"] == "The answer is 5."
    )
    assert {(s["session_id"], s["user_id"]) for s in spans} == {("agent-1", "u-1")}
    llms = [s for s in spans if s["kind"] == "llm"]
    assert [(s["name"], s["input_tokens"], s["output_tokens"]) for s in llms] == [
        ("OpenAI.astream_chat", 100, 20),
        ("OpenAI.astream_chat", 150, 10),
    ]
    for s in llms:
        assert (s["model"], s["response_model"]) == ("gpt-4o-mini", MINI_SNAPSHOT)
        assert s["ttft_ms"] is not None
    assert json.loads(llms[0]["output"])["tool_calls"][0]["function"]["name"] == "_add"
    assert sum(s["cost_usd"] for s in spans if s["cost_usd"]) == pytest.approx(
        _cost(100, 20) + _cost(150, 10), rel=1e-12
    )
    (tool,) = [s for s in spans if s["kind"] == "tool"]  # call_tool and FunctionTool.acall: one span
    assert tool["name"] == "_add" and json.loads(tool["input"]) == {"a": a, "b": 3}
    by_id = {s["span_id"]: s for s in spans}
    assert by_id[tool["parent_span_id"]] is root
    if a >= 0:
        assert (tool["status"], tool["output"]) == ("ok", "5")
    else:  # the agent hands the error to the LLM and goes on: the tool span keeps it
        assert (tool["status"], tool["error_type"], tool["error_message"]) == (
            "error",
            "ValueError",
            "only non-negative numbers",
        )
        assert root["status"] == "ok"


@pytest.mark.parametrize("status", [500, 429])
def test_http_error_reaches_the_user_and_marks_the_llm_and_its_ancestors(
    li: LLMObs, server: FakeOpenAIServer, status: int
) -> None:
    index = _index(server)
    server.enqueue_error(status)
    engine = index.as_query_engine(llm=_llm(server))
    expected = openai.InternalServerError if status == 500 else openai.RateLimitError
    with pytest.raises(expected) as info:
        engine.query(QUESTION)
    spans = _query_trace(li, "RetrieverQueryEngine.query")
    (llm,) = [s for s in spans if s["kind"] == "llm"]
    assert llm["status"] == "error" and llm["error_type"] == expected.__name__
    assert llm["error_message"] == str(info.value)
    assert llm["input_tokens"] is None and llm["cost_usd"] is None
    assert spans[0]["status"] == "error" and spans[0]["error_type"] == expected.__name__
    assert [s["status"] for s in spans if s["kind"] in ("retriever", "embedding")] == ["ok", "ok"]
