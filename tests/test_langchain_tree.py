"""The trace tree a user sees for LCEL sequences, parallels, errors, tools and retrievers."""

from __future__ import annotations

import uuid
from datetime import timezone

import pytest
from conftest import fetch, spans_by_name
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore
from lc_fakes import ai, chat

from llmobs_callbacks import LLMObs


def _rag_chain(llm):
    prompt = ChatPromptTemplate.from_messages([("system", "Context: {context}"), ("human", "{q}")])
    return (
        RunnableParallel(
            context=RunnableLambda(lambda x: "ctx", name="get_context"),
            q=RunnableLambda(lambda x: x["q"], name="get_q"),
        )
        | prompt
        | llm
        | StrOutputParser()
    )


def test_sequence_tree_shape_kinds_and_timing(obs: LLMObs) -> None:
    root_id = uuid.uuid4()
    chain = _rag_chain(chat(ai("hello world", 100, 20)))
    assert chain.invoke({"q": "hi"}, config={"callbacks": [obs.langchain_handler()], "run_id": root_id}) == (
        "hello world"
    )
    assert obs.flush(10)
    rows = fetch(obs.database_url, "spans")
    by_name = {r["name"]: r for r in rows}
    assert len(rows) == 7
    assert set(by_name) == {
        "RunnableSequence",
        "RunnableParallel<context,q>",
        "get_context",
        "get_q",
        "ChatPromptTemplate",
        "UsageFakeChatModel",
        "StrOutputParser",
    }
    root = by_name["RunnableSequence"]
    assert root["span_id"] == str(root_id) and root["trace_id"] == str(root_id)
    assert root["parent_span_id"] is None
    assert {r["trace_id"] for r in rows} == {str(root_id)}
    par = by_name["RunnableParallel<context,q>"]
    assert par["parent_span_id"] == str(root_id)
    assert by_name["get_context"]["parent_span_id"] == par["span_id"]
    assert by_name["ChatPromptTemplate"]["kind"] == "prompt"
    assert by_name["UsageFakeChatModel"]["kind"] == "llm"
    assert by_name["StrOutputParser"]["kind"] == "parser"
    assert root["kind"] == "chain"
    for r in rows:
        assert r["framework"] == "langchain" and r["status"] == "ok"
        assert r["service"] == "test-svc" and r["environment"] == "test"
        start, end = r["start_time"], r["end_time"]
        assert start.tzinfo is not None and start.utcoffset() == timezone.utc.utcoffset(None)
        assert end >= start
        assert r["latency_ms"] == pytest.approx((end - start).total_seconds() * 1000, abs=0.01)
    # children start within their parent's interval
    assert by_name["UsageFakeChatModel"]["start_time"] >= root["start_time"]
    assert by_name["UsageFakeChatModel"]["end_time"] <= root["end_time"]


def test_error_marks_failing_span_and_ancestors_and_reaches_user_unchanged(obs: LLMObs) -> None:
    boom = KeyError("missing-key")

    def fail(_):
        raise boom

    chain = RunnableLambda(lambda x: x, name="first") | RunnableLambda(fail, name="explode")
    outer = RunnableLambda(lambda x: chain.invoke(x), name="outer")
    with pytest.raises(KeyError) as info:
        outer.invoke(1, config={"callbacks": [obs.langchain_handler()]})
    assert info.value is boom
    assert obs.flush()
    spans = spans_by_name(obs.database_url)
    for name in ("explode", "RunnableSequence", "outer"):
        assert spans[name]["status"] == "error", name
        assert spans[name]["error_type"] == "KeyError"
        assert "missing-key" in spans[name]["error_message"]
    assert spans["first"]["status"] == "ok" and spans["first"]["error_type"] is None


def test_tool_span_name_input_output_and_error(obs: LLMObs) -> None:
    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    @tool
    def broken(x: str) -> str:
        """Always fails."""
        raise RuntimeError("tool is down")

    handler = obs.langchain_handler()
    assert multiply.invoke({"a": 6, "b": 7}, config={"callbacks": [handler]}) == 42
    with pytest.raises(RuntimeError, match="tool is down"):
        broken.invoke({"x": "y"}, config={"callbacks": [handler]})
    assert obs.flush()
    spans = spans_by_name(obs.database_url)
    ok, bad = spans["multiply"], spans["broken"]
    assert ok["kind"] == "tool" and ok["status"] == "ok"
    assert '"a":6' in ok["input"] and '"b":7' in ok["input"]
    assert ok["output"] == "42"
    assert ok["latency_ms"] >= 0
    assert bad["kind"] == "tool" and bad["status"] == "error"
    assert bad["error_type"] == "RuntimeError" and bad["error_message"] == "tool is down"


def test_retriever_documents_in_rank_order_with_scores_when_given(obs: LLMObs) -> None:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.retrievers import BaseRetriever

    class ScoredRetriever(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun):
            return [
                Document(id="d-2", page_content="second best" * 3, metadata={"score": 0.91, "src": "a"}),
                Document(id="d-9", page_content="other", metadata={"relevance_score": 0.5}),
                Document(page_content="no score", metadata={"source": "wiki/x"}),
            ]

    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([Document(id=f"v{i}", page_content=f"text {i}") for i in range(4)])
    handler = obs.langchain_handler()
    ScoredRetriever().invoke("q", config={"callbacks": [handler]})
    store.as_retriever(search_kwargs={"k": 2}).invoke("text 1", config={"callbacks": [handler]})
    assert obs.flush()
    spans = spans_by_name(obs.database_url)
    scored = spans["ScoredRetriever"]
    assert scored["kind"] == "retriever" and scored["input"] == "q"
    docs = fetch(obs.database_url, "retrieved_documents", "rank", span_id=scored["span_id"])
    assert [(d["rank"], d["document_id"], d["score"]) for d in docs] == [
        (0, "d-2", 0.91),
        (1, "d-9", 0.5),
        (2, "wiki/x", None),
    ]
    assert docs[0]["content"] == "second best" * 3
    assert docs[0]["attributes"] == {"score": 0.91, "src": "a"}
    assert {d["trace_id"] for d in docs} == {scored["trace_id"]}
    vs = spans["VectorStoreRetriever"]
    vs_docs = fetch(obs.database_url, "retrieved_documents", "rank", span_id=vs["span_id"])
    assert len(vs_docs) == 2 and all(d["score"] is None for d in vs_docs)  # LangChain drops them
    assert all(d["document_id"].startswith("v") for d in vs_docs)


def test_context_tags_metadata_and_invocation_params(obs: LLMObs) -> None:
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | chat(ai("ok", 5, 1))
    chain.invoke(
        {"q": "x"},
        config={
            "callbacks": [obs.langchain_handler()],
            "tags": ["beta"],
            "metadata": {"session_id": "s-1", "user_id": "u-1", "team": "support"},
        },
    )
    assert obs.flush()
    rows = fetch(obs.database_url, "spans")
    assert rows and all(r["session_id"] == "s-1" and r["user_id"] == "u-1" for r in rows)
    llm = next(r for r in rows if r["kind"] == "llm")
    assert "beta" in llm["tags"]
    assert llm["attributes"]["team"] == "support" and llm["attributes"]["session_id"] == "s-1"
    assert llm["attributes"]["invocation_params"]["_type"] == "generic-fake-chat-model"
    root = next(r for r in rows if r["parent_span_id"] is None)
    assert root["tags"] == ["beta"]


def test_unserialisable_input_stored_by_repr_and_long_output_truncated(db_url: str) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque thing>"

    with LLMObs(db_url, max_content_chars=100) as obs:
        RunnableLambda(lambda x: "y" * 1000, name="big").invoke(
            {"obj": Opaque(), "self": None}, config={"callbacks": [obs.langchain_handler()]}
        )
        assert obs.flush()
        row = spans_by_name(db_url)["big"]
    assert row["input"] == '{"obj":"<Opaque thing>","self":null}'
    assert len(row["output"]) == 100 and row["output"].endswith("…[truncated]")
