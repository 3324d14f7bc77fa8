"""Token usage from the shapes providers and frameworks report it in.

All parsers return ``None`` when nothing usable is there: missing usage is NULL, never 0.
Counts that are not finite non-negative integers (NaN, negative, strings) are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .model import TokenUsage


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    return None


def _get(mapping: Any, key: str) -> Any:
    if isinstance(mapping, Mapping):
        return mapping.get(key)
    return getattr(mapping, key, None)


def _finish(usage: TokenUsage) -> TokenUsage | None:
    if usage.is_empty():
        return None
    if usage.total_tokens is None and usage.input_tokens is not None and usage.output_tokens is not None:
        usage.total_tokens = usage.input_tokens + usage.output_tokens
    return usage


def from_usage_metadata(um: Any) -> TokenUsage | None:
    """LangChain ``UsageMetadata``: input includes cache, output includes reasoning."""
    if not um:
        return None
    inp = _get(um, "input_token_details") or {}
    out = _get(um, "output_token_details") or {}
    return _finish(
        TokenUsage(
            input_tokens=_count(_get(um, "input_tokens")),
            output_tokens=_count(_get(um, "output_tokens")),
            cached_input_tokens=_count(_get(inp, "cache_read")),
            cache_write_tokens=_count(_get(inp, "cache_creation")),
            reasoning_tokens=_count(_get(out, "reasoning")),
            total_tokens=_count(_get(um, "total_tokens")),
        )
    )


def from_provider_usage(raw: Any) -> TokenUsage | None:
    """A provider's raw usage object: OpenAI (prompt/completion), Anthropic, Gemini shapes."""
    if not raw:
        return None
    prompt = _count(_get(raw, "prompt_tokens"))
    if prompt is not None or _get(raw, "completion_tokens") is not None:  # OpenAI and compatibles
        pd = _get(raw, "prompt_tokens_details") or {}
        cd = _get(raw, "completion_tokens_details") or {}
        return _finish(
            TokenUsage(
                input_tokens=prompt,
                output_tokens=_count(_get(raw, "completion_tokens")),
                cached_input_tokens=_count(_get(pd, "cached_tokens")),
                reasoning_tokens=_count(_get(cd, "reasoning_tokens")),
                total_tokens=_count(_get(raw, "total_tokens")),
            )
        )
    cache_read = _count(_get(raw, "cache_read_input_tokens"))
    cache_write = _count(_get(raw, "cache_creation_input_tokens"))
    if cache_read is not None or cache_write is not None:  # Anthropic: input excludes cache
        base = _count(_get(raw, "input_tokens")) or 0
        return _finish(
            TokenUsage(
                input_tokens=base + (cache_read or 0) + (cache_write or 0),
                output_tokens=_count(_get(raw, "output_tokens")),
                cached_input_tokens=cache_read,
                cache_write_tokens=cache_write,
            )
        )
    if _get(raw, "prompt_token_count") is not None:  # Gemini: thoughts are outside candidates
        candidates = _count(_get(raw, "candidates_token_count"))
        thoughts = _count(_get(raw, "thoughts_token_count"))
        return _finish(
            TokenUsage(
                input_tokens=_count(_get(raw, "prompt_token_count")),
                output_tokens=None if candidates is None else candidates + (thoughts or 0),
                cached_input_tokens=_count(_get(raw, "cached_content_token_count")),
                reasoning_tokens=thoughts,
                total_tokens=_count(_get(raw, "total_token_count")),
            )
        )
    return from_usage_metadata(raw)
