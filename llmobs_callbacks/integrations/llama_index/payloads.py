"""LlamaIndex objects as span payloads: names, providers and models, inputs, outputs, retrieved
documents, token usage. Pure helpers, shared by the instrumentation tracer and the legacy
callback handler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.prompts.base import BasePromptTemplate
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle

from ...core.context import current_context
from ...diagnostics import Diagnostics
from ...model import RetrievedDocument
from ...prepare.prompts import derived_version
from ...prepare.usage import from_provider_usage

FRAMEWORK = "llama_index"
# Arguments never stored as span input: workflow contexts and memories are large, shared and
# mutated concurrently (a workflow ``Context.to_dict()`` must not run on another thread).
_SKIP_ARG_TYPES = frozenset({"Context", "ChatMemoryBuffer", "Memory", "CallbackManager"})
# Module of an LLM/embedding integration (``llama_index.llms.<x>``) → provider as stored.
_PROVIDER_MODULES = {
    "openai_like": None,  # vLLM, LM Studio…: the model name says nothing about a provider
    "azure_openai": "azure",
    "bedrock_converse": "bedrock",
    "bedrock": "bedrock",
    "gemini": "google_genai",
    "vertex": "google_vertexai",
}
CACHE_MAX = 4096


def span_name_of(id_: str) -> str:
    """``RetrieverQueryEngine.query-<uuid4>`` → ``RetrieverQueryEngine.query``."""
    if len(id_) > 37 and id_[-37] == "-":
        return id_[:-37]
    return id_


def declared_context(tags: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, list[str] | None]:
    """Metadata and tags from ``instrument_tags`` and ``LLMObs.context`` (ours win)."""
    declared = current_context()
    if not tags and declared is None:
        return None, None
    metadata: dict[str, Any] = {}
    tag_list: list[str] = []
    if tags:
        for key, value in tags.items():
            if key.startswith("llamaindex."):
                continue  # the workflow runtime's own run/step tags
            if key == "tags":
                if isinstance(value, (list, tuple)):
                    tag_list.extend(t if type(t) is str else safe_str(t) for t in value)
                elif value is not None:
                    tag_list.append(safe_str(value))
                continue
            metadata[key] = value
    if declared is not None:
        metadata.update(declared[0])
        tag_list.extend(declared[1])
    return metadata or None, tag_list or None


def safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a tag whose __str__ raises must not cost the span
        return f"<{type(value).__name__}>"


def model_name_of(value: Any) -> str | None:
    """A model name, or None for LlamaIndex's placeholder ``"unknown"``."""
    return value if isinstance(value, str) and value and value != "unknown" else None


_INGESTION: dict[type, bool] = {}


def is_ingestion(cls: type | None) -> bool:
    """Whether a root span of this class is index building or ingestion, not a user's request:
    node parsers and other transformations, embedding batches, an ``IngestionPipeline`` run
    (``VectorStoreIndex.from_documents`` starts its parsing and embedding as separate roots)."""
    if cls is None:
        return False
    try:
        return _INGESTION[cls]
    except KeyError:
        pass
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.schema import TransformComponent

    found = issubclass(cls, (TransformComponent, BaseEmbedding, IngestionPipeline))
    if len(_INGESTION) < CACHE_MAX:
        _INGESTION[cls] = found
    return found


_PROVIDERS: dict[type, str | None] = {}


def provider_of(cls: type | None) -> str | None:
    """``llama_index.llms.openai`` → ``openai``; mocks and custom classes → None (the pricer
    then finds the provider from the model name)."""
    if cls is None:
        return None
    try:
        return _PROVIDERS[cls]
    except KeyError:
        pass
    provider = None
    for klass in cls.__mro__:
        parts = klass.__module__.split(".")
        if len(parts) >= 3 and parts[0] == "llama_index" and parts[1] in ("llms", "embeddings"):
            provider = _PROVIDER_MODULES.get(parts[2], parts[2])
            break
    _PROVIDERS[cls] = provider
    return provider


class ChatMessages:
    """Chat messages as ``[{"role", "content"}]``, rendered on the processor thread."""

    __slots__ = ("messages",)

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages

    def to_dict(self) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            role = getattr(m, "role", None)
            item: dict[str, Any] = {"role": getattr(role, "value", role), "content": getattr(m, "content", m)}
            extra = getattr(m, "additional_kwargs", None)
            if extra:
                item["additional_kwargs"] = extra
            out.append(item)
        return out


def llm_input_of(arguments: Mapping[str, Any], instance: Any) -> tuple[Any, dict[str, Any] | None]:
    """(input, invocation params) of a ``chat``/``complete`` call from its bound arguments."""
    kwargs = arguments.get("kwargs")
    messages = arguments.get("messages")
    if messages is not None:
        payload: Any = ChatMessages(list(messages))
    else:
        args = arguments.get("args")
        payload = args[0] if args else (kwargs or {}).get("prompt", arguments.get("prompt"))
    params: dict[str, Any] = {}
    for key in _fields_of(type(instance), ("temperature", "max_tokens")):
        value = getattr(instance, key, None)
        if value is not None:
            params[key] = value
    if kwargs:
        params.update((k, v) for k, v in kwargs.items() if k not in ("prompt", "formatted"))
    return payload, params or None


_FIELDS: dict[tuple[type, tuple[str, ...]], tuple[str, ...]] = {}


def _fields_of(cls: type, names: tuple[str, ...]) -> tuple[str, ...]:
    """Which of ``names`` a (pydantic) class declares: reading a missing attribute off a
    pydantic model raises inside ``__getattr__`` and costs microseconds on the hot path."""
    key = (cls, names)
    found = _FIELDS.get(key)
    if found is None:
        fields = getattr(cls, "model_fields", None)
        if isinstance(fields, dict):
            found = tuple(n for n in names if n in fields or isinstance(getattr(cls, n, None), property))
        else:
            found = names
        if len(_FIELDS) < CACHE_MAX:
            _FIELDS[key] = found
    return found


def model_of(instance: Any) -> str | None:
    """The model an LLM instance names (``model``, else ``model_name``)."""
    for name in _fields_of(type(instance), ("model", "model_name")):
        value = model_name_of(getattr(instance, name, None))
        if value is not None:
            return value
    return None


def query_text_of(value: Any) -> Any:
    if isinstance(value, QueryBundle):
        return value.query_str
    return value


def payload_value(value: Any) -> Any:
    """A cheap, readable stand-in for LlamaIndex objects; anything else as it is.

    What to do is decided once per type (``hasattr`` on a pydantic model that lacks the
    attribute raises internally and costs microseconds), then cached.
    """
    cls = type(value)
    if cls is str or value is None:
        return value
    convert = _VALUE_BY_TYPE.get(cls, _UNSEEN)
    if convert is _UNSEEN:
        convert = _value_converter(value)
        if len(_VALUE_BY_TYPE) < CACHE_MAX:
            _VALUE_BY_TYPE[cls] = convert
    return value if convert is None else convert(value)


def _list_value(value: list[Any]) -> Any:
    if value and isinstance(value[0], (NodeWithScore, BaseNode)):
        return {"nodes": len(value)}
    return list(value)


def _response_text(value: Any) -> Any:
    response = value.response
    return response if isinstance(response, str) else value


def _value_converter(value: Any) -> Any:
    cls = type(value)
    if cls is list:
        return _list_value
    if cls is dict:
        return dict
    if isinstance(value, QueryBundle):
        return _query_bundle_text
    if isinstance(value, BasePromptTemplate):
        return _prompt_label  # the text is in prompt_versions, the rendered prompt on the LLM span
    if hasattr(value, "source_nodes"):  # Response, AgentChatResponse and their streaming kinds
        if hasattr(value, "response_gen"):
            return _none  # a stream: its text is not known yet (the LLM span gets it)
        if hasattr(value, "response"):
            return _response_text
    return _CONVERTERS.get(cls.__name__)


def _none(value: Any) -> None:
    return None


def _query_bundle_text(value: Any) -> Any:
    return value.query_str


def is_derived(span: Any) -> bool:
    """Whether the span's prompt version is its template's derived one (not declared)."""
    t = span.prompt_template
    return t is not None and bool(t.template_hash) and span.prompt_version == derived_version(t.template_hash)


def _prompt_label(value: Any) -> str:
    prompt_type = (value.metadata or {}).get("prompt_type")
    return f"<{type(value).__name__} {getattr(prompt_type, 'value', prompt_type)}>"


_UNSEEN = object()
_VALUE_BY_TYPE: dict[type, Any] = {}


def _message_output(message: Any) -> Any:
    text = getattr(message, "content", None)
    tool_calls = (getattr(message, "additional_kwargs", None) or {}).get("tool_calls")
    return {"content": text, "tool_calls": list(tool_calls)} if tool_calls else text


def has_tool_calls(response: Any) -> bool:
    message = getattr(response, "message", None)
    return bool(message is not None and (message.additional_kwargs or {}).get("tool_calls"))


# Workflow results, by class name (no import of llama-index-workflows needed).
_CONVERTERS: dict[str, Any] = {
    "StopEvent": lambda ev: payload_value(getattr(ev, "result", None)),
    "AgentOutput": lambda out: _message_output(out.response),
}


def arguments_input(arguments: Mapping[str, Any]) -> Any:
    """A span's input: its one argument, or ``{name: value}`` of several."""
    if not arguments:
        return None
    if len(arguments) == 1:
        for value in arguments.values():
            return None if type(value).__name__ in _SKIP_ARG_TYPES else payload_value(value)
    return {k: payload_value(v) for k, v in arguments.items() if type(v).__name__ not in _SKIP_ARG_TYPES}


def tool_call_input(name: str, arguments: Mapping[str, Any], instance: Any) -> tuple[str, Any]:
    """(tool name, arguments) of ``BaseTool.call/acall`` or a workflow agent's ``call_tool``."""
    event = arguments.get("ev")
    if event is not None and hasattr(event, "tool_name"):
        return str(event.tool_name), getattr(event, "tool_kwargs", None)
    metadata = getattr(instance, "metadata", None)
    tool_name = getattr(metadata, "name", None) or name
    args = arguments.get("args")
    kwargs = arguments.get("kwargs")
    if args:
        return tool_name, {"args": list(args), "kwargs": kwargs or {}}
    if kwargs is not None:
        return tool_name, {k: v for k, v in kwargs.items() if type(v).__name__ not in _SKIP_ARG_TYPES}
    return tool_name, arguments_input(arguments)


class ToolError(Exception):
    """A tool call LlamaIndex reported as failed (``ToolOutput.is_error``) without an exception."""


def tool_result_of(result: Any) -> tuple[Any, BaseException | None]:
    """(output, error) of a tool span: a ``ToolOutput`` or a workflow ``ToolCallResult``."""
    tool_output = getattr(result, "tool_output", None)
    if tool_output is None and hasattr(result, "is_error") and hasattr(result, "raw_output"):
        tool_output = result
    if tool_output is None:
        return payload_value(result), None
    content = getattr(tool_output, "content", None)
    if getattr(tool_output, "is_error", False):
        exc = getattr(tool_output, "exception", None)
        return None, exc if isinstance(exc, BaseException) else ToolError(str(content))
    return content, None


def embedding_output(result: Any) -> Any:
    if type(result) is list and result:
        first = result[0]
        if isinstance(first, list):
            return {"embeddings": len(result), "dimensions": len(first)}
        if isinstance(first, (int, float)):
            return {"embeddings": 1, "dimensions": len(result)}
    return None


def retrieved_documents(result: Any) -> list[RetrievedDocument] | None:
    """Every ``NodeWithScore`` with its rank, node id, score, text and metadata."""
    if type(result) is not list:
        return None
    docs = []
    for rank, item in enumerate(result):
        node = getattr(item, "node", item)
        score = getattr(item, "score", None)
        text = getattr(node, "text", None)
        if not isinstance(text, str):
            try:
                text = node.get_content()
            except Exception:  # noqa: BLE001 - image nodes and other shapes
                text = None
        metadata = getattr(node, "metadata", None)
        node_id = getattr(node, "node_id", None) or getattr(node, "id_", None)
        docs.append(
            RetrievedDocument(
                rank=rank,
                document_id=None if node_id is None else str(node_id),
                content=text,
                score=float(score) if isinstance(score, (int, float)) and type(score) is not bool else None,
                metadata=dict(metadata) if isinstance(metadata, dict) and metadata else None,
            )
        )
    return docs


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def safe_usage_and_model(diag: Diagnostics, response: Any) -> tuple[Any, str | None]:
    if response is None:
        return None, None
    try:
        return usage_and_model(response, diag)
    except Exception as exc:  # noqa: BLE001 - a malformed response: the span still ends
        diag.handler_error("llama_index.llm_response", exc)
        return None, None


def usage_and_model(response: Any, diag: Diagnostics | None = None) -> tuple[Any, str | None]:
    """Token usage and the answering model from a ``ChatResponse``/``CompletionResponse``.

    ``raw.usage`` (OpenAI and compatibles: cached and reasoning details), ``raw.usage_metadata``
    (Gemini, LangChain-shaped), else ``additional_kwargs`` token counts (what LlamaIndex's
    integrations copy there), else — for a converted response — its message's.
    """
    if response is None:
        return None, None
    raw = getattr(response, "raw", None)
    usage = None
    model = None
    if raw is not None:
        usage = from_provider_usage(_get(raw, "usage"), diag) or from_provider_usage(
            _get(raw, "usage_metadata"), diag
        )
        candidate = _get(raw, "model") or _get(raw, "model_name") or _get(raw, "model_version")
        if isinstance(candidate, str) and candidate:
            model = candidate
    if usage is None:
        extra = getattr(response, "additional_kwargs", None)
        if extra:
            usage = from_provider_usage(extra, diag)
        if usage is None:
            message = getattr(response, "message", None)
            extra = getattr(message, "additional_kwargs", None)
            if extra:
                usage = from_provider_usage(extra, diag)
    return usage, model


def read_llm_response(response: Any, diag: Diagnostics | None = None) -> tuple[Any, Any, str | None]:
    """(output, usage, model): output is the text, with tool calls when the LLM made some."""
    if response is None:
        return None, None, None
    usage, model = usage_and_model(response, diag)
    message = getattr(response, "message", None)
    if message is None:
        return getattr(response, "text", None), usage, model
    return _message_output(message), usage, model
