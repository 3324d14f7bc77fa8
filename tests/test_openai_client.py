"""End to end through the real OpenAI clients: langchain_openai -> openai -> HTTP -> fake server.

Every test drives ``langchain_openai.ChatOpenAI`` / ``OpenAI`` (``max_retries=0``) against the
local ``fake_openai`` server and asserts the exact rows our handler stores: tokens as the
server reported them, cost computed here by hand from the list prices, the model the
response named, status and error type, and the trace tree.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections import defaultdict

import openai
import pytest
from conftest import fetch
from fake_openai import FakeOpenAIServer, fake_openai  # noqa: F401 - the fixture
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langchain_openai import OpenAI as OpenAITextLLM

from llmobs_callbacks import LLMObs

# USD per 1M tokens (genai-prices).
# gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output (reasoning is billed as output).
MINI_IN, MINI_CACHED, MINI_OUT = 0.15, 0.075, 0.60
# gpt-3.5-turbo-instruct: $1.50 input, $2.00 output.
INSTRUCT_IN, INSTRUCT_OUT = 1.50, 2.00

MINI_SNAPSHOT = "gpt-4o-mini-2024-07-18"  # what the API answers for "gpt-4o-mini"


@pytest.fixture
def server(fake_openai: FakeOpenAIServer) -> FakeOpenAIServer:  # noqa: F811 - the imported fixture
    """The started fake OpenAI server (``fake_openai``), under a shorter name."""
    return fake_openai


def _mini_cost(prompt: int, completion: int, cached: int = 0) -> float:
    return ((prompt - cached) * MINI_IN + cached * MINI_CACHED + completion * MINI_OUT) / 1e6


def _chat(server: FakeOpenAIServer, **kwargs) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", api_key="test", base_url=server.base_url, max_retries=0, **kwargs)


def _rows(obs: LLMObs, **where) -> list[dict]:
    assert obs.flush()
    return fetch(obs.database_url, "spans", order_by="start_time", **where)


def _only_llm_row(obs: LLMObs) -> dict:
    rows = _rows(obs, kind="llm")
    assert len(rows) == 1, rows
    return rows[0]


def _assert_priced_mini(row: dict, prompt: int, completion: int, cached: int = 0) -> None:
    assert row["cost_usd"] == pytest.approx(_mini_cost(prompt, completion, cached), rel=1e-12)
    assert row["price_source"].startswith("genai-prices ")
    assert row["price_source"].endswith(":openai/gpt-4o-mini")


# ---------------------------------------------------------------------- 1 / 3: invoke


def _assert_invoke_row(row: dict) -> None:
    assert row["name"] == "ChatOpenAI" and row["kind"] == "llm"
    assert row["status"] == "ok" and row["error_type"] is None and row["error_message"] is None
    # the response's model (a snapshot) beside the requested alias, which is the grouping key
    assert (row["model"], row["request_model"], row["response_model"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini",
        MINI_SNAPSHOT,
    )
    assert row["provider"] == "openai"
    assert (
        row["input_tokens"],
        row["output_tokens"],
        row["cached_input_tokens"],
        row["reasoning_tokens"],
        row["total_tokens"],
        row["cache_write_tokens"],
    ) == (1000, 100, 400, 30, 1100, None)
    # 600 uncached + 400 cached input, 100 output (the 30 reasoning tokens are inside the 100)
    _assert_priced_mini(row, 1000, 100, cached=400)
    assert row["cost_usd"] == pytest.approx(0.00018, rel=1e-12)
    assert row["ttft_ms"] is None  # nothing was streamed
    assert row["latency_ms"] > 0
    assert row["parent_span_id"] is None and row["trace_id"] == row["span_id"]
    assert [m["content"] for m in json.loads(row["input"])] == ["What is 2+2?"]
    assert json.loads(row["output"])["content"] == "Four."
    assert (row["service"], row["environment"]) == ("test-svc", "test")


def _enqueue_invoke_answer(server: FakeOpenAIServer) -> None:
    server.enqueue_chat(
        "Four.", prompt_tokens=1000, completion_tokens=100, cached_tokens=400, reasoning_tokens=30
    )


def test_invoke_tokens_cost_and_snapshot_model(obs: LLMObs, server: FakeOpenAIServer) -> None:
    _enqueue_invoke_answer(server)
    message = _chat(server).invoke("What is 2+2?", config={"callbacks": [obs.langchain_handler()]})
    assert message.content == "Four."
    assert server.last_request["model"] == "gpt-4o-mini"
    _assert_invoke_row(_only_llm_row(obs))


async def test_ainvoke_tokens_cost_and_snapshot_model(obs: LLMObs, server: FakeOpenAIServer) -> None:
    _enqueue_invoke_answer(server)
    message = await _chat(server).ainvoke("What is 2+2?", config={"callbacks": [obs.langchain_handler()]})
    assert message.content == "Four."
    _assert_invoke_row(_only_llm_row(obs))


# ---------------------------------------------------------------------- 2 / 3: streaming

STREAMED = "one two three four five"


def _enqueue_stream_answer(server: FakeOpenAIServer) -> None:
    server.enqueue_chat(STREAMED, prompt_tokens=50, completion_tokens=8, cached_tokens=10, chunk_delay=0.01)


def _assert_streamed_row(row: dict, *, with_usage: bool) -> None:
    assert row["status"] == "ok" and row["kind"] == "llm"
    assert row["model"] == "gpt-4o-mini" and row["response_model"] == MINI_SNAPSHOT
    assert row["provider"] == "openai"
    assert json.loads(row["output"])["content"] == STREAMED  # every chunk, merged
    assert row["ttft_ms"] is not None and 0 < row["ttft_ms"] <= row["latency_ms"]
    if with_usage:
        # the usage arrives on the final chunk, which has no choices
        assert (
            row["input_tokens"],
            row["output_tokens"],
            row["cached_input_tokens"],
            row["reasoning_tokens"],
            row["total_tokens"],
        ) == (50, 8, 10, 0, 58)
        _assert_priced_mini(row, 50, 8, cached=10)
        assert row["cost_usd"] == pytest.approx((40 * 0.15 + 10 * 0.075 + 8 * 0.60) / 1e6, rel=1e-12)
    else:
        for col in (
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "reasoning_tokens",
            "total_tokens",
            "cost_usd",
            "price_source",
        ):
            assert row[col] is None, col  # unknown, not 0


def test_stream_with_usage_from_final_chunk(obs: LLMObs, server: FakeOpenAIServer) -> None:
    _enqueue_stream_answer(server)
    llm = _chat(server, stream_usage=True)
    chunks = list(llm.stream("count", config={"callbacks": [obs.langchain_handler()]}))
    assert "".join(c.content for c in chunks) == STREAMED
    assert server.last_request["stream_options"] == {"include_usage": True}
    _assert_streamed_row(_only_llm_row(obs), with_usage=True)


def test_stream_without_usage_is_null_not_zero(obs: LLMObs, server: FakeOpenAIServer) -> None:
    _enqueue_stream_answer(server)
    llm = _chat(server, stream_usage=False)
    chunks = list(llm.stream("count", config={"callbacks": [obs.langchain_handler()]}))
    assert "".join(c.content for c in chunks) == STREAMED
    assert "stream_options" not in server.last_request
    _assert_streamed_row(_only_llm_row(obs), with_usage=False)
    assert obs.stats()["unpriced"] == {}  # nothing to price is not "unpriced"


async def test_astream_with_usage_from_final_chunk(obs: LLMObs, server: FakeOpenAIServer) -> None:
    _enqueue_stream_answer(server)
    llm = _chat(server, stream_usage=True)
    chunks = [c async for c in llm.astream("count", config={"callbacks": [obs.langchain_handler()]})]
    assert "".join(c.content for c in chunks) == STREAMED
    _assert_streamed_row(_only_llm_row(obs), with_usage=True)


async def test_astream_without_usage_is_null_not_zero(obs: LLMObs, server: FakeOpenAIServer) -> None:
    _enqueue_stream_answer(server)
    llm = _chat(server, stream_usage=False)
    chunks = [c async for c in llm.astream("count", config={"callbacks": [obs.langchain_handler()]})]
    assert "".join(c.content for c in chunks) == STREAMED
    _assert_streamed_row(_only_llm_row(obs), with_usage=False)


# ---------------------------------------------------------------------- 4: HTTP errors


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("status", "openai_error", "message"),
    [
        (500, openai.InternalServerError, "The server had an error"),
        (429, openai.RateLimitError, "Rate limit reached for requests"),
    ],
    ids=["500", "429"],
)
def test_http_error_reaches_user_and_marks_llm_and_chain(
    obs: LLMObs,
    server: FakeOpenAIServer,
    status: int,
    openai_error: type[Exception],
    message: str,
    use_async: bool,
) -> None:
    server.enqueue_error(status)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | _chat(server)
    config = {"callbacks": [obs.langchain_handler()]}
    with pytest.raises(openai_error) as info:
        if use_async:
            asyncio.run(chain.ainvoke({"q": "hi"}, config=config))
        else:
            chain.invoke({"q": "hi"}, config=config)
    assert len(server.requests) == 1  # max_retries=0: one attempt
    raised = type(info.value).__name__  # langchain_openai's subclass of the openai error

    rows = {r["name"]: r for r in _rows(obs)}
    assert set(rows) == {"RunnableSequence", "ChatPromptTemplate", "ChatOpenAI"}
    llm, prompt, root = rows["ChatOpenAI"], rows["ChatPromptTemplate"], rows["RunnableSequence"]
    assert llm["status"] == "error" and llm["error_type"] == raised
    # the message is the user's exception text, whatever the openai version formats it as
    assert llm["error_message"] == str(info.value)
    assert f"Error code: {status}" in llm["error_message"] and message in llm["error_message"]
    assert llm["model"] == "gpt-4o-mini" and llm["provider"] == "openai"
    assert (llm["request_model"], llm["response_model"]) == ("gpt-4o-mini", None)  # nothing answered
    assert llm["output"] is None  # not the HTTP error response LangChain attaches
    for col in ("input_tokens", "output_tokens", "total_tokens", "cost_usd"):
        assert llm[col] is None, col
    assert root["status"] == "error" and root["error_type"] == raised
    assert root["error_message"] == str(info.value)
    assert root["parent_span_id"] is None
    assert prompt["status"] == "ok" and prompt["error_type"] is None
    assert {r["trace_id"] for r in rows.values()} == {root["span_id"]}
    assert llm["parent_span_id"] == root["span_id"] == prompt["parent_span_id"]


# ---------------------------------------------------------------------- 5: tool-calling agent


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"It is sunny in {city}."


def _react_agent(llm: ChatOpenAI):
    # langchain.agents.create_agent is not installed; the langgraph one is deprecated in v1.
    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="create_react_agent has been moved")
        return create_react_agent(llm, [get_weather])


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_react_agent_tool_call_trace(obs: LLMObs, server: FakeOpenAIServer, use_async: bool) -> None:
    server.enqueue_chat(
        tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_weather_1"}],
        prompt_tokens=60,
        completion_tokens=15,
    )
    server.enqueue_chat("It is sunny in Paris today.", prompt_tokens=90, completion_tokens=9)
    agent = _react_agent(_chat(server))
    state = {"messages": [("user", "What is the weather in Paris?")]}
    config = {"callbacks": [obs.langchain_handler()], "metadata": {"session_id": "agent-session"}}
    if use_async:
        result = asyncio.run(agent.ainvoke(state, config=config))
    else:
        result = agent.invoke(state, config=config)
    assert result["messages"][-1].content == "It is sunny in Paris today."
    first, second = server.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    assert second["messages"][-1] == {
        "content": "It is sunny in Paris.",
        "role": "tool",
        "tool_call_id": "call_weather_1",
    }

    rows = _rows(obs)
    by_id = {r["span_id"]: r for r in rows}
    roots = [r for r in rows if r["parent_span_id"] is None]
    assert len(roots) == 1
    root = roots[0]
    assert root["name"] == "LangGraph" and root["status"] == "ok"
    trace_id = root["span_id"]
    assert {r["trace_id"] for r in rows} == {trace_id}
    assert all(r["parent_span_id"] in by_id for r in rows if r is not root)  # one connected tree
    assert {r["session_id"] for r in rows} == {"agent-session"}
    assert all(r["status"] == "ok" for r in rows)

    llms = [r for r in rows if r["kind"] == "llm"]
    assert [(r["input_tokens"], r["output_tokens"], r["total_tokens"]) for r in llms] == [
        (60, 15, 75),
        (90, 9, 99),
    ]
    assert [(r["model"], r["response_model"], r["provider"]) for r in llms] == [
        ("gpt-4o-mini", MINI_SNAPSHOT, "openai")
    ] * 2
    _assert_priced_mini(llms[0], 60, 15)
    _assert_priced_mini(llms[1], 90, 9)
    assert json.loads(llms[0]["output"])["tool_calls"][0]["args"] == {"city": "Paris"}

    nodes = [r for r in rows if r["kind"] == "graph_node"]
    assert [n["name"] for n in nodes] == ["agent", "tools", "agent"]
    assert all(n["parent_span_id"] == trace_id for n in nodes)
    # each model call is inside the agent node that made it
    for llm, node in zip(llms, (nodes[0], nodes[2]), strict=True):
        ancestor = by_id[llm["parent_span_id"]]
        while ancestor["kind"] != "graph_node":
            ancestor = by_id[ancestor["parent_span_id"]]
        assert ancestor["span_id"] == node["span_id"]

    tools = [r for r in rows if r["kind"] == "tool"]
    assert len(tools) == 1
    tool_row = tools[0]
    assert tool_row["name"] == "get_weather" and tool_row["status"] == "ok"
    assert json.loads(tool_row["input"]) == {"city": "Paris"}
    tool_output = json.loads(tool_row["output"])
    assert tool_output["content"] == "It is sunny in Paris."
    assert tool_output["tool_call_id"] == "call_weather_1"
    assert tool_row["parent_span_id"] == nodes[1]["span_id"]  # run by the tools node
    assert tool_row["start_time"] >= nodes[1]["start_time"]
    assert tool_row["end_time"] <= nodes[1]["end_time"]

    decisions = fetch(obs.database_url, "branch_decisions")
    assert sorted((d["graph"], d["from_node"], d["to_node"], d["condition"]) for d in decisions) == [
        ("LangGraph", "agent", "__end__", "should_continue"),
        ("LangGraph", "agent", "tools", "should_continue"),
    ]
    assert {d["trace_id"] for d in decisions} == {trace_id}
    # each decision points at the routing function's span, under the agent node that routed
    routers = {d["to_node"]: by_id[d["span_id"]] for d in decisions}
    assert {r["name"] for r in routers.values()} == {"should_continue"}
    assert routers["tools"]["parent_span_id"] == nodes[0]["span_id"]
    assert routers["__end__"]["parent_span_id"] == nodes[2]["span_id"]


# ---------------------------------------------------------------------- 6: text completions


def test_text_llm_tokens_from_llm_output(obs: LLMObs, server: FakeOpenAIServer) -> None:
    server.enqueue_completion(" a fine answer.", prompt_tokens=11, completion_tokens=7)
    llm = OpenAITextLLM(
        model="gpt-3.5-turbo-instruct", api_key="test", base_url=server.base_url, max_retries=0
    )
    text = llm.invoke("Complete this:", config={"callbacks": [obs.langchain_handler()]})
    assert text == " a fine answer."
    assert server.last_request["prompt"] == ["Complete this:"]
    row = _only_llm_row(obs)
    assert row["name"] == "OpenAI" and row["status"] == "ok"
    assert row["model"] == "gpt-3.5-turbo-instruct" and row["provider"] == "openai"
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (11, 7, 18)
    assert (row["cached_input_tokens"], row["reasoning_tokens"], row["cache_write_tokens"]) == (
        None,
        None,
        None,
    )
    assert row["cost_usd"] == pytest.approx((11 * INSTRUCT_IN + 7 * INSTRUCT_OUT) / 1e6, rel=1e-12)
    assert row["price_source"].endswith(":openai/gpt-3.5-turbo-instruct")
    assert row["input"] == "Complete this:" and row["output"] == " a fine answer."


# ---------------------------------------------------------------------- 7: concurrency

CONCURRENT = 20


async def test_concurrent_ainvokes_make_separate_traces(obs: LLMObs, server: FakeOpenAIServer) -> None:
    for i in range(CONCURRENT):
        # the delay keeps all requests in flight at once; tokens differ per answer
        server.enqueue_chat(f"answer {i}", prompt_tokens=100 + i, completion_tokens=10 + i, delay=0.3)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | _chat(server)
    handler = obs.langchain_handler()
    results = await asyncio.gather(
        *(
            chain.ainvoke(
                {"q": f"question {i}"},
                config={"callbacks": [handler], "metadata": {"session_id": f"session-{i}"}},
            )
            for i in range(CONCURRENT)
        )
    )
    assert len(server.requests) == CONCURRENT and server.pending() == 0

    rows = _rows(obs)
    assert len(rows) == 3 * CONCURRENT
    traces: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        traces[row["trace_id"]].append(row)
    assert len(traces) == CONCURRENT
    by_session: dict[str, dict[str, dict]] = {}
    for trace_id, spans in traces.items():
        assert sorted(r["kind"] for r in spans) == ["chain", "llm", "prompt"]
        kinds = {r["kind"]: r for r in spans}
        root = kinds["chain"]
        assert root["span_id"] == trace_id and root["parent_span_id"] is None
        assert kinds["prompt"]["parent_span_id"] == kinds["llm"]["parent_span_id"] == trace_id
        sessions = {r["session_id"] for r in spans}
        assert len(sessions) == 1
        by_session[sessions.pop()] = kinds
        assert all(r["status"] == "ok" for r in spans)
    assert set(by_session) == {f"session-{i}" for i in range(CONCURRENT)}

    for i, message in enumerate(results):
        spans = by_session[f"session-{i}"]
        # the prompt, the request and the answer of this call, not another one's
        assert json.loads(spans["prompt"]["input"]) == {"q": f"question {i}"}
        llm = spans["llm"]
        assert json.loads(llm["input"])[0]["content"] == f"question {i}"
        assert json.loads(llm["output"])["content"] == message.content
        usage = message.usage_metadata
        prompt_tokens, completion_tokens = usage["input_tokens"], usage["output_tokens"]
        assert (llm["input_tokens"], llm["output_tokens"], llm["total_tokens"]) == (
            prompt_tokens,
            completion_tokens,
            prompt_tokens + completion_tokens,
        )
        assert llm["model"] == "gpt-4o-mini" and llm["response_model"] == MINI_SNAPSHOT
        _assert_priced_mini(llm, prompt_tokens, completion_tokens, cached=0)
    llms = [s["llm"] for s in by_session.values()]
    assert sorted(r["input_tokens"] for r in llms) == [100 + i for i in range(CONCURRENT)]
    assert sorted(r["output_tokens"] for r in llms) == [10 + i for i in range(CONCURRENT)]
    # really concurrent: every model call had started before the first one ended
    assert max(r["start_time"] for r in llms) < min(r["end_time"] for r in llms)
    stats = obs.stats()
    assert stats["open_spans"] == 0 and stats["handler_errors"] == {} and stats["spans_dropped"] == {}
