"""The fake OpenAI server answers like the real API, seen through the real clients."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import openai
import pytest
from fake_openai import (
    DEFAULT_CHAT_CONTENT,
    DEFAULT_COMPLETION_TEXT,
    FakeOpenAIServer,
    fake_embedding,
)
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAI, OpenAIEmbeddings

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as c:
        yield c


def chat_model(server: FakeOpenAIServer, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="test",
        model="gpt-4o-mini",
        max_retries=0,
        **kwargs,
    )


def merge(chunks: Iterable[AIMessageChunk]) -> AIMessageChunk:
    merged: AIMessageChunk | None = None
    for chunk in chunks:
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    return merged


async def amerge(chunks: AsyncIterator[AIMessageChunk]) -> AIMessageChunk:
    merged: AIMessageChunk | None = None
    async for chunk in chunks:
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    return merged


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


# ---------------------------------------------------------------- raw openai client


def test_chat_completion_usage_and_model(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.enqueue_chat(
        "Hi there",
        prompt_tokens=12,
        completion_tokens=3,
        cached_tokens=4,
        reasoning_tokens=2,
    )
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.choices[0].message.content == "Hi there"
    assert response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        12,
        3,
        15,
    )
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 2
    assert response._request_id is not None
    assert server.requests == [{"model": "gpt-4o-mini", "messages": MESSAGES}]
    assert server.calls[0].path == "/v1/chat/completions"
    assert server.calls[0].headers["authorization"] == "Bearer test"


def test_default_answer_when_nothing_is_queued(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="my-model", messages=MESSAGES)

    assert response.choices[0].message.content == DEFAULT_CHAT_CONTENT
    assert response.model == "my-model"  # unknown models are echoed
    assert response.usage is not None and response.usage.total_tokens == 15


def test_queued_answers_are_served_in_order(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.enqueue_chat("first").enqueue_chat("second", model="custom-model")
    assert server.pending() == server.pending("chat") == 2

    first = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    second = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert (first.choices[0].message.content, first.model) == (
        "first",
        "gpt-4o-2024-08-06",
    )
    assert (second.choices[0].message.content, second.model) == (
        "second",
        "custom-model",
    )
    assert server.pending() == 0
    server.enqueue_chat("x")
    server.reset()
    assert server.pending() == 0 and server.requests == []


def test_stream_with_include_usage_ends_with_a_usage_chunk(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.enqueue_chat("one two three", prompt_tokens=7, completion_tokens=3, cached_tokens=1)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    *content_chunks, usage_chunk = chunks
    assert len(content_chunks) >= 4  # role, several words, finish
    assert all(c.usage is None for c in content_chunks)
    assert content_chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == "one two three"
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.total_tokens == 10
    assert usage_chunk.usage.prompt_tokens_details is not None
    assert usage_chunk.usage.prompt_tokens_details.cached_tokens == 1
    assert {c.model for c in chunks} == {"gpt-4o-mini-2024-07-18"}
    assert len({c.id for c in chunks}) == 1


def test_stream_without_include_usage_has_no_usage(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == DEFAULT_CHAT_CONTENT


@pytest.mark.parametrize(
    ("status", "error", "error_type", "code"),
    [
        (500, openai.InternalServerError, "server_error", None),
        (503, openai.InternalServerError, "server_error", None),
        (429, openai.RateLimitError, "requests", "rate_limit_exceeded"),
        (400, openai.BadRequestError, "invalid_request_error", None),
        (401, openai.AuthenticationError, "invalid_request_error", "invalid_api_key"),
    ],
)
def test_errors_raise_the_matching_openai_exception(
    server: FakeOpenAIServer,
    client: openai.OpenAI,
    status: int,
    error: type[openai.APIStatusError],
    error_type: str,
    code: str | None,
) -> None:
    server.enqueue_error(status, "boom", retry_after=2)

    with pytest.raises(error) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert info.value.status_code == status
    assert info.value.body == {
        "message": "boom",
        "type": error_type,
        "param": None,
        "code": code,
    }
    assert info.value.response.headers["retry-after"] == "2"
    assert len(server.requests) == 1  # max_retries=0: no retry
    # the error was consumed: the next call gets the default answer
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_error_type_and_code_can_be_overridden(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.enqueue_error(429, "quota", error_type="insufficient_quota", code="insufficient_quota")
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.code == "insufficient_quota"
    assert info.value.type == "insufficient_quota"
    assert "quota" in str(info.value)


def test_stream_error_after_some_chunks(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.enqueue_chat("a b c d", stream_error_after=2)
    received: list[str] = []
    with pytest.raises(openai.APIError, match="server had an error"):
        for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "a b"


def test_usage_can_be_left_out(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.enqueue_chat(usage_details=False).enqueue_chat(include_usage=False)

    bare = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    missing = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert bare.usage is not None and bare.usage.total_tokens == 15
    assert bare.usage.prompt_tokens_details is None
    assert bare.usage.completion_tokens_details is None
    assert missing.usage is None


def test_legacy_completions(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.enqueue_completion(" done", prompt_tokens=4, completion_tokens=1)
    response = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=["a", "b"])
    assert [c.text for c in response.choices] == [" done", " done"]
    assert [c.index for c in response.choices] == [0, 1]
    assert response.usage is not None and response.usage.total_tokens == 5

    server.enqueue_completion(" one two", prompt_tokens=4, completion_tokens=2)
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="a",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " one two"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def test_embeddings_float_base64_and_token_inputs(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    model = "text-embedding-3-small"
    # the openai client asks for base64 by default and decodes it
    decoded = client.embeddings.create(model=model, input=["hello world", "x"])
    assert server.last_request["encoding_format"] == "base64"
    plain = client.embeddings.create(model=model, input=["hello world", "x"], encoding_format="float")
    assert [d.embedding for d in decoded.data] == [d.embedding for d in plain.data]
    assert [len(d.embedding) for d in plain.data] == [1536, 1536]
    assert plain.data[0].embedding == fake_embedding("hello world", 1536)
    assert plain.data[0].embedding != plain.data[1].embedding
    assert (plain.usage.prompt_tokens, plain.usage.total_tokens) == (3, 3)
    assert plain.model == model

    single = client.embeddings.create(model=model, input="hello world", dimensions=8)
    assert len(single.data) == 1 and len(single.data[0].embedding) == 8

    tokens = client.embeddings.create(model=model, input=[1, 2, 3])
    assert len(tokens.data) == 1 and tokens.usage.prompt_tokens == 3
    batch = client.embeddings.create(model="text-embedding-3-large", input=[[1, 2], [3]])
    assert [len(d.embedding) for d in batch.data] == [3072, 3072]

    server.enqueue_embeddings(prompt_tokens=42, model="text-embedding-3-small-v2")
    overridden = client.embeddings.create(model=model, input="x")
    assert overridden.usage.prompt_tokens == 42
    assert overridden.model == "text-embedding-3-small-v2"

    server.enqueue_error(500, endpoint="embeddings")
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model=model, input="x")


def test_models_and_unknown_paths(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert "gpt-4o-mini-2024-07-18" in ids

    request = urllib.request.Request(f"{server.base_url}/nope", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 404
    assert json.loads(info.value.read())["error"]["type"] == "invalid_request_error"


def test_stop_closes_the_port(server: FakeOpenAIServer) -> None:
    c = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # keep-alive
    server.stop()
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    c.close()


# ---------------------------------------------------------------- langchain-openai


def test_chat_openai_invoke_usage_metadata(server: FakeOpenAIServer) -> None:
    server.enqueue_chat(
        "Hello!",
        prompt_tokens=120,
        completion_tokens=30,
        cached_tokens=100,
        reasoning_tokens=20,
    )
    message = chat_model(server).invoke("hi")

    assert isinstance(message, AIMessage)
    assert message.content == "Hello!"
    assert message.usage_metadata == {
        "input_tokens": 120,
        "output_tokens": 30,
        "total_tokens": 150,
        "input_token_details": {"audio": 0, "cache_read": 100},
        "output_token_details": {"audio": 0, "reasoning": 20},
    }
    metadata = message.response_metadata
    assert metadata["model_name"] == "gpt-4o-mini-2024-07-18"
    assert metadata["finish_reason"] == "stop"
    assert metadata["model_provider"] == "openai"
    assert metadata["token_usage"]["prompt_tokens_details"]["cached_tokens"] == 100
    assert server.last_request["model"] == "gpt-4o-mini"
    assert server.last_request["messages"] == MESSAGES
    assert server.last_request["stream"] is False  # langchain sends it explicitly


def test_chat_openai_stream_usage(server: FakeOpenAIServer) -> None:
    server.enqueue_chat(
        "streamed words here",
        prompt_tokens=9,
        completion_tokens=3,
        cached_tokens=2,
        reasoning_tokens=1,
    )
    chunks = list(chat_model(server, stream_usage=True).stream("hi"))
    merged = merge(chunks)

    assert len(chunks) > 3
    assert merged.content == "streamed words here"
    assert merged.usage_metadata == {
        "input_tokens": 9,
        "output_tokens": 3,
        "total_tokens": 12,
        "input_token_details": {"audio": 0, "cache_read": 2},
        "output_token_details": {"audio": 0, "reasoning": 1},
    }
    assert merged.response_metadata["model_name"] == "gpt-4o-mini-2024-07-18"
    assert merged.response_metadata["finish_reason"] == "stop"
    assert server.last_request["stream"] is True
    assert server.last_request["stream_options"] == {"include_usage": True}


def test_chat_openai_stream_needs_stream_usage_on_a_custom_base_url(
    server: FakeOpenAIServer,
) -> None:
    merged = merge(chat_model(server).stream("hi"))

    assert merged.content == DEFAULT_CHAT_CONTENT
    assert merged.usage_metadata is None
    assert "stream_options" not in server.last_request


@pytest.mark.asyncio
async def test_chat_openai_async(server: FakeOpenAIServer) -> None:
    model = chat_model(server, stream_usage=True)
    server.enqueue_chat("async", prompt_tokens=3, completion_tokens=1)
    server.enqueue_chat("async stream", prompt_tokens=4, completion_tokens=2)

    message = await model.ainvoke("hi")
    merged = await amerge(model.astream("hi"))

    assert message.content == "async"
    assert message.usage_metadata is not None
    assert message.usage_metadata["total_tokens"] == 4
    assert merged.content == "async stream"
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["total_tokens"] == 6


def test_chat_openai_tool_calls(server: FakeOpenAIServer) -> None:
    model = chat_model(server).bind_tools([get_weather])
    server.enqueue_chat(
        tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}],
        prompt_tokens=50,
        completion_tokens=8,
    )

    message = model.invoke("weather in Paris?")

    assert isinstance(message, AIMessage)
    assert message.content == ""
    assert message.tool_calls == [
        {
            "name": "get_weather",
            "args": {"city": "Paris"},
            "id": "call_1",
            "type": "tool_call",
        }
    ]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert message.usage_metadata is not None
    assert message.usage_metadata["total_tokens"] == 58
    tools = server.last_request["tools"]
    assert [t["function"]["name"] for t in tools] == ["get_weather"]


def test_chat_openai_streamed_tool_calls(server: FakeOpenAIServer) -> None:
    model = chat_model(server, stream_usage=True).bind_tools([get_weather])
    server.enqueue_chat(
        tool_calls=[
            {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_a"},
            {"name": "get_weather", "arguments": '{"city": "Rome"}', "id": "call_b"},
        ],
        prompt_tokens=50,
        completion_tokens=16,
    )

    merged = merge(model.stream("weather?"))

    assert [(c["id"], c["args"]) for c in merged.tool_calls] == [
        ("call_a", {"city": "Paris"}),
        ("call_b", {"city": "Rome"}),
    ]
    assert merged.response_metadata["finish_reason"] == "tool_calls"
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["total_tokens"] == 66


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, openai.InternalServerError), (429, openai.RateLimitError)],
)
@pytest.mark.parametrize("streaming", [False, True])
def test_chat_openai_errors(
    server: FakeOpenAIServer,
    status: int,
    error: type[openai.APIStatusError],
    streaming: bool,
) -> None:
    server.enqueue_error(status)
    model = chat_model(server, stream_usage=True)

    with pytest.raises(error) as info:
        if streaming:
            list(model.stream("hi"))
        else:
            model.invoke("hi")

    assert info.value.status_code == status
    assert len(server.requests) == 1


def test_chat_openai_error_mid_stream(server: FakeOpenAIServer) -> None:
    server.enqueue_chat("a b c", stream_error_after=1)
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in chat_model(server, stream_usage=True).stream("hi"):
            received.append(str(chunk.content))
    assert "".join(received) == "a"


def test_openai_embeddings(server: FakeOpenAIServer) -> None:
    embeddings = OpenAIEmbeddings(
        base_url=server.base_url,
        api_key="test",
        model="text-embedding-3-small",
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    vectors = embeddings.embed_documents(["alpha", "beta gamma", "delta"])
    query = embeddings.embed_query("alpha")

    assert len(vectors) == 3
    assert {len(v) for v in vectors} == {1536}
    assert query == vectors[0] == fake_embedding("alpha", 1536)
    assert server.requests[0]["input"] == ["alpha", "beta gamma", "delta"]

    small = OpenAIEmbeddings(
        base_url=server.base_url,
        api_key="test",
        model="text-embedding-3-large",
        dimensions=256,
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    assert len(small.embed_query("alpha")) == 256
    assert server.last_request["dimensions"] == 256


def test_openai_text_llm(server: FakeOpenAIServer) -> None:
    llm = OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    server.enqueue_completion(" Paris.", prompt_tokens=6, completion_tokens=2)

    result = llm.generate(["Capital of France?", "Again?"])

    assert [g[0].text for g in result.generations] == [" Paris.", " Paris."]
    assert result.llm_output is not None
    assert result.llm_output["token_usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": 2,
        "total_tokens": 8,
    }
    assert result.llm_output["model_name"] == "gpt-3.5-turbo-instruct"
    assert server.last_request["prompt"] == ["Capital of France?", "Again?"]

    assert llm.invoke("x") == DEFAULT_COMPLETION_TEXT
    pieces = list(llm.stream("x"))
    assert len(pieces) > 2
    assert "".join(pieces) == DEFAULT_COMPLETION_TEXT
    assert server.last_request["stream"] is True

    server.enqueue_error(429, endpoint="completions")
    with pytest.raises(openai.RateLimitError):
        llm.invoke("x")


def test_concurrent_requests(server: FakeOpenAIServer) -> None:
    messages = chat_model(server).batch([f"q{i}" for i in range(8)])

    assert [m.content for m in messages] == [DEFAULT_CHAT_CONTENT] * 8
    prompts = sorted(r["messages"][0]["content"] for r in server.requests)
    assert prompts == [f"q{i}" for i in range(8)]
