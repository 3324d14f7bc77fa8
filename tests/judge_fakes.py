"""A scripted judge model and a small RAG chain for the judge and feedback tests."""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableParallel, RunnablePassthrough
from lc_fakes import ai, chat
from pydantic import Field

GOOD = '{"faithfulness": 4, "relevance": 5, "completeness": 3, "hallucination": "no", "reason": "ok"}'
# USD per million tokens: 100 input + 20 output tokens cost 0.1 + 0.1 = 0.2 per evaluation
JUDGE_PRICES = {"judge-model": {"input": 1000.0, "output": 5000.0}}
DOC = "Refunds are processed within 5 business days."


class ScriptedJudge(BaseChatModel):
    """Answers the next scripted item: text (with usage 100/20), or raises an Exception item.
    ``started`` is set when a call begins; a call waits for ``gate`` when one is given."""

    script: list = Field(default_factory=list)
    model_name: str = "judge-model"
    prompts: list = Field(default_factory=list)
    started: Any = None
    gate: Any = None

    @property
    def _llm_type(self) -> str:
        return "scripted-judge"

    def _get_ls_params(self, stop: Any = None, **kwargs: Any) -> dict[str, Any]:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider="openai", ls_model_name=self.model_name)
        return params

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.prompts.append(messages[-1].content)
        if self.started is not None:
            self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        item = self.script.pop(0) if self.script else GOOD
        if isinstance(item, Exception):
            raise item
        msg = AIMessage(
            content=item,
            usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
            response_metadata={"model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])


def scripted(*items: Any, gate: threading.Event | None = None) -> ScriptedJudge:
    return ScriptedJudge(script=list(items), prompts=[], started=threading.Event(), gate=gate)


class DocsRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list:
        return [Document(page_content=DOC, metadata={"id": "kb-1"})]


def rag_chain(answer: str = "Refunds take 5 business days.") -> Any:
    prompt = ChatPromptTemplate.from_messages([("human", "Context: {context}\nQuestion: {question}")])
    model = chat(*(ai(answer, 50, 10) for _ in range(50)))
    return (
        RunnableParallel(context=DocsRetriever(), question=RunnablePassthrough())
        | prompt
        | model
        | StrOutputParser()
    )
