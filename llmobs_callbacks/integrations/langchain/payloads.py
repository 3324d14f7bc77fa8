"""LangChain objects as span payloads: run names, LLM results (usage, model), documents, prompt
templates. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...diagnostics import Diagnostics
from ...model import RetrievedDocument
from ...prepare.usage import from_provider_usage, from_usage_metadata

_SCORE_KEYS = ("score", "relevance_score", "similarity_score", "_score", "distance")
_DOC_ID_KEYS = ("id", "doc_id", "document_id", "source")
TEMPLATE_CACHE_MAX = 1024


def run_name_of(serialized: dict[str, Any] | None, kwargs: dict[str, Any], default: str) -> str:
    name = kwargs.get("name")
    if name:
        return _str_or(name, default)
    if isinstance(serialized, dict):
        if serialized.get("name"):
            return _str_or(serialized["name"], default)
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return _str_or(ids[-1], default)
    return default


def _str_or(value: Any, default: str) -> str:
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a name whose __str__ raises must not cost the run
        return default


def has_tag(tags: Sequence[str] | None, prefix: str) -> bool:
    return bool(tags) and any(isinstance(t, str) and t.startswith(prefix) for t in tags)  # type: ignore[union-attr]


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def shallow_copy(value: Any) -> Any:
    """A shallow copy of containers, so later mutation by the app (graph state) is not seen."""
    if type(value) is dict:
        return dict(value)
    if type(value) is list:
        return list(value)
    return value


def chunk_has_content(chunk: Any) -> bool:
    if chunk is None:
        return False
    try:
        message = getattr(chunk, "message", None)
        if message is None:
            return bool(getattr(chunk, "text", None))
        return bool(message.content) or bool(getattr(message, "tool_call_chunks", None))
    except Exception:  # noqa: BLE001 - an unreadable chunk still is the model answering
        return True


def read_llm_result(response: Any, diag: Diagnostics | None = None) -> tuple[Any, Any, str | None]:
    """(output, usage, model) from an ``LLMResult``; usage prefers ``usage_metadata``."""
    generations = getattr(response, "generations", None) or []
    first = generations[0][0] if generations and generations[0] else None
    message = getattr(first, "message", None)
    output: Any = message if message is not None else getattr(first, "text", None)
    usage = None
    model = None
    response_metadata: dict[str, Any] = {}
    if message is not None:
        usage = from_usage_metadata(getattr(message, "usage_metadata", None), diag)
        response_metadata = getattr(message, "response_metadata", None) or {}
    llm_output = getattr(response, "llm_output", None) or {}
    if usage is None and isinstance(llm_output, dict):
        usage = from_provider_usage(llm_output.get("token_usage") or llm_output.get("usage"), diag)
    if usage is None and response_metadata:
        usage = from_provider_usage(
            response_metadata.get("token_usage")
            or response_metadata.get("usage")
            or response_metadata.get("usage_metadata"),
            diag,
        )
    if usage is None and first is not None:
        info = getattr(first, "generation_info", None) or {}
        usage = from_provider_usage(info.get("token_usage") or info.get("usage"), diag)
    for source in (response_metadata, llm_output if isinstance(llm_output, dict) else {}):
        candidate = source.get("model_name") or source.get("model")
        if isinstance(candidate, str) and candidate:
            model = candidate
            break
    return output, usage, model


def price_context_of(response: Any) -> dict[str, str] | None:
    """The service tier the provider says it served (priority and flex are priced apart)."""
    generations = getattr(response, "generations", None) or []
    message = getattr(generations[0][0], "message", None) if generations and generations[0] else None
    metadata = getattr(message, "response_metadata", None) or {}
    tier = metadata.get("service_tier")
    if tier is None:
        llm_output = getattr(response, "llm_output", None)
        tier = llm_output.get("service_tier") if isinstance(llm_output, dict) else None
    if isinstance(tier, str) and tier and tier != "default":
        return {"service_tier": tier}
    return None


def retrieved_document(rank: int, doc: Any) -> RetrievedDocument:
    try:
        return _read_document(rank, doc)
    except Exception:  # noqa: BLE001 - one odd document must not cost the others (or the span)
        return RetrievedDocument(rank=rank, document_id=None, content=None, score=None, metadata=None)


def _read_document(rank: int, doc: Any) -> RetrievedDocument:
    metadata = getattr(doc, "metadata", None)
    metadata = dict(metadata) if isinstance(metadata, dict) else None
    score = None
    doc_id = getattr(doc, "id", None)
    if metadata:
        for key in _SCORE_KEYS:
            value = metadata.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                score = float(value)
                break
        if doc_id is None:
            for key in _DOC_ID_KEYS:
                if metadata.get(key) is not None:
                    doc_id = metadata[key]
                    break
    content = getattr(doc, "page_content", None)
    return RetrievedDocument(
        rank=rank,
        document_id=None if doc_id is None else str(doc_id),
        content=content if content is not None else doc,
        score=score,
        metadata=metadata,
    )


def template_text(serialized: dict[str, Any]) -> str | None:
    """Each message's role and template, in order: what a prompt version should mean."""
    parts: list[str] = []

    def walk(node: Any, role: str | None) -> None:
        if isinstance(node, dict):
            ids = node.get("id")
            kind = ids[-1] if isinstance(ids, list) and ids else role
            kwargs = node.get("kwargs")
            if isinstance(kwargs, dict):
                if isinstance(kwargs.get("template"), str):
                    parts.append(f"[{role or kind}] {kwargs['template']}")
                elif kind == "MessagesPlaceholder":
                    parts.append(f"[MessagesPlaceholder] {{{kwargs.get('variable_name')}}}")
                for key in ("messages", "prompt", "prompts", "example_prompt", "suffix", "prefix"):
                    if key in kwargs:
                        walk(kwargs[key], kind if key == "prompt" else None)
        elif isinstance(node, list):
            for item in node:
                walk(item, role)

    walk(serialized, None)
    return "\n".join(parts) if parts else None
