"""Shared pieces of the Prometheus tests: real LangChain traffic, sample readers, binaries."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from typing import Any, Literal

import pytest
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from lc_fakes import UsageFakeChatModel, ai, chat
from prometheus_client import CollectorRegistry
from pydantic import Field
from typing_extensions import TypedDict

from llmobs_callbacks import LLMObs

REQUIRE_ENV = "LLMOBS_REQUIRE_PROMETHEUS"


def prometheus_binary(name: str) -> str:
    """Path of ``prometheus`` / ``promtool``; skip (or fail under CI's LLMOBS_REQUIRE_PROMETHEUS=1)."""
    path = shutil.which(name)
    if path is None:
        reason = (
            f"`{name}` not found on PATH: install Debian's `prometheus` package "
            "(apt-get install prometheus; .ci/run does)"
        )
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{reason}, and {REQUIRE_ENV} is set")
        pytest.skip(reason)
    return path


def samples(registry: CollectorRegistry, name: str) -> dict[frozenset, float]:
    """Every sample called ``name``: {frozenset(labels.items()): value}."""
    return {
        frozenset(s.labels.items()): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name
    }


def label_values(registry: CollectorRegistry, name: str, label: str) -> set[str]:
    return {dict(k)[label] for k in samples(registry, name)}


class DocsRetriever(BaseRetriever):
    """Returns ``docs`` (possibly none) for every query."""

    docs: list[str] = Field(default_factory=list)

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return [Document(page_content=d) for d in self.docs]


class FailingChatModel(UsageFakeChatModel):
    """A chat model whose provider is down."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("provider unavailable")

    def _stream(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("provider unavailable")


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order."""
    if order_id == "missing":
        raise ValueError("no such order")
    return "shipped"


class RouteState(TypedDict, total=False):
    question: str
    answer: str


def support_graph(name: str = "support") -> Any:
    """A LangGraph app routing ``refund`` questions to one node and the rest to another (the
    node names are the same whatever ``name``: graphs are told apart by the ``graph`` label)."""

    def classify(s: RouteState) -> RouteState:
        return {}

    def route(s: RouteState) -> Literal["refunds", "general"]:
        return "refunds" if "refund" in s["question"] else "general"

    g = StateGraph(RouteState)
    g.add_node("classify", classify)
    g.add_node("refunds", lambda s: {"answer": "refund policy"})
    g.add_node("general", lambda s: {"answer": "general help"})
    g.add_edge(START, "classify")
    g.add_conditional_edges("classify", route, ["refunds", "general"])
    g.add_edge("refunds", END)
    g.add_edge("general", END)
    return g.compile(name=name)


def rag_chain(llm: Any, retriever: BaseRetriever) -> Any:
    prompt = ChatPromptTemplate.from_messages([("system", "Context: {context}"), ("human", "{question}")])
    context = retriever | (lambda docs: " ".join(d.page_content for d in docs))
    return {"context": context, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()


def run_traffic(obs: LLMObs, n: int = 1) -> list[str]:
    """Every kind of run the metrics and the dashboard cover, ``n`` times; returns trace ids.

    Per round: 2 RAG traces (one with an empty retrieval) on gpt-4o-mini / prompt v2, one streamed
    call (TTFT), one unpriced model, one failing LLM call, 2 tool calls (one failing), 2 routed
    graph runs, judge scores, feedback and one internal handler error.
    """
    handler = obs.langchain_handler()
    traces: list[str] = []

    def cfg(**metadata: Any) -> dict[str, Any]:
        run_id = uuid.uuid4()
        traces.append(str(run_id))
        return {"callbacks": [handler], "run_id": run_id, "metadata": metadata}

    for _ in range(n):
        llm = chat(ai("Refunds take 5 days.", 1200, 80, cached=200), ai("Sorry, nothing found.", 300, 20))
        rag_chain(llm, DocsRetriever(docs=["refunds take 5 days", "returns are free"])).invoke(
            "How long do refunds take?", config=cfg(prompt_version="v2", session_id="s-1", user_id="u-1")
        )
        rag_chain(llm, DocsRetriever(docs=[])).invoke("Anything?", config=cfg(prompt_version="v2"))
        list(chat(ai("one two three", 40, 6)).stream("stream please", config=cfg(prompt_version="v1")))
        chat(ai("x", 100, 10), model_name="my-finetune-xyz").invoke("q", config=cfg())
        with contextlib.suppress(RuntimeError):
            FailingChatModel(messages=iter([]), model_name="gpt-4o-mini").invoke(
                "q", config=cfg(prompt_version="v2")
            )
        lookup_order.invoke({"order_id": "A-1"}, config=cfg())
        with contextlib.suppress(ValueError):
            lookup_order.invoke({"order_id": "missing"}, config=cfg())
        graph = support_graph()
        graph.invoke({"question": "refund please"}, config=cfg())
        graph.invoke({"question": "opening hours?"}, config=cfg())
        assert obs.metrics is not None
        obs.metrics.observe_score("faithfulness", 4.0, "v2", trace_id=traces[0])
        obs.metrics.observe_score("hallucination", 0.0, "v2", trace_id=traces[0])
        obs.metrics.count_judge_evaluation("ok")
        obs.metrics.count_feedback("positive")
        handler.on_chain_end({}, run_id=uuid.uuid4())  # an end without a start: a counted internal error
    return traces
