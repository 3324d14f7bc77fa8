"""Cost of one LLM call: user overrides first, then the bundled genai-prices data, else NULL.

An unknown model or provider yields ``None`` (stored as NULL and counted as unpriced) rather
than a guess: a price taken from another provider's model is worse than no price.

genai-prices' ``calc_price`` costs ~150-250 µs a call. Most models' prices are linear in each
token kind with one fixed set of rates, so for those the rates are read once from genai-prices
itself (its own ``calc_price`` on unit usages) and reused: the same Decimal arithmetic, ~50×
cheaper. Tiered prices and prices that change over time always go through ``calc_price``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from genai_prices import Usage, calc_price
from genai_prices.types import ModelPrice, PriceCalculation, TieredPrices

from .model import TokenUsage

logger = logging.getLogger(__name__)

try:
    _GENAI_PRICES_VERSION = version("genai-prices")
except PackageNotFoundError:  # pragma: no cover - vendored installs
    _GENAI_PRICES_VERSION = "unknown"

# LangChain's ls_provider values that genai-prices spells differently.
_PROVIDER_ALIASES = {
    "azure": "azure",
    "azure_openai": "openai",
    "google_genai": "google",
    "google_vertexai": "google",
    "bedrock": "aws",
    "amazon_bedrock": "aws",
    "mistralai": "mistral",
    "xai": "x-ai",
}


# A trailing date snapshot: gpt-4o-2024-08-06, claude-3-5-sonnet-20241022, gemini-1.5-pro@001-style
# suffixes are left alone (no date in them).
_SNAPSHOT = re.compile(r"[-@](?:\d{4}-\d{2}-\d{2}|20\d{6})$")


def model_key(request_model: str | None, response_model: str | None) -> str | None:
    """The one name a model's calls are grouped under: the model asked for, else the response's
    without its date snapshot. A failed call (no response) and a successful one of the same
    model get the same key."""
    if request_model:
        return request_model
    if response_model:
        return _SNAPSHOT.sub("", response_model) or response_model
    return None


@dataclass(frozen=True, slots=True)
class ModelPriceOverride:
    """USD per million tokens. Cached/cache-write rates default to the input rate when unset."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    @classmethod
    def parse(cls, value: ModelPriceOverride | Mapping[str, float]) -> ModelPriceOverride:
        if isinstance(value, ModelPriceOverride):
            return value
        unknown = set(value) - {"input", "output", "cached_input", "cache_write"}
        if unknown:
            raise ValueError(
                f"unknown price keys {sorted(unknown)}; use input, output, cached_input, cache_write"
                " (USD per million tokens)"
            )
        if "input" not in value or "output" not in value:
            raise ValueError("a price override needs at least 'input' and 'output' (USD per 1M tokens)")
        return cls(**{k: float(v) for k, v in value.items()})


@dataclass(frozen=True, slots=True)
class Price:
    cost_usd: float
    source: str


_MTOK = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class _LinearRates:
    """USD per token of each kind, plus a per-request fee; read from genai-prices itself."""

    source: str
    request: Decimal
    uncached_input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal

    @classmethod
    def read(
        cls, result: PriceCalculation, source: str, *, with_context: bool = False
    ) -> _LinearRates | None:
        """Rates of a model whose price is one fixed, untiered set (else None)."""
        model_price = result.model_price
        if not isinstance(result.model.prices, ModelPrice):
            return None  # prices that change with the request time (e.g. off-peak hours)
        if with_context and any(v.constraint is not None for v in result.model.price_variants or ()):
            return None  # a price variant (service tier) that starts or ends at some date
        if any(isinstance(v, TieredPrices) for v in vars(model_price).values()):
            return None

        def total(**tokens: int) -> Decimal:
            usage = Usage(**{"input_tokens": 0, "output_tokens": 0, **tokens})
            return model_price.calc_price(usage)["total_price"]

        fee = total()
        return cls(
            source=source,
            request=fee,
            uncached_input=(total(input_tokens=1_000_000) - fee) / _MTOK,
            cache_read=(total(input_tokens=1_000_000, cache_read_tokens=1_000_000) - fee) / _MTOK,
            cache_write=(total(input_tokens=1_000_000, cache_write_tokens=1_000_000) - fee) / _MTOK,
            output=(total(output_tokens=1_000_000) - fee) / _MTOK,
        )

    def cost(self, usage: TokenUsage) -> Decimal:
        cached = usage.cached_input_tokens or 0
        written = usage.cache_write_tokens or 0
        uncached = (usage.input_tokens or 0) - cached - written
        return (
            self.request
            + uncached * self.uncached_input
            + cached * self.cache_read
            + written * self.cache_write
            + (usage.output_tokens or 0) * self.output
        )


class Pricer:
    """Prices token usage. Runs on the processor thread, never on the caller's."""

    def __init__(self, overrides: Mapping[str, ModelPriceOverride | Mapping[str, float]] | None = None):
        self._overrides = {
            name.lower(): ModelPriceOverride.parse(value) for name, value in (overrides or {}).items()
        }
        # (model, provider, price context) -> linear rates, or None when every call must
        # use calc_price.
        self._rates: dict[tuple[str, str | None, Any], _LinearRates | None] = {}

    def price(
        self,
        model: str | None,
        provider: str | None,
        usage: TokenUsage | None,
        at: datetime | None = None,
        price_context: Mapping[str, str] | None = None,
    ) -> Price | None:
        """The cost of ``usage`` on ``model``, or None when it cannot be priced exactly.

        ``price_context`` (e.g. ``{"service_tier": "priority"}``) selects genai-prices' price
        variants; overrides ignore it."""
        if not model or usage is None or (usage.input_tokens is None and usage.output_tokens is None):
            return None
        override = self._overrides.get(model.lower())
        if override is not None:
            return Price(_override_cost(override, usage), f"override:{model}")
        return self._genai_price(model, provider, usage, at, price_context)

    def _genai_price(
        self,
        model: str,
        provider: str | None,
        usage: TokenUsage,
        at: datetime | None,
        price_context: Mapping[str, str] | None,
    ) -> Price | None:
        provider_id = _PROVIDER_ALIASES.get(provider.lower(), provider.lower()) if provider else None
        context_key = tuple(sorted(price_context.items())) if price_context else None
        key = (model, provider_id, context_key)
        rates = self._rates.get(key)
        if rates is not None and (usage.input_tokens or 0) >= (usage.cached_input_tokens or 0) + (
            usage.cache_write_tokens or 0
        ):
            return Price(float(rates.cost(usage)), rates.source)
        genai_usage = Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_read_tokens=usage.cached_input_tokens or None,
            cache_write_tokens=usage.cache_write_tokens or None,
        )
        try:
            result = calc_price(
                genai_usage,
                model,
                provider_id=provider_id,
                genai_request_timestamp=at or datetime.now(timezone.utc),
                price_context=dict(price_context) if price_context else None,
            )
        except LookupError:
            return None
        except Exception:
            logger.warning("genai-prices failed for model %r", model, exc_info=True)
            return None
        source = f"genai-prices {_GENAI_PRICES_VERSION}:{result.provider.id}/{result.model.id}"
        if key not in self._rates and len(self._rates) < 10_000:
            try:
                self._rates[key] = _LinearRates.read(result, source, with_context=context_key is not None)
            except Exception:  # noqa: BLE001 - the slow path stays correct
                self._rates[key] = None
        return Price(float(result.total_price), source)


def _override_cost(p: ModelPriceOverride, usage: TokenUsage) -> float:
    cached = usage.cached_input_tokens or 0
    cache_write = usage.cache_write_tokens or 0
    uncached = max((usage.input_tokens or 0) - cached - cache_write, 0)
    cached_rate = p.input if p.cached_input is None else p.cached_input
    write_rate = p.input if p.cache_write is None else p.cache_write
    total = (
        uncached * p.input
        + cached * cached_rate
        + cache_write * write_rate
        + (usage.output_tokens or 0) * p.output
    )
    return total / 1_000_000
