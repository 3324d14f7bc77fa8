"""LlamaIndex test doubles: a ``MockLLM`` that reports usage, a word-hashing ``MockEmbedding``,
and fixtures that keep LlamaIndex's global ``Settings`` and root dispatcher clean between tests."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback

SNAPSHOT = "gpt-4o-mini-2024-07-18"

KNOWLEDGE = {
    "refunds": "Refunds are issued within 5 business days to the original payment method.",
    "shipping": "Standard shipping takes 3 to 5 days and express shipping takes 1 to 2 days.",
    "passwords": "Reset your password from the login page with the forgot password link.",
}


class UsageMockLLM(MockLLM):
    """``MockLLM`` answering ``answer`` and reporting OpenAI-shaped usage for ``model``.

    ``usage_in="raw"`` puts ``{"model", "usage": {...}}`` in ``CompletionResponse.raw`` (as the
    OpenAI integration does with the SDK object); ``"additional_kwargs"`` puts only the
    prompt/completion/total counts in ``additional_kwargs`` (what other integrations do).
    A stream yields one chunk per word and reports the usage on the last one.
    """

    answer: str = "Refunds take 5 business days."
    prompt_tokens: int = 120
    completion_tokens: int = 30
    cached_tokens: int | None = None
    model: str = SNAPSHOT
    usage_in: str = "raw"
    fail_with: Any = None
    chunk_delay: float = 0.0

    def __init__(self, **fields: Any) -> None:
        own = {k: fields.pop(k) for k in list(fields) if k in _USAGE_MOCK_FIELDS}
        super().__init__(**fields)  # MockLLM's __init__ takes only its own arguments
        for key, value in own.items():
            setattr(self, key, value)

    @classmethod
    def class_name(cls) -> str:
        return "UsageMockLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(num_output=self.max_tokens or -1, model_name=self.model)

    def _usage_fields(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.usage_in == "raw":
            if self.cached_tokens is not None:
                usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
            return {"raw": {"model": self.model, "usage": usage}}
        return {"additional_kwargs": usage}

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.fail_with is not None:
            raise self.fail_with
        return CompletionResponse(text=self.answer, **self._usage_fields())

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        if self.fail_with is not None:
            raise self.fail_with
        words = self.answer.split(" ")

        def gen() -> CompletionResponseGen:
            text = ""
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                text += delta
                if self.chunk_delay:
                    time.sleep(self.chunk_delay)
                last = i == len(words) - 1
                yield CompletionResponse(text=text, delta=delta, **(self._usage_fields() if last else {}))

        return gen()


_USAGE_MOCK_FIELDS = frozenset(
    {
        "answer",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "model",
        "usage_in",
        "fail_with",
        "chunk_delay",
    }
)


class WordHashEmbedding(MockEmbedding):
    """Bag-of-words vectors (hashed): texts sharing words score higher, unlike ``MockEmbedding``'s
    constant vector that scores every node 1.0."""

    @classmethod
    def class_name(cls) -> str:
        return "WordHashEmbedding"

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.embed_dim
        for word in text.lower().replace(".", " ").replace("?", " ").split():
            vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.embed_dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)


def knowledge_index(embed_model: Any = None) -> VectorStoreIndex:
    docs = [Document(text=text, id_=key, metadata={"topic": key}) for key, text in KNOWLEDGE.items()]
    return VectorStoreIndex.from_documents(docs, embed_model=embed_model or WordHashEmbedding(embed_dim=64))


# Fixtures are declared with ``name=`` so test modules import them under another name
# (``from li_fakes import li_fixture``) without shadowing the test's parameter.
@pytest.fixture(name="li_settings")
def li_settings_fixture() -> Iterator[None]:
    """Restore LlamaIndex's global ``Settings`` (llm, embed_model, callback_manager) after a test,
    and fail loudly if a test would silently reach for the default OpenAI models."""
    saved = (Settings._llm, Settings._embed_model, Settings._callback_manager)
    Settings.llm = MockLLM()
    Settings.embed_model = MockEmbedding(embed_dim=8)
    try:
        yield
    finally:
        Settings._llm, Settings._embed_model, Settings._callback_manager = saved


@pytest.fixture(name="clean_dispatcher")
def clean_dispatcher_fixture() -> Iterator[None]:
    """Assert the root dispatcher's handler lists are as they were after the test."""
    root = get_dispatcher()
    before = (list(root.span_handlers), list(root.event_handlers))
    yield
    after = (list(root.span_handlers), list(root.event_handlers))
    leftovers = [h for h in after[0] + after[1] if not any(h is b for b in before[0] + before[1])]
    root.span_handlers, root.event_handlers = before  # never leak into other test files
    assert not leftovers, f"handlers left attached: {leftovers}"


@pytest.fixture(name="li")
def li_fixture(obs: Any, li_settings: None, clean_dispatcher: None) -> Iterator[Any]:
    """``obs`` with LlamaIndex instrumented; detached again after the test."""
    handle = obs.instrument_llama_index()
    try:
        yield obs
    finally:
        handle.close()
