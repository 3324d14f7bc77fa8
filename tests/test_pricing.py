"""The pricer agrees with genai-prices' own calc_price to the last float bit, fast path or not."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest
from genai_prices import Usage, calc_price

from llmobs_callbacks.model import TokenUsage
from llmobs_callbacks.pricing import Pricer

MODELS = [
    ("gpt-4o-mini", "openai", "openai"),
    ("gpt-4o-mini-2024-07-18", "openai", "openai"),
    ("o3-mini", "openai", "openai"),
    ("claude-3-5-sonnet-20241022", "anthropic", "anthropic"),
    ("claude-3-5-haiku", "anthropic", "anthropic"),
    ("mistral-large-latest", "mistralai", "mistral"),  # LangChain's ls_provider spelling
    ("gemini-1.5-pro", "google_genai", "google"),  # tiered: above 128k tokens costs more
    ("deepseek-chat", "deepseek", "deepseek"),  # off-peak prices by time of day
]


@pytest.mark.parametrize(("model", "ls_provider", "genai_provider"), MODELS)
def test_matches_calc_price_exactly(model: str, ls_provider: str, genai_provider: str) -> None:
    pricer = Pricer()
    rng = random.Random(model)
    for _ in range(60):
        inp = rng.randint(0, 400_000)
        cached = rng.randint(0, inp)
        written = rng.randint(0, inp - cached) if "claude" in model else 0
        out = rng.randint(0, 8_000)
        at = datetime(2026, 1, 1, rng.randint(0, 23), tzinfo=timezone.utc)
        usage = TokenUsage(
            input_tokens=inp,
            output_tokens=out,
            cached_input_tokens=cached or None,
            cache_write_tokens=written or None,
        )
        got = pricer.price(model, ls_provider, usage, at)
        expected = calc_price(
            Usage(
                input_tokens=inp,
                output_tokens=out,
                cache_read_tokens=cached or None,
                cache_write_tokens=written or None,
            ),
            model,
            provider_id=genai_provider,
            genai_request_timestamp=at,
        )
        assert got is not None
        assert got.cost_usd == float(expected.total_price), (inp, cached, written, out, at)
        assert got.source.endswith(f"{expected.provider.id}/{expected.model.id}")


def test_unknown_models_stay_unpriced_every_time() -> None:
    pricer = Pricer()
    usage = TokenUsage(input_tokens=10, output_tokens=5)
    for _ in range(3):
        assert pricer.price("my-finetune-xyz", "openai", usage) is None
        assert pricer.price("llama3", "ollama", usage) is None
    assert pricer.price(None, "openai", usage) is None
    assert pricer.price("gpt-4o-mini", "openai", None) is None


@pytest.mark.parametrize(("model", "tier"), [("gpt-4o-mini", "priority"), ("o3", "flex"), ("o3", "priority")])
def test_service_tier_matches_calc_price(model: str, tier: str) -> None:
    pricer = Pricer()
    rng = random.Random(tier)
    for _ in range(20):
        inp, out = rng.randint(0, 100_000), rng.randint(0, 5_000)
        cached = rng.randint(0, inp)
        at = datetime(2026, rng.choice([9, 11]), 20, tzinfo=timezone.utc)  # o3's tiers start 2026-10-12
        usage = TokenUsage(input_tokens=inp, output_tokens=out, cached_input_tokens=cached or None)
        got = pricer.price(model, "openai", usage, at, {"service_tier": tier})
        expected = calc_price(
            Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cached or None),
            model,
            provider_id="openai",
            genai_request_timestamp=at,
            price_context={"service_tier": tier},
        )
        assert got is not None and got.cost_usd == float(expected.total_price), (inp, cached, out, at)
