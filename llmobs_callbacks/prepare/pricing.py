"""Cost of one LLM call: user overrides first, then the bundled genai-prices data, else NULL.

A call is priced under the model that answered (the response's, often a dated snapshot), else
under the model asked for. The provider is the one the framework names (LangChain's
``ls_provider``); when genai-prices does not know it (a custom chat model class, a company
gateway) or does not list the model under it (a LiteLLM proxy behind ``ChatOpenAI``), the
provider is inferred from the model name: a known provider prefix (``anthropic/claude-3-5-sonnet``,
LiteLLM's form), else the one provider whose genai-prices ``model_match`` rule claims the name.
Zero or several claimants, a self-hosted provider (Ollama, vLLM), a hub name (``org/model``)
or a local tag (``model:7b``) yield ``None`` (stored as NULL and counted as unpriced) rather
than a guess: a list price for a model someone else serves is worse than no price.

``price_source`` forms (stable: reports and tests read them):

- ``override:<name>``: a user's price; ``<name>`` is the name it matched;
- ``genai-prices <version>:<provider>/<model>``: genai-prices under the given provider;
- ``genai-prices <version>:<provider>/<model> (provider inferred from the model; given '<p>')``
  (or ``; no provider given)``): under an inferred provider.

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
from genai_prices.data_snapshot import DataSnapshot, find_provider_by_id, get_snapshot
from genai_prices.types import ModelPrice, PriceCalculation, Provider, TieredPrices

from ..model import TokenUsage

# Named as before the move to prepare/: users' logging configuration names it.
logger = logging.getLogger("llmobs_callbacks.pricing")

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
    "fireworks_ai": "fireworks",  # LiteLLM's prefix
}

# Providers that run models on the user's own hardware: a model name they serve is never given
# another provider's list price.
_SELF_HOSTED = frozenset(
    {"ollama", "vllm", "hosted_vllm", "llamacpp", "llama_cpp", "lmstudio", "lm_studio", "localai", "gpt4all"}
)


# A trailing date snapshot with its year: gpt-4o-2024-08-06, claude-3-5-sonnet-20241022,
# claude-3-5-sonnet-v2@20241022 (Vertex). Other suffixes are versions, not dates, and stay:
# gpt-3.5-turbo-0125, mistral-large-2411, gemini-1.5-pro-002.
_SNAPSHOT = re.compile(r"[-@_]20\d\d-?(?:0[1-9]|1[0-2])-?(?:0[1-9]|[12]\d|3[01])$")


def strip_snapshot(model: str) -> str:
    """``model`` without a trailing date snapshot (``gpt-4o-2024-08-06`` -> ``gpt-4o``)."""
    return _SNAPSHOT.sub("", model) or model


def model_key(request_model: str | None, response_model: str | None) -> str | None:
    """The one name a model's calls are grouped under: the model asked for, else the response's
    without its date snapshot. A failed call (no response) and a successful one of the same
    model get the same key: both carry the requested name."""
    if request_model:
        return request_model
    if response_model:
        return strip_snapshot(response_model)
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


_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class _Resolved:
    """Where genai-prices prices a model name: the provider and model ref to ask it for."""

    provider_id: str
    model_ref: str
    note: str  # appended to price_source: "" unless the provider was inferred


class Pricer:
    """Prices token usage. Runs on the processor thread, never on the caller's."""

    def __init__(self, overrides: Mapping[str, ModelPriceOverride | Mapping[str, float]] | None = None):
        self._overrides = {
            name.lower(): ModelPriceOverride.parse(value) for name, value in (overrides or {}).items()
        }
        # (model, requested model, given provider, price context) -> linear rates, or None when
        # every call must use calc_price. Keyed by the provider as given: an inferred provider
        # depends on it.
        self._rates: dict[tuple[Any, ...], _LinearRates | None] = {}
        # (model name, given provider) -> where genai-prices prices it, or None (unpriced).
        self._resolved: dict[tuple[str, str | None], _Resolved | None] = {}
        self._snapshot: DataSnapshot | None = None  # the price data the caches were filled from

    def price(
        self,
        model: str | None,
        provider: str | None,
        usage: TokenUsage | None,
        at: datetime | None = None,
        price_context: Mapping[str, str] | None = None,
        *,
        requested_model: str | None = None,
    ) -> Price | None:
        """The cost of ``usage`` on ``model`` (the model that answered), else on
        ``requested_model`` (the one asked for) when ``model`` has no price; None when neither
        can be priced exactly.

        An override wins for either name, or for either without its date snapshot
        (``price_source`` names the one it matched). ``price_context`` (e.g.
        ``{"service_tier": "priority"}``) selects genai-prices' price variants; overrides ignore it."""
        if usage is None or (usage.input_tokens is None and usage.output_tokens is None):
            return None
        if not model:
            model, requested_model = requested_model, None
            if not model:
                return None
        elif requested_model == model:
            requested_model = None
        if self._overrides:
            override = self._override(model, requested_model)
            if override is not None:
                return Price(_override_cost(override[1], usage), f"override:{override[0]}")
        return self._genai_price(model, requested_model, provider, usage, at, price_context)

    def _override(self, model: str, requested_model: str | None) -> tuple[str, ModelPriceOverride] | None:
        names = [model, requested_model, strip_snapshot(model)]
        if requested_model:
            names.append(strip_snapshot(requested_model))
        for name in names:
            if name:
                override = self._overrides.get(name.lower())
                if override is not None:
                    return name, override
        return None

    def _genai_price(
        self,
        model: str,
        requested_model: str | None,
        provider: str | None,
        usage: TokenUsage,
        at: datetime | None,
        price_context: Mapping[str, str] | None,
    ) -> Price | None:
        snapshot = get_snapshot()
        if snapshot is not self._snapshot:  # new price data (genai-prices' UpdatePrices)
            # New dicts, not cleared ones: a thread still pricing with the old data fills those.
            self._rates, self._resolved, self._snapshot = {}, {}, snapshot
        rates_cache, resolved_cache = self._rates, self._resolved
        context_key = tuple(sorted(price_context.items())) if price_context else None
        key = (model, requested_model, provider, context_key)
        rates = rates_cache.get(key)
        if rates is not None and (usage.input_tokens or 0) >= (usage.cached_input_tokens or 0) + (
            usage.cache_write_tokens or 0
        ):
            return Price(float(rates.cost(usage)), rates.source)
        resolved = _cached_resolve(resolved_cache, model, provider, snapshot.providers)
        if resolved is None and requested_model:
            resolved = _cached_resolve(resolved_cache, requested_model, provider, snapshot.providers)
        if resolved is None:
            return None
        genai_usage = Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_read_tokens=usage.cached_input_tokens or None,
            cache_write_tokens=usage.cache_write_tokens or None,
        )
        try:
            result = calc_price(
                genai_usage,
                resolved.model_ref,
                provider_id=resolved.provider_id,
                genai_request_timestamp=at or datetime.now(timezone.utc),
                price_context=dict(price_context) if price_context else None,
            )
        except LookupError:
            return None
        except Exception:
            logger.warning("genai-prices failed for model %r", model, exc_info=True)
            return None
        source = f"genai-prices {_GENAI_PRICES_VERSION}:{result.provider.id}/{result.model.id}{resolved.note}"
        if key not in rates_cache and len(rates_cache) < _CACHE_MAX:
            try:
                rates_cache[key] = _LinearRates.read(result, source, with_context=context_key is not None)
            except Exception:  # noqa: BLE001 - the slow path stays correct
                rates_cache[key] = None
        return Price(float(result.total_price), source)


def _cached_resolve(
    cache: dict[tuple[str, str | None], _Resolved | None],
    model: str,
    provider: str | None,
    providers: list[Provider],
) -> _Resolved | None:
    key = (model, provider)
    try:
        return cache[key]
    except KeyError:
        pass
    resolved = _resolve(model, provider, providers)
    if len(cache) < _CACHE_MAX:
        cache[key] = resolved
    return resolved


def _provider_by_id(providers: list[Provider], provider: str) -> Provider | None:
    return find_provider_by_id(providers, _PROVIDER_ALIASES.get(provider, provider))


def _resolve(model: str, provider: str | None, providers: list[Provider]) -> _Resolved | None:
    """The given provider when genai-prices lists the model under it; else the provider
    inferred from the model name (see the module's docstring); else None."""
    ref = model.strip().lower()
    given = provider.strip().lower() if provider else None
    known = _provider_by_id(providers, given) if given else None
    if known is not None and known.find_model(ref, all_providers=providers) is not None:
        return _Resolved(known.id, ref, "")
    if given in _SELF_HOSTED:
        return None
    note = (
        f" (provider inferred from the model; given {provider!r})"
        if given
        else " (provider inferred from the model; no provider given)"
    )
    prefix, slash, rest = ref.partition("/")
    if slash:  # LiteLLM's provider/model, else a hub name (meta-llama/...) whose host sets the price
        owner = _provider_by_id(providers, prefix) if prefix and rest else None
        if owner is None or owner.find_model(rest, all_providers=providers) is None:
            return None
        return _Resolved(owner.id, rest, "" if owner is known else note)
    if ":" in ref:  # name:tag, a local build (Ollama); also OpenAI's ft:..., found above or not at all
        return None
    claimants = [p for p in providers if p.model_match is not None and p.model_match.is_match(ref)]
    if len(claimants) != 1 or claimants[0].find_model(ref, all_providers=providers) is None:
        return None  # nobody's name, or several makers' (ambiguous)
    return _Resolved(claimants[0].id, ref, note)


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
