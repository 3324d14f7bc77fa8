"""Fake LangChain models built on the fakes langchain-core ships, reporting real-shaped usage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.language_models import BaseLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk, Generation, LLMResult


class UsageFakeChatModel(GenericFakeChatModel):
    """Reports ``usage_metadata`` on invoke and, like real providers, in the last stream chunk."""

    model_name: str = "gpt-4o-mini"
    provider: str = "openai"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider=self.provider, ls_model_name=self.model_name)
        return params

    def bind_tools(self, tools: Any, **kwargs: Any) -> UsageFakeChatModel:
        return self

    def _stream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[Any]:
        msg = next(self.messages)
        for token in str(msg.content).split(" "):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token + " "))
            if run_manager:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                chunk_position="last",
                usage_metadata=msg.usage_metadata,
                response_metadata={"model_name": self.model_name},
            )
        )


def ai(
    text: str,
    inp: int | None = None,
    out: int | None = None,
    *,
    cached: int | None = None,
    cache_write: int | None = None,
    reasoning: int | None = None,
    tool_calls: list | None = None,
    model_name: str | None = None,
    service_tier: str | None = None,
) -> AIMessage:
    """An AIMessage with usage_metadata (None for no usage at all)."""
    usage = None
    if inp is not None:
        usage = {"input_tokens": inp, "output_tokens": out or 0, "total_tokens": inp + (out or 0)}
        details = {
            k: v for k, v in {"cache_read": cached, "cache_creation": cache_write}.items() if v is not None
        }
        if details:
            usage["input_token_details"] = details
        if reasoning is not None:
            usage["output_token_details"] = {"reasoning": reasoning}
    return AIMessage(
        content=text,
        usage_metadata=usage,
        tool_calls=tool_calls or [],
        response_metadata={
            k: v for k, v in {"model_name": model_name, "service_tier": service_tier}.items() if v is not None
        },
    )


def chat(
    *messages: AIMessage, model_name: str = "gpt-4o-mini", provider: str = "openai"
) -> UsageFakeChatModel:
    return UsageFakeChatModel(messages=iter(messages), model_name=model_name, provider=provider)


class ProviderUsageLLM(BaseLLM):
    """A text LLM reporting usage only in ``llm_output['token_usage']`` (OpenAI's legacy shape)."""

    text: str = "plain completion"
    prompt_tokens: int = 11
    completion_tokens: int = 7

    @property
    def _llm_type(self) -> str:
        return "provider-usage-llm"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider="openai", ls_model_name="gpt-3.5-turbo-instruct")
        return params

    def _generate(
        self, prompts: list[str], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> LLMResult:
        return LLMResult(
            generations=[[Generation(text=self.text)] for _ in prompts],
            llm_output={
                "token_usage": {
                    "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": self.completion_tokens,
                    "total_tokens": self.prompt_tokens + self.completion_tokens,
                },
                "model_name": "gpt-3.5-turbo-instruct",
            },
        )
