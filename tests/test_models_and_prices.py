"""Models and prices (issue 14): one grouping key per model, the requested and the answering
model side by side, and prices for models behind a provider genai-prices does not know.

Through the real clients where a user meets it: ``langchain-openai``'s ChatOpenAI and
LlamaIndex's OpenAI against tests/fake_openai.py (which answers an alias with a dated snapshot,
like the real API), a custom ``BaseChatModel`` subclass, the real store (SQLite and PostgreSQL),
``TraceStore`` and a private Prometheus registry. Expected costs come from genai-prices itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import genai_prices
import openai
import pytest
from conftest import fetch
from fake_openai import MODEL_SNAPSHOTS, FakeOpenAIServer, fake_openai  # noqa: F401 - the fixture
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import DataSnapshot, get_snapshot, set_custom_snapshot
from genai_prices.types import ModelPrice
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_openai import ChatOpenAI
from li_fakes import clean_dispatcher_fixture, li_fixture, li_settings_fixture  # noqa: F401 - fixtures
from prom_support import samples
from prometheus_client import CollectorRegistry

from llmobs_callbacks import LLMObs
from llmobs_callbacks.analysis.store import TraceStore
from llmobs_callbacks.model import TokenUsage
from llmobs_callbacks.pricing import Pricer, model_key, strip_snapshot

VERSION = genai_prices.__version__
AT = datetime(2026, 1, 15, 12, tzinfo=timezone.utc)
# llama-index-workflows inspects pydantic models with inspect.getmembers (not our code).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")


def _genai_cost(model: str, provider: str, inp: int, out: int, cached: int = 0, written: int = 0) -> float:
    usage = Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cached or None,
        cache_write_tokens=written or None,
    )
    return float(calc_price(usage, model, provider_id=provider, genai_request_timestamp=AT).total_price)


def _inferred(provider_model: str, given: str | None) -> str:
    """The documented price_source of a price under an inferred provider."""
    tail = f"given {given!r}" if given else "no provider given"
    return f"genai-prices {VERSION}:{provider_model} (provider inferred from the model; {tail})"


def _rows(obs: LLMObs, **where: Any) -> list[dict]:
    assert obs.flush()
    return fetch(obs.database_url, "spans", order_by="start_time", **where)


# ---------------------------------------------------------------------- the grouping key


@pytest.mark.parametrize(
    ("name", "stripped"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-v2"),  # Vertex AI's form
        ("o3-mini-2025-01-31", "o3-mini"),
    ],
)
def test_a_dated_snapshot_is_stripped(name: str, stripped: str) -> None:
    assert strip_snapshot(name) == stripped
    assert model_key(None, name) == stripped  # a call that only has the response's model


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-mini",
        "gpt-3.5-turbo-0125",  # a version number, not a date with its year
        "mistral-large-2411",
        "gemini-1.5-pro-002",
        "claude-3-5-sonnet-latest",
        "llama-3.1-70b-instruct",
        "text-embedding-3-small",
        "my-model-20241399",  # no such date
        "anthropic.claude-3-5-sonnet-20241022-v2:0",  # Bedrock: the date is not the suffix
    ],
)
def test_names_without_a_trailing_date_are_untouched(name: str) -> None:
    assert strip_snapshot(name) == name
    assert model_key(None, name) == name


def test_the_key_is_the_requested_model_for_a_failure_and_a_success() -> None:
    for requested in MODEL_SNAPSHOTS:  # what the fake server (and the real API) answers
        failed, answered = model_key(requested, None), model_key(requested, MODEL_SNAPSHOTS[requested])
        assert failed == answered == requested
    assert model_key(None, None) is None


# ---------------------------------------------------------------------- pricing units


def _usage(inp: int = 1000, out: int = 100, cached: int = 0, written: int = 0) -> TokenUsage:
    return TokenUsage(
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=cached or None,
        cache_write_tokens=written or None,
    )


@pytest.mark.parametrize(
    ("ref", "given", "provider", "model"),
    [
        ("openai/gpt-4o-mini", "litellm", "openai", "gpt-4o-mini"),
        ("anthropic/claude-3-5-sonnet-20241022", "litellm", "anthropic", "claude-3-5-sonnet-20241022"),
        ("anthropic/claude-3-5-sonnet-20241022", "mygateway", "anthropic", "claude-3-5-sonnet-20241022"),
        ("anthropic/claude-3-5-sonnet-20241022", None, "anthropic", "claude-3-5-sonnet-20241022"),
        ("gemini/gemini-1.5-pro", "litellm", "google", "gemini-1.5-pro"),  # LiteLLM's prefixes
        ("bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0", "litellm", "aws", None),
    ],
)
def test_litellm_provider_prefix_is_split(
    ref: str, given: str | None, provider: str, model: str | None
) -> None:
    model = model or ref.split("/", 1)[1]
    pricer = Pricer()
    for _ in range(2):  # the second answer comes from the rates cache
        price = pricer.price(ref, given, _usage(cached=200), AT)
        expected = calc_price(
            Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=200),
            model,
            provider_id=provider,
            genai_request_timestamp=AT,
        )
        assert price is not None and price.cost_usd == float(expected.total_price)
        assert price.source == _inferred(f"{expected.provider.id}/{expected.model.id}", given)


def test_a_prefix_of_the_given_provider_is_not_an_inference() -> None:
    price = Pricer().price("openai/gpt-4o-mini", "openai", _usage(), AT)
    assert price is not None and price.source == f"genai-prices {VERSION}:openai/gpt-4o-mini"
    assert price.cost_usd == _genai_cost("gpt-4o-mini", "openai", 1000, 100)


def test_an_unknown_provider_is_inferred_from_the_model_name() -> None:
    pricer = Pricer()
    for given in ("mygateway", "gateway", None):
        price = pricer.price("gpt-4o-mini", given, _usage(cached=400), AT)
        assert price is not None and price.source == _inferred("openai/gpt-4o-mini", given)
        assert price.cost_usd == _genai_cost("gpt-4o-mini", "openai", 1000, 100, cached=400)


def test_a_model_not_listed_under_the_given_provider_is_inferred() -> None:
    # ChatOpenAI (ls_provider 'openai') pointed at a LiteLLM proxy serving Claude
    price = Pricer().price("claude-3-5-sonnet-20241022", "openai", _usage(cached=100, written=300), AT)
    assert price is not None
    assert price.source == _inferred("anthropic/claude-3-5-sonnet", "openai")
    assert price.cost_usd == _genai_cost("claude-3-5-sonnet-20241022", "anthropic", 1000, 100, 100, 300)


@pytest.mark.parametrize(
    ("model", "given"),
    [
        ("my-finetune", "mygateway"),  # nobody's name
        ("llama-3.1-70b-instruct", "mygateway"),  # many hosts, no maker's rule: no list price
        ("claude-3-5-sonnet-grok", "mygateway"),  # two makers' rules claim it: ambiguous
        ("claude-3-5-sonnet-grok", None),  # (genai-prices alone would take the first claimant)
        ("deepseek-r1:7b", "ollama"),  # self-hosted: genai-prices would say deepseek-reasoner
        ("deepseek-r1:7b", "openai"),  # Ollama's OpenAI-compatible endpoint: a local tag
        ("deepseek-ai/deepseek-r1-distill-qwen-7b", "openai"),  # a hub name on a vLLM server
        ("meta-llama/llama-3.1-8b-instruct", None),
        ("gpt-4o-mini-custom", "openai"),  # the claimant does not list it
    ],
)
def test_unknown_ambiguous_or_self_hosted_models_stay_unpriced(model: str, given: str | None) -> None:
    pricer = Pricer()
    for _ in range(2):  # misses are cached, and stay misses
        assert pricer.price(model, given, _usage(), AT) is None


def test_the_rates_cache_is_keyed_by_the_given_provider() -> None:
    pricer = Pricer()
    expected = _genai_cost("gpt-4o-mini", "openai", 1000, 100)
    for _ in range(3):  # interleaved, so each answer may come from the cache
        given = pricer.price("gpt-4o-mini", "openai", _usage(), AT)
        inferred = pricer.price("gpt-4o-mini", "mygateway", _usage(), AT)
        assert pricer.price("gpt-4o-mini", "ollama", _usage(), AT) is None
        assert given is not None and given.source == f"genai-prices {VERSION}:openai/gpt-4o-mini"
        assert inferred is not None and inferred.source == _inferred("openai/gpt-4o-mini", "mygateway")
        assert given.cost_usd == inferred.cost_usd == expected


def test_the_requested_model_is_priced_when_the_response_model_is_not() -> None:
    pricer = Pricer()
    for _ in range(2):
        price = pricer.price("gateway-prod-7", "openai", _usage(), AT, requested_model="gpt-4o-mini")
        assert price is not None and price.source == f"genai-prices {VERSION}:openai/gpt-4o-mini"
        assert price.cost_usd == _genai_cost("gpt-4o-mini", "openai", 1000, 100)
    # the response's model first: a snapshot is priced as itself
    price = pricer.price("gpt-4o-2024-05-13", "openai", _usage(), AT, requested_model="gpt-4o-mini")
    assert price is not None and price.cost_usd == _genai_cost("gpt-4o-2024-05-13", "openai", 1000, 100)
    assert pricer.price("gateway-prod-7", "openai", _usage(), AT, requested_model="my-finetune") is None
    assert pricer.price(None, "openai", _usage(), AT, requested_model="gpt-4o-mini") is not None


def test_overrides_win_for_either_name_and_say_which() -> None:
    usage = _usage(inp=1_000_000, out=1_000_000)
    pricer = Pricer(
        {"gpt-4o-mini": {"input": 1.0, "output": 2.0}, "acme-large": {"input": 3.0, "output": 4.0}}
    )
    by_request = pricer.price("gpt-4o-mini-2024-07-18", "openai", usage, AT, requested_model="gpt-4o-mini")
    assert by_request is not None and (by_request.cost_usd, by_request.source) == (
        3.0,
        "override:gpt-4o-mini",
    )
    # the snapshot alone matches an override of its undated name
    by_snapshot = pricer.price("gpt-4o-mini-2024-07-18", "openai", usage, AT)
    assert by_snapshot is not None and by_snapshot.source == "override:gpt-4o-mini"
    by_response = pricer.price("acme-large", "mygateway", usage, AT, requested_model="router-default")
    assert by_response is not None and (by_response.cost_usd, by_response.source) == (
        7.0,
        "override:acme-large",
    )
    exact = Pricer(
        {"gpt-4o-mini-2024-07-18": {"input": 5.0, "output": 5.0}, "gpt-4o-mini": {"input": 1, "output": 1}}
    )
    price = exact.price("gpt-4o-mini-2024-07-18", "openai", usage, AT, requested_model="gpt-4o-mini")
    assert (
        price is not None and price.source == "override:gpt-4o-mini-2024-07-18"
    )  # the answering model first


@pytest.fixture
def dearer_gpt_4o_mini() -> Iterator[None]:
    """genai-prices' data as ``UpdatePrices`` would install it, with gpt-4o-mini at $1/$2."""
    bundled = get_snapshot()
    openai_provider = next(p for p in bundled.providers if p.id == "openai")
    models = [
        dataclasses.replace(m, prices=ModelPrice(input_mtok=Decimal(1), output_mtok=Decimal(2)))
        if m.id == "gpt-4o-mini"
        else m
        for m in openai_provider.models
    ]
    providers = [
        dataclasses.replace(p, models=models) if p is openai_provider else p for p in bundled.providers
    ]
    set_custom_snapshot(DataSnapshot(providers=providers, from_auto_update=True))
    try:
        yield
    finally:
        set_custom_snapshot(None)


def test_new_price_data_replaces_cached_rates(request: pytest.FixtureRequest) -> None:
    pricer = Pricer()
    usage = _usage(inp=1_000_000, out=1_000_000)
    before = pricer.price("gpt-4o-mini", "mygateway", usage, AT)
    assert before is not None and before.cost_usd == _genai_cost(
        "gpt-4o-mini", "openai", 1_000_000, 1_000_000
    )
    request.getfixturevalue("dearer_gpt_4o_mini")
    after = pricer.price("gpt-4o-mini", "mygateway", usage, AT)
    assert (
        after is not None
        and after.cost_usd == 3.0
        and after.source == _inferred("openai/gpt-4o-mini", "mygateway")
    )


# ---------------------------------------------------------------------- LangChain ChatOpenAI


@pytest.fixture
def server(fake_openai: FakeOpenAIServer) -> FakeOpenAIServer:  # noqa: F811 - the imported fixture
    return fake_openai


def _chat_openai(server: FakeOpenAIServer, model: str = "gpt-4.1-mini") -> ChatOpenAI:
    return ChatOpenAI(model=model, api_key="test", base_url=server.base_url, max_retries=0)


def test_a_failed_and_a_successful_call_of_one_model_share_its_group(
    db_url: str, server: FakeOpenAIServer
) -> None:
    registry = CollectorRegistry()
    obs = LLMObs(db_url, prometheus_registry=registry)
    try:
        config = {"callbacks": [obs.langchain_handler()]}
        server.enqueue_chat("Four.", prompt_tokens=120, completion_tokens=8)
        assert _chat_openai(server).invoke("What is 2+2?", config=config).content == "Four."
        server.enqueue_error(500)
        with pytest.raises(openai.InternalServerError):
            _chat_openai(server).invoke("What is 2+2?", config=config)
        ok, failed = _rows(obs, kind="llm")
    finally:
        obs.shutdown()
    assert [r["status"] for r in (ok, failed)] == ["ok", "error"]
    assert (ok["model"], ok["request_model"], ok["response_model"]) == (
        "gpt-4.1-mini",
        "gpt-4.1-mini",
        MODEL_SNAPSHOTS["gpt-4.1-mini"],  # gpt-4.1-mini-2025-04-14
    )
    assert (failed["model"], failed["request_model"], failed["response_model"]) == (
        "gpt-4.1-mini",
        "gpt-4.1-mini",
        None,
    )
    assert ok["cost_usd"] == _genai_cost("gpt-4.1-mini-2025-04-14", "openai", 120, 8)
    assert ok["price_source"] == f"genai-prices {VERSION}:openai/gpt-4.1-mini"

    with TraceStore(db_url) as store:
        summary = store.summary(by="model")
    assert summary.index.tolist() == ["gpt-4.1-mini"]  # one group, not one per name
    group = summary.loc["gpt-4.1-mini"]
    assert (group["requests"], group["errors"], group["error_rate"]) == (2, 1, 0.5)

    requests = {
        dict(labels)["status"]: value
        for labels, value in samples(registry, "llmobs_llm_requests_total").items()
        if dict(labels)["model"] == "gpt-4.1-mini"
    }
    assert requests == {"ok": 1.0, "error": 1.0}
    assert {dict(labels)["model"] for labels in samples(registry, "llmobs_llm_requests_total")} == {
        "gpt-4.1-mini"
    }


@pytest.mark.parametrize(
    ("requested", "genai_model", "provider_model"),
    [
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022", "anthropic/claude-3-5-sonnet"),
        ("anthropic/claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022", "anthropic/claude-3-5-sonnet"),
    ],
    ids=["bare", "litellm-prefix"],
)
def test_chat_openai_through_a_litellm_proxy_serving_claude(
    obs: LLMObs, server: FakeOpenAIServer, requested: str, genai_model: str, provider_model: str
) -> None:
    server.enqueue_chat("Hi.", prompt_tokens=500, completion_tokens=40)  # the proxy echoes the model
    _chat_openai(server, requested).invoke("hello", config={"callbacks": [obs.langchain_handler()]})
    (row,) = _rows(obs, kind="llm")
    assert (row["model"], row["provider"], row["response_model"]) == (requested, "openai", requested)
    assert row["cost_usd"] == _genai_cost(genai_model, "anthropic", 500, 40)
    assert row["price_source"] == _inferred(provider_model, "openai")
    assert obs.stats()["unpriced"] == {}


def test_a_gateway_answering_under_its_own_name_is_priced_as_the_requested_model(
    obs: LLMObs, server: FakeOpenAIServer
) -> None:
    server.enqueue_chat("Hi.", prompt_tokens=300, completion_tokens=20, model="gateway-prod-7")
    _chat_openai(server, "gpt-4o-mini").invoke("hello", config={"callbacks": [obs.langchain_handler()]})
    (row,) = _rows(obs, kind="llm")
    assert (row["model"], row["request_model"], row["response_model"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gateway-prod-7",
    )
    assert row["cost_usd"] == _genai_cost("gpt-4o-mini", "openai", 300, 20)
    assert row["price_source"] == f"genai-prices {VERSION}:openai/gpt-4o-mini"


# ---------------------------------------------------------------------- a custom chat model


class GatewayChat(BaseChatModel):
    """A company gateway's chat model: LangChain's fallback ls_provider is 'gateway' (the class
    name without 'Chat'), which genai-prices does not know; the gateway reports no model name."""

    model_name: str = "gpt-4o-mini"

    @property
    def _llm_type(self) -> str:
        return "company-gateway"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        message = AIMessage(
            content="routed answer",
            usage_metadata={
                "input_tokens": 2000,
                "output_tokens": 150,
                "total_tokens": 2150,
                "input_token_details": {"cache_read": 500},
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def test_a_custom_chat_model_behind_an_unknown_provider_is_priced_by_its_model_name(db_url: str) -> None:
    registry = CollectorRegistry()
    with LLMObs(db_url, prometheus_registry=registry) as obs:
        config = {"callbacks": [obs.langchain_handler()]}
        GatewayChat().invoke("hello", config=config)
        GatewayChat(model_name="my-finetune").invoke("hello", config=config)
        GatewayChat(model_name="llama-3.1-70b-instruct").invoke("hello", config=config)
        GatewayChat(model_name="claude-3-5-sonnet-grok").invoke("hello", config=config)
        rows = {r["model"]: r for r in _rows(obs, kind="llm")}
        unpriced = obs.stats()["unpriced"]
    priced = rows["gpt-4o-mini"]
    assert (priced["provider"], priced["request_model"], priced["response_model"]) == (
        "gateway",
        "gpt-4o-mini",
        None,
    )
    assert priced["cost_usd"] == _genai_cost("gpt-4o-mini", "openai", 2000, 150, cached=500)
    assert priced["price_source"] == _inferred("openai/gpt-4o-mini", "gateway")

    unknown = ["my-finetune", "llama-3.1-70b-instruct", "claude-3-5-sonnet-grok"]  # the last: ambiguous
    for name in unknown:
        assert rows[name]["input_tokens"] == 2000  # tokens are kept, the cost is unknown (not 0)
        assert rows[name]["cost_usd"] is None and rows[name]["price_source"] is None
    assert unpriced == dict.fromkeys(unknown, 1)
    counted = {
        dict(k)["model"]: v for k, v in samples(registry, "llmobs_llm_unpriced_requests_total").items()
    }
    assert counted == dict.fromkeys(unknown, 1.0)
    costs = {dict(k)["model"]: v for k, v in samples(registry, "llmobs_llm_cost_usd_total").items()}
    assert costs == {"gpt-4o-mini": pytest.approx(priced["cost_usd"], rel=1e-12)}


# ---------------------------------------------------------------------- LlamaIndex OpenAI


def test_llama_index_openai_stores_the_requested_and_the_answering_model(
    li: LLMObs, server: FakeOpenAIServer
) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    llm = OpenAI(model="gpt-4o-mini", api_key="test", api_base=server.base_url, max_retries=0)
    server.enqueue_chat("Five days.", prompt_tokens=400, completion_tokens=12, cached_tokens=100)
    assert llm.chat([ChatMessage(role="user", content="refunds?")]).message.content == "Five days."
    server.enqueue_error(500)
    with pytest.raises(openai.InternalServerError):
        llm.chat([ChatMessage(role="user", content="refunds?")])
    ok, failed = _rows(li, kind="llm")
    assert (ok["status"], failed["status"]) == ("ok", "error")
    assert (ok["model"], ok["request_model"], ok["response_model"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini",
        MODEL_SNAPSHOTS["gpt-4o-mini"],
    )
    assert (failed["model"], failed["request_model"], failed["response_model"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini",
        None,
    )
    assert ok["provider"] == "openai" and ok["price_source"] == f"genai-prices {VERSION}:openai/gpt-4o-mini"
    assert ok["cost_usd"] == _genai_cost("gpt-4o-mini-2024-07-18", "openai", 400, 12, cached=100)
