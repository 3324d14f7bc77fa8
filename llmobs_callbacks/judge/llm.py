"""Calling the judge model: LangChain chat models/LLMs, LlamaIndex LLMs, or a plain callable.

The call is made with LLMObs's global LangChain instrumentation switched off for it, so the
judge's own call is recorded once — as the ``kind='judge'`` span the evaluator writes — and
never as an ordinary trace that could itself be judged.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from ..model import TokenUsage
from ..prepare.usage import from_provider_usage, from_usage_metadata


@dataclass
class LLMReply:
    text: str
    usage: TokenUsage | None
    model: str | None  # the model that answered, as the response reports it (None: not reported)
    provider: str | None


def model_identity(llm: Any) -> tuple[str | None, str | None]:
    """(model, provider) as far as the object tells."""
    model = None
    for attr in ("model_name", "model", "model_id"):
        value = getattr(llm, attr, None)
        if isinstance(value, str) and value:
            model = value
            break
    provider = None
    ls_params = getattr(llm, "_get_ls_params", None)
    if callable(ls_params):
        try:
            params = ls_params()
            provider = params.get("ls_provider")
            model = model or params.get("ls_model_name")
        except Exception:  # noqa: BLE001
            pass
    metadata = getattr(llm, "metadata", None)
    if model is None and metadata is not None:
        model = getattr(metadata, "model_name", None)
    if provider is None:
        name = type(llm).__name__.lower()
        provider = next((p for p in ("openai", "anthropic", "gemini", "mistral") if p in name), None)
    return model, provider


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content if p)
    return "" if content is None else str(content)


def _without_global_langchain_hook(fn: Any, *args: Any) -> Any:
    module = sys.modules.get("llmobs_callbacks.integrations.langchain")
    if module is None:  # never instrumented: nothing to switch off
        return fn(*args)
    return module.call_unrecorded(fn, *args)


def call_llm(llm: Any, prompt: str) -> LLMReply:
    """Ask ``llm`` one prompt; raises what the model raises."""
    model, provider = model_identity(llm)
    if hasattr(llm, "invoke") and hasattr(llm, "batch"):  # LangChain Runnable
        result = _without_global_langchain_hook(llm.invoke, prompt)
        if isinstance(result, str):
            return LLMReply(result, None, model, provider)
        meta = getattr(result, "response_metadata", None) or {}
        usage = from_usage_metadata(getattr(result, "usage_metadata", None))
        if usage is None:
            usage = from_provider_usage(meta.get("token_usage") or meta.get("usage"))
        reported = meta.get("model_name") or meta.get("model")
        reported = reported if isinstance(reported, str) and reported else None
        return LLMReply(_text_of(getattr(result, "content", result)), usage, reported, provider)
    if hasattr(llm, "complete"):  # LlamaIndex LLM
        response = llm.complete(prompt)
        raw = getattr(response, "raw", None)
        raw_usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
        reported = raw.get("model") if isinstance(raw, dict) else getattr(raw, "model", None)
        reported = reported if isinstance(reported, str) and reported else None
        text = str(getattr(response, "text", ""))
        return LLMReply(text, from_provider_usage(raw_usage), reported, provider)
    if callable(llm):  # a function prompt -> text (or LLMReply)
        result = llm(prompt)
        if isinstance(result, LLMReply):
            return result
        return LLMReply(_text_of(result), None, model or getattr(llm, "__name__", None), provider)
    raise TypeError(f"cannot call {type(llm).__name__} as a judge: needs .invoke, .complete or __call__")
