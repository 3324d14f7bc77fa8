"""Token usage from the shapes providers and frameworks report it in.

All parsers return ``None`` when nothing usable is there: missing usage is NULL, never 0.
Counts that are not finite non-negative integers below ``MAX_TOKENS`` (NaN, negative, strings,
booleans, absurdly large) are ignored and, when a ``Diagnostics`` is passed, counted as
``llmobs_handler_errors_total{reason="invalid_token_count"}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..model import TokenUsage

if TYPE_CHECKING:
    from ..diagnostics import Diagnostics

# No call reports this many tokens; a larger count is garbage (and would overflow the store's
# BIGINT columns, failing the whole batch it is in).
MAX_TOKENS = 10**12


def _count(value: Any, diag: Diagnostics | None = None) -> int | None:
    if value is None:
        return None
    if type(value) is int and 0 <= value < MAX_TOKENS:  # the common case first
        return value
    if not isinstance(value, bool):
        if isinstance(value, int) and 0 <= value < MAX_TOKENS:
            return int(value)
        if isinstance(value, float) and math.isfinite(value) and 0 <= value < MAX_TOKENS:
            return int(value)
    if diag is not None:
        diag.handler_error("invalid_token_count")
    return None


def _get(mapping: Any, key: str) -> Any:
    if type(mapping) is dict:  # LangChain's UsageMetadata (a TypedDict): skip the ABC check
        return mapping.get(key)
    if isinstance(mapping, Mapping):
        try:
            return mapping.get(key)
        except Exception:  # noqa: BLE001 - an odd mapping: no usage rather than no span
            return None
    try:
        return getattr(mapping, key, None)
    except Exception:  # noqa: BLE001 - a __getattr__ raising something else than AttributeError
        return None


def _finish(usage: TokenUsage) -> TokenUsage | None:
    if usage.is_empty():
        return None
    if usage.total_tokens is None and usage.input_tokens is not None and usage.output_tokens is not None:
        usage.total_tokens = usage.input_tokens + usage.output_tokens
    return usage


def truthy(value: Any) -> bool:
    try:
        return bool(value)
    except Exception:  # noqa: BLE001 - e.g. a numpy array or a broken __bool__/__len__
        return False


def from_usage_metadata(um: Any, diag: Diagnostics | None = None) -> TokenUsage | None:
    """LangChain ``UsageMetadata``: input includes cache, output includes reasoning."""
    if um is None or not truthy(um):
        return None
    inp = _get(um, "input_token_details") or {}
    out = _get(um, "output_token_details") or {}
    return _finish(
        TokenUsage(
            input_tokens=_count(_get(um, "input_tokens"), diag),
            output_tokens=_count(_get(um, "output_tokens"), diag),
            cached_input_tokens=_count(_get(inp, "cache_read"), diag),
            cache_write_tokens=_count(_get(inp, "cache_creation"), diag),
            reasoning_tokens=_count(_get(out, "reasoning"), diag),
            total_tokens=_count(_get(um, "total_tokens"), diag),
        )
    )


def from_provider_usage(raw: Any, diag: Diagnostics | None = None) -> TokenUsage | None:
    """A provider's raw usage object: OpenAI (prompt/completion), Anthropic, Gemini shapes."""
    if raw is None or not truthy(raw):
        return None
    prompt = _count(_get(raw, "prompt_tokens"), diag)
    if prompt is not None or _get(raw, "completion_tokens") is not None:  # OpenAI and compatibles
        pd = _get(raw, "prompt_tokens_details") or {}
        cd = _get(raw, "completion_tokens_details") or {}
        return _finish(
            TokenUsage(
                input_tokens=prompt,
                output_tokens=_count(_get(raw, "completion_tokens"), diag),
                cached_input_tokens=_count(_get(pd, "cached_tokens"), diag),
                reasoning_tokens=_count(_get(cd, "reasoning_tokens"), diag),
                total_tokens=_count(_get(raw, "total_tokens"), diag),
            )
        )
    cache_read = _count(_get(raw, "cache_read_input_tokens"), diag)
    cache_write = _count(_get(raw, "cache_creation_input_tokens"), diag)
    if cache_read is not None or cache_write is not None:  # Anthropic: input excludes cache
        base = _count(_get(raw, "input_tokens"), diag) or 0
        return _finish(
            TokenUsage(
                input_tokens=base + (cache_read or 0) + (cache_write or 0),
                output_tokens=_count(_get(raw, "output_tokens"), diag),
                cached_input_tokens=cache_read,
                cache_write_tokens=cache_write,
            )
        )
    if _get(raw, "prompt_token_count") is not None:  # Gemini: thoughts are outside candidates
        candidates = _count(_get(raw, "candidates_token_count"), diag)
        thoughts = _count(_get(raw, "thoughts_token_count"), diag)
        return _finish(
            TokenUsage(
                input_tokens=_count(_get(raw, "prompt_token_count"), diag),
                output_tokens=None if candidates is None else candidates + (thoughts or 0),
                cached_input_tokens=_count(_get(raw, "cached_content_token_count"), diag),
                reasoning_tokens=thoughts,
                total_tokens=_count(_get(raw, "total_token_count"), diag),
            )
        )
    return from_usage_metadata(raw, diag)
