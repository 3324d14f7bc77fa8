"""Exact token counts, costs and time to first token, through real LangChain runs."""

from __future__ import annotations

import pytest
from conftest import fetch, spans_by_name
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from lc_fakes import ProviderUsageLLM, ai, chat

from llmobs_callbacks import LLMObs

# gpt-4o-mini (genai-prices): $0.15 input, $0.075 cached input, $0.60 output per 1M tokens.
GPT4O_MINI_IN, GPT4O_MINI_CACHED, GPT4O_MINI_OUT = 0.15, 0.075, 0.60


def _llm_row(url: str) -> dict:
    rows = [r for r in fetch(url, "spans") if r["kind"] == "llm"]
    assert len(rows) == 1
    return rows[0]


def test_usage_metadata_tokens_and_cost_exact(obs: LLMObs) -> None:
    llm = chat(ai("answer", 1000, 100, cached=400, reasoning=30, model_name="gpt-4o-mini-2024-07-18"))
    llm.invoke("q", config={"callbacks": [obs.langchain_handler()]})
    assert obs.flush()
    row = _llm_row(obs.database_url)
    assert (
        row["input_tokens"],
        row["output_tokens"],
        row["cached_input_tokens"],
        row["reasoning_tokens"],
        row["total_tokens"],
        row["cache_write_tokens"],
    ) == (1000, 100, 400, 30, 1100, None)
    # the requested model (ls_model_name) is the grouping key; the response's snapshot is kept and priced
    assert (row["model"], row["request_model"], row["response_model"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
    )
    assert row["provider"] == "openai"
    expected = (600 * GPT4O_MINI_IN + 400 * GPT4O_MINI_CACHED + 100 * GPT4O_MINI_OUT) / 1e6
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-12)
    assert row["cost_usd"] == pytest.approx(0.00018, rel=1e-12)
    assert row["price_source"].startswith("genai-prices ") and row["price_source"].endswith(
        "openai/gpt-4o-mini"
    )


def test_cache_write_tokens_priced_for_anthropic(obs: LLMObs) -> None:
    llm = chat(
        ai("a", 2000, 500, cached=1000, cache_write=500),
        model_name="claude-3-5-sonnet-20241022",
        provider="anthropic",
    )
    llm.invoke("q", config={"callbacks": [obs.langchain_handler()]})
    assert obs.flush()
    row = _llm_row(obs.database_url)
    assert row["cache_write_tokens"] == 500 and row["cached_input_tokens"] == 1000
    # $3 in, $0.30 cache read, $3.75 cache write, $15 out per 1M tokens
    expected = (500 * 3 + 1000 * 0.30 + 500 * 3.75 + 500 * 15) / 1e6
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-12)


def test_streamed_run_has_merged_usage_cost_and_ttft(obs: LLMObs) -> None:
    llm = chat(ai("one two three four", 50, 8, cached=10))
    chunks = list(llm.stream("q", config={"callbacks": [obs.langchain_handler()]}))
    assert "".join(c.content for c in chunks).strip() == "one two three four"
    assert obs.flush()
    row = _llm_row(obs.database_url)
    assert (row["input_tokens"], row["output_tokens"], row["cached_input_tokens"]) == (50, 8, 10)
    assert row["cost_usd"] == pytest.approx((40 * 0.15 + 10 * 0.075 + 8 * 0.6) / 1e6, rel=1e-12)
    assert row["ttft_ms"] is not None and 0 <= row["ttft_ms"] <= row["latency_ms"]
    assert "one two three four" in row["output"]


def test_invoke_has_no_ttft(obs: LLMObs) -> None:
    chat(ai("x", 1, 1)).invoke("q", config={"callbacks": [obs.langchain_handler()]})
    assert obs.flush()
    assert _llm_row(obs.database_url)["ttft_ms"] is None


def test_missing_usage_is_null_not_zero(obs: LLMObs) -> None:
    FakeListChatModel(responses=["no usage here"]).invoke(
        "q", config={"callbacks": [obs.langchain_handler()]}
    )
    assert obs.flush()
    row = _llm_row(obs.database_url)
    for col in ("input_tokens", "output_tokens", "total_tokens", "cached_input_tokens", "cost_usd"):
        assert row[col] is None, col
    assert obs.stats()["unpriced"] == {}  # nothing to price is not "unpriced"


def test_text_llm_usage_from_llm_output_token_usage(obs: LLMObs) -> None:
    ProviderUsageLLM().invoke("complete this", config={"callbacks": [obs.langchain_handler()]})
    assert obs.flush()
    row = _llm_row(obs.database_url)
    assert row["input"] == "complete this"
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (11, 7, 18)
    assert row["model"] == "gpt-3.5-turbo-instruct"
    assert row["cost_usd"] == pytest.approx((11 * 1.5 + 7 * 2.0) / 1e6, rel=1e-12)


def test_unknown_model_cost_null_and_counted(obs: LLMObs) -> None:
    llm = chat(ai("x", 100, 10), model_name="my-finetune-xyz", provider="openai")
    llm.invoke("q", config={"callbacks": [obs.langchain_handler()]})
    llm2 = chat(ai("x", 100, 10), model_name="llama3", provider="ollama")
    llm2.invoke("q", config={"callbacks": [obs.langchain_handler()]})
    assert obs.flush()
    rows = {r["model"]: r for r in fetch(obs.database_url, "spans") if r["kind"] == "llm"}
    assert rows["my-finetune-xyz"]["cost_usd"] is None and rows["my-finetune-xyz"]["price_source"] is None
    assert rows["my-finetune-xyz"]["input_tokens"] == 100
    assert rows["llama3"]["cost_usd"] is None  # a provider genai-prices lacks is not guessed
    assert obs.stats()["unpriced"] == {"my-finetune-xyz": 1, "llama3": 1}


def test_price_override_wins_including_cached_rate(db_url: str) -> None:
    overrides = {
        "gpt-4o-mini": {"input": 1.0, "output": 4.0, "cached_input": 0.5},
        "my-finetune-xyz": {"input": 2.0, "output": 8.0},
    }
    with LLMObs(db_url, price_overrides=overrides) as obs:
        handler = obs.langchain_handler()
        chat(ai("x", 1000, 100, cached=400)).invoke("q", config={"callbacks": [handler]})
        chat(ai("x", 1000, 100, cached=400), model_name="my-finetune-xyz").invoke(
            "q", config={"callbacks": [handler]}
        )
        assert obs.flush()
        rows = {r["model"]: r for r in fetch(db_url, "spans")}
    assert rows["gpt-4o-mini"]["cost_usd"] == pytest.approx((600 * 1.0 + 400 * 0.5 + 100 * 4.0) / 1e6)
    assert rows["gpt-4o-mini"]["price_source"] == "override:gpt-4o-mini"
    # no cached rate given: cached tokens are priced at the input rate
    assert rows["my-finetune-xyz"]["cost_usd"] == pytest.approx((1000 * 2.0 + 100 * 8.0) / 1e6)


def test_bad_price_override_is_a_clear_error(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="unknown price keys"):
        LLMObs(sqlite_url, price_overrides={"m": {"input": 1, "outptu": 2}})
    with pytest.raises(ValueError, match="at least 'input' and 'output'"):
        LLMObs(sqlite_url, price_overrides={"m": {"input": 1}})


def test_llm_error_mid_stream_records_error_and_ttft(obs: LLMObs) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModelError

    llm = FakeListChatModel(responses=["abcdef"], error_on_chunk_number=2)
    with pytest.raises(FakeListChatModelError):
        list(llm.stream("q", config={"callbacks": [obs.langchain_handler()]}))
    assert obs.flush()
    row = spans_by_name(obs.database_url)["FakeListChatModel"]
    assert row["status"] == "error" and row["error_type"] == "FakeListChatModelError"
    assert row["ttft_ms"] is not None  # two chunks arrived before the failure


def test_caller_closing_a_stream_early_is_not_an_error(obs: LLMObs) -> None:
    stream = chat(ai("one two three four five", 9, 5)).stream(
        "q", config={"callbacks": [obs.langchain_handler()]}
    )
    next(stream)
    stream.close()
    assert obs.flush()
    row = _llm_row(obs.database_url)
    assert row["status"] == "ok" and row["error_type"] == "GeneratorExit"


def test_service_tier_selects_the_price(obs: LLMObs) -> None:
    """OpenAI's priority tier costs more than default; the response's service_tier decides."""
    handler = obs.langchain_handler()
    chat(ai("a", 1000, 100, cached=400, service_tier="priority")).invoke("q", config={"callbacks": [handler]})
    chat(ai("b", 1000, 100, cached=400, service_tier="default")).invoke("q", config={"callbacks": [handler]})
    assert obs.flush()
    rows = sorted(
        (r for r in fetch(obs.database_url, "spans") if r["kind"] == "llm"), key=lambda r: r["output"]
    )
    priority, default = rows
    # priority: $0.25 input, $0.125 cached, $1.00 output per 1M tokens
    assert priority["cost_usd"] == pytest.approx((600 * 0.25 + 400 * 0.125 + 100 * 1.0) / 1e6, rel=1e-12)
    assert priority["attributes"]["price_context"] == {"service_tier": "priority"}
    assert default["cost_usd"] == pytest.approx(0.00018, rel=1e-12)
    assert "price_context" not in (default["attributes"] or {})
