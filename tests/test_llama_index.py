"""LlamaIndex on the instrumentation API: the traces a user sees for queries, streams, chat
engines, tools, rerankers, errors, concurrency and threads (real llama-index-core, usage-
reporting ``MockLLM`` and a word-hashing ``MockEmbedding``; no network)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import threading
import uuid
from collections import defaultdict
from typing import Any

import pytest
from conftest import fetch
from li_fakes import (  # noqa: F401 - fixtures: li, li_settings, clean_dispatcher
    KNOWLEDGE,
    SNAPSHOT,
    UsageMockLLM,
    WordHashEmbedding,
    clean_dispatcher_fixture,
    knowledge_index,
    li_fixture,
    li_settings_fixture,
)
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.dispatcher import instrument_tags
from llama_index.core.llms import ChatMessage
from llama_index.core.postprocessor import LLMRerank
from llama_index.core.prompts import PromptTemplate
from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT_TMPL
from llama_index.core.prompts.prompt_type import PromptType
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.tools import FunctionTool
from llama_index_instrumentation.span_handlers.base import Thread as LlamaIndexThread

from llmobs_callbacks import LLMObs

# gpt-4o-mini, USD per 1M tokens: $0.15 input, $0.075 cached input, $0.60 output.
MINI_IN, MINI_CACHED, MINI_OUT = 0.15, 0.075, 0.60
QUESTION = "How long do refunds take?"


def _cost(prompt: int, completion: int, cached: int = 0) -> float:
    return ((prompt - cached) * MINI_IN + cached * MINI_CACHED + completion * MINI_OUT) / 1e6


def _rows(obs: LLMObs, **where: Any) -> list[dict]:
    assert obs.flush()
    return fetch(obs.database_url, "spans", order_by="start_time", **where)


def _trace(obs: LLMObs, root_name: str) -> list[dict]:
    """Every span of the (only) trace whose root is ``root_name``."""
    rows = _rows(obs)
    roots = [r for r in rows if r["name"] == root_name and r["parent_span_id"] is None]
    assert len(roots) == 1, [(r["name"], r["parent_span_id"]) for r in rows]
    return [r for r in rows if r["trace_id"] == roots[0]["span_id"]]


def _ancestry(spans: list[dict], span: dict) -> list[str]:
    """Names from ``span`` up to its trace's root."""
    by_id = {s["span_id"]: s for s in spans}
    names = [span["name"]]
    while span["parent_span_id"] is not None:
        span = by_id[span["parent_span_id"]]
        names.append(span["name"])
    return names


def _only(spans: list[dict], **where: Any) -> dict:
    found = [s for s in spans if all(s[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, [(s["kind"], s["name"]) for s in spans])
    return found[0]


def _assert_usage(row: dict, prompt: int, completion: int, cached: int | None = None) -> None:
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (
        prompt,
        completion,
        prompt + completion,
    )
    assert row["cached_input_tokens"] == cached
    assert row["model"] == SNAPSHOT
    assert row["cost_usd"] == pytest.approx(_cost(prompt, completion, cached or 0), rel=1e-12)
    # the mock LLM names no provider: genai-prices' openai is inferred from the model name
    assert row["price_source"].endswith(
        ":openai/gpt-4o-mini (provider inferred from the model; no provider given)"
    )


# ---------------------------------------------------------------------- a query


def test_query_is_one_trace_with_kinds_tokens_cost_documents_and_prompt(li: LLMObs) -> None:
    llm = UsageMockLLM(prompt_tokens=1000, completion_tokens=100, cached_tokens=400)
    response = knowledge_index().as_query_engine(llm=llm, similarity_top_k=2).query(QUESTION)
    assert str(response) == "Refunds take 5 business days."

    spans = _trace(li, "RetrieverQueryEngine.query")
    root = spans[0]
    assert root["kind"] == "chain" and root["input"] == QUESTION and root["output"] == str(response)
    assert {s["framework"] for s in spans} == {"llama_index"} and {s["status"] for s in spans} == {"ok"}
    assert all(s["service"] == "test-svc" for s in spans)
    # one of each operation: LlamaIndex's inner ``_retrieve``/``_get_query_embedding`` are merged
    kinds = defaultdict(list)
    for s in spans:
        kinds[s["kind"]].append(s["name"])
    assert kinds["llm"] == ["UsageMockLLM.complete"]
    assert kinds["retriever"] == ["VectorIndexRetriever.retrieve"]
    assert kinds["embedding"] == ["WordHashEmbedding.get_query_embedding"]
    llm_row = _only(spans, kind="llm")
    assert _ancestry(spans, llm_row) == [
        "UsageMockLLM.complete",
        "UsageMockLLM.predict",
        "DefaultRefineProgram.__call__",
        "CompactAndRefine.get_response",
        "CompactAndRefine.get_response",
        "CompactAndRefine.synthesize",
        "RetrieverQueryEngine._query",
        "RetrieverQueryEngine.query",
    ]
    embedding = _only(spans, kind="embedding")
    assert _ancestry(spans, embedding)[1:] == [
        "VectorIndexRetriever.retrieve",
        "RetrieverQueryEngine._query",
        "RetrieverQueryEngine.query",
    ]
    assert embedding["input"] == QUESTION and json.loads(embedding["output"]) == {
        "embeddings": 1,
        "dimensions": 64,
    }
    # children within their parent's interval
    by_id = {s["span_id"]: s for s in spans}
    for s in spans[1:]:
        parent = by_id[s["parent_span_id"]]
        assert parent["start_time"] <= s["start_time"] and s["end_time"] <= parent["end_time"]

    # tokens and cost exactly once, on the LLM call
    _assert_usage(llm_row, 1000, 100, cached=400)
    assert llm_row["cost_usd"] == pytest.approx((600 * 0.15 + 400 * 0.075 + 100 * 0.60) / 1e6, rel=1e-12)
    assert sum(s["cost_usd"] or 0 for s in spans) == pytest.approx(llm_row["cost_usd"], rel=1e-12)
    assert llm_row["output"] == "Refunds take 5 business days."
    assert llm_row["input"].startswith("Context information is below.")

    # the prompt template: derived version of LlamaIndex's default text-QA template
    version = hashlib.sha256(DEFAULT_TEXT_QA_PROMPT_TMPL.encode()).hexdigest()[:12]
    assert (llm_row["prompt_name"], llm_row["prompt_version"]) == ("text_qa", version)
    prompts = fetch(li.database_url, "prompt_versions")
    assert [(p["prompt_name"], p["prompt_version"], p["template"]) for p in prompts] == [
        ("text_qa", version, DEFAULT_TEXT_QA_PROMPT_TMPL)
    ]

    # every retrieved node, in rank order, with id, score, text and metadata
    retriever = _only(spans, kind="retriever")
    assert retriever["input"] == QUESTION and json.loads(retriever["output"]) == {"documents": 2}
    docs = fetch(li.database_url, "retrieved_documents", "rank", span_id=retriever["span_id"])
    assert [(d["rank"], d["document_id"], d["score"]) for d in docs] == [
        (rank, n.node.node_id, pytest.approx(n.score, rel=1e-12))
        for rank, n in enumerate(response.source_nodes)
    ]
    assert docs[0]["content"] == KNOWLEDGE["refunds"] and docs[0]["attributes"] == {"topic": "refunds"}
    assert docs[0]["score"] > docs[1]["score"]
    assert {d["trace_id"] for d in docs} == {root["span_id"]}


def test_custom_template_version_and_declared_version_wins(li: LLMObs) -> None:
    template_text = "Context: {context_str}\nQuestion: {query_str}\nAnswer briefly: "
    template = PromptTemplate(template_text, prompt_type=PromptType.QUESTION_ANSWER)
    engine = knowledge_index().as_query_engine(llm=UsageMockLLM(), text_qa_template=template)
    engine.query(QUESTION)
    with instrument_tags({"prompt_version": "v7", "prompt_name": "support"}):
        engine.query(QUESTION)
    llm_rows = _rows(li, kind="llm")
    digest = hashlib.sha256(template_text.encode()).hexdigest()
    assert [(r["prompt_name"], r["prompt_version"], r["template_hash"]) for r in llm_rows] == [
        ("text_qa", digest[:12], digest),
        ("support", "v7", digest),
    ]
    # the declared version lists the template it served
    prompts = fetch(li.database_url, "prompt_versions", order_by="prompt_name")
    assert [(p["prompt_name"], p["prompt_version"], p["template_hash"], p["template"]) for p in prompts] == [
        ("support", "v7", digest, template_text),
        ("text_qa", digest[:12], digest, template_text),
    ]


# ---------------------------------------------------------------------- streaming


def test_streamed_query_llm_span_covers_the_whole_stream(li: LLMObs) -> None:
    llm = UsageMockLLM(
        answer="one two three four five", chunk_delay=0.02, prompt_tokens=50, completion_tokens=8
    )
    response = knowledge_index().as_query_engine(llm=llm, streaming=True).query(QUESTION)
    assert "".join(response.response_gen) == "one two three four five"

    spans = _trace(li, "RetrieverQueryEngine.query")
    root = spans[0]
    llm_row = _only(spans, kind="llm")
    # the LLM runs while the app iterates, after LlamaIndex closed the query's spans: still
    # the same trace, under the synthesizer that returned the stream
    assert _ancestry(spans, llm_row) == [
        "UsageMockLLM.stream_complete",
        "UsageMockLLM.stream",
        "CompactAndRefine.get_response",
        "CompactAndRefine.get_response",
        "CompactAndRefine.synthesize",
        "RetrieverQueryEngine._query",
        "RetrieverQueryEngine.query",
    ]
    assert root["output"] is None  # a stream: the text is on the LLM span
    assert llm_row["end_time"] > root["end_time"]
    assert llm_row["status"] == "ok" and llm_row["output"] == "one two three four five"
    assert llm_row["latency_ms"] >= 5 * 20 * 0.9  # open until the last chunk
    assert 0 < llm_row["ttft_ms"] < llm_row["latency_ms"] - 50
    _assert_usage(llm_row, 50, 8)
    assert llm_row["prompt_name"] == "text_qa"


async def test_async_streamed_query_is_one_trace_with_one_llm_span(li: LLMObs) -> None:
    llm = UsageMockLLM(answer="one two three", chunk_delay=0.01)
    response = await knowledge_index().as_query_engine(llm=llm, streaming=True).aquery(QUESTION)
    assert "".join([t async for t in response.async_response_gen()]) == "one two three"
    spans = _trace(li, "RetrieverQueryEngine.aquery")
    llm_row = _only(spans, kind="llm")
    assert _ancestry(spans, llm_row)[:3] == [
        "UsageMockLLM.astream_complete",
        "UsageMockLLM.astream",
        "CompactAndRefine.aget_response",
    ]
    assert llm_row["output"] == "one two three" and llm_row["latency_ms"] >= 3 * 10 * 0.9
    _assert_usage(llm_row, 120, 30)


def test_stream_closed_early_or_never_consumed_stays_ok_with_the_reason(li: LLMObs) -> None:
    llm = UsageMockLLM(answer="one two three four five")
    stream = llm.stream_complete("count")
    assert next(stream).delta == "one" and next(stream).delta == " two"
    stream.close()
    never = llm.stream_complete("count")
    del never
    gc.collect()
    llm.complete("next")  # closed at the next LlamaIndex call (never inside the collector)
    rows = _rows(li, kind="llm")
    assert len(rows) == 3 and li.stats()["open_spans"] == 0
    early, unread, _ = rows
    assert (early["status"], early["error_type"]) == ("ok", "GeneratorExit")
    assert early["output"] == "one two" and early["ttft_ms"] is not None
    assert early["input_tokens"] is None and early["cost_usd"] is None  # the usage chunk never came
    assert (unread["status"], unread["error_type"]) == ("ok", "GeneratorExit")
    assert unread["error_message"] == "the stream was never consumed" and unread["output"] is None


# ---------------------------------------------------------------------- one call, one span


@pytest.mark.parametrize("usage_in", ["raw", "additional_kwargs"])
async def test_nested_llm_methods_are_one_span_with_tokens_once(li: LLMObs, usage_in: str) -> None:
    llm = UsageMockLLM(usage_in=usage_in)
    messages = [ChatMessage(role="user", content="hi")]
    assert llm.chat(messages).message.content == "Refunds take 5 business days."  # chat → complete
    assert "".join(r.delta for r in llm.stream_chat(messages)) == "Refunds take 5 business days."
    assert (await llm.acomplete("hi")).text == "Refunds take 5 business days."  # acomplete → complete
    # astream_complete runs stream_complete lazily, inside its generator, after its span exited
    assert [r.delta async for r in await llm.astream_complete("hi")][-1] == " days."
    rows = _rows(li)
    assert [(r["kind"], r["name"], r["parent_span_id"]) for r in rows] == [
        ("llm", "UsageMockLLM.chat", None),
        ("llm", "UsageMockLLM.stream_chat", None),
        ("llm", "UsageMockLLM.acomplete", None),
        ("llm", "UsageMockLLM.astream_complete", None),
    ]
    for row in rows:
        assert row["input_tokens"] == 120 and row["output_tokens"] == 30
        assert row["model"] == SNAPSHOT  # from the response, or the LLM's own metadata
        assert row["cost_usd"] == pytest.approx(_cost(120, 30), rel=1e-12)
        assert row["output"] == "Refunds take 5 business days."
    assert json.loads(rows[0]["input"]) == [{"role": "user", "content": "hi"}]
    assert rows[2]["input"] == "hi"
    assert rows[1]["ttft_ms"] is not None and rows[0]["ttft_ms"] is None
    assert rows[3]["ttft_ms"] is not None and rows[3]["input"] == "hi"


# ---------------------------------------------------------------------- chat engine, context


def test_chat_engine_with_declared_context(li: LLMObs) -> None:
    engine = knowledge_index().as_chat_engine(chat_mode="condense_plus_context", llm=UsageMockLLM())
    with li.context(session_id="s-1", user_id="u-1", prompt_version="v2", tags=["beta"], team="support"):
        assert str(engine.chat("How long do refunds take?")) == "Refunds take 5 business days."
        assert str(engine.chat("And shipping?")) == "Refunds take 5 business days."
    rows = _rows(li)
    roots = [r for r in rows if r["parent_span_id"] is None and r["name"].endswith(".chat")]
    assert [r["name"] for r in roots] == ["CondensePlusContextChatEngine.chat"] * 2
    for root in roots:
        spans = [r for r in rows if r["trace_id"] == root["span_id"]]
        assert {s["kind"] for s in spans} >= {"chain", "retriever", "embedding", "llm"}
        for s in spans:
            assert (s["session_id"], s["user_id"], s["prompt_version"]) == ("s-1", "u-1", "v2")
            assert s["tags"] == ["beta"] and s["attributes"]["team"] == "support"
    second_llms = [r for r in rows if r["trace_id"] == roots[1]["span_id"] and r["kind"] == "llm"]
    assert len(second_llms) == 2  # condense the question with the history, then answer
    assert all(r["input_tokens"] == 120 for r in second_llms)


def test_instrument_tags_declare_context_without_framework_tags(li: LLMObs) -> None:
    engine = knowledge_index().as_query_engine(llm=UsageMockLLM())
    with instrument_tags({"session_id": "s-9", "user_id": "u-9", "tags": ["vip"], "tenant": "acme"}):
        engine.query(QUESTION)
    spans = _trace(li, "RetrieverQueryEngine.query")
    for s in spans:
        assert (s["session_id"], s["user_id"], s["tags"]) == ("s-9", "u-9", ["vip"])
        declared = {k: v for k, v in s["attributes"].items() if k != "invocation_params"}
        assert declared == {"session_id": "s-9", "user_id": "u-9", "tenant": "acme"}


# ---------------------------------------------------------------------- errors


def test_llm_error_marks_the_span_and_its_ancestors_and_reaches_the_user_unchanged(li: LLMObs) -> None:
    boom = RuntimeError("model is down")
    engine = knowledge_index().as_query_engine(llm=UsageMockLLM(fail_with=boom))
    with pytest.raises(RuntimeError) as info:
        engine.query(QUESTION)
    assert info.value is boom
    spans = _trace(li, "RetrieverQueryEngine.query")
    llm_row = _only(spans, kind="llm")
    failed = _ancestry(spans, llm_row)
    assert failed[0] == "UsageMockLLM.complete" and failed[-1] == "RetrieverQueryEngine.query"
    on_path = [s for s in spans if s["name"] in failed]
    assert len(on_path) == len(failed)  # every span from the LLM call up to the root…
    for s in on_path:  # …failed with the user's exception
        assert (s["status"], s["error_type"], s["error_message"]) == (
            "error",
            "RuntimeError",
            "model is down",
        )
    assert {s["status"] for s in spans if s not in on_path} == {"ok"}
    assert _only(spans, kind="retriever")["status"] == "ok"
    assert llm_row["input_tokens"] is None and llm_row["cost_usd"] is None
    assert li.stats()["handler_errors"] == {}


def test_tool_span_arguments_output_and_error(li: LLMObs) -> None:
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        if a < 0:
            raise ValueError("negative input")
        return a * b

    tool = FunctionTool.from_defaults(fn=multiply)
    assert tool.call(a=6, b=7).content == "42"
    with pytest.raises(ValueError, match="negative input"):
        tool.call(a=-1, b=2)
    assert asyncio.run(tool.acall(a=2, b=3)).content == "6"
    rows = _rows(li)
    assert [(r["kind"], r["name"], r["status"]) for r in rows] == [
        ("tool", "multiply", "ok"),
        ("tool", "multiply", "error"),
        ("tool", "multiply", "ok"),
    ]
    assert json.loads(rows[0]["input"]) == {"a": 6, "b": 7} and rows[0]["output"] == "42"
    assert (rows[1]["error_type"], rows[1]["error_message"]) == ("ValueError", "negative input")
    assert json.loads(rows[2]["input"]) == {"a": 2, "b": 3} and rows[2]["output"] == "6"


def test_reranker_keeps_the_reranked_order(li: LLMObs) -> None:
    rerank_llm = UsageMockLLM(answer="Doc: 3, Relevance: 9\nDoc: 1, Relevance: 4", prompt_tokens=300)
    reranker = LLMRerank(llm=rerank_llm, top_n=2, choice_batch_size=10)
    engine = knowledge_index().as_query_engine(
        llm=UsageMockLLM(), similarity_top_k=3, node_postprocessors=[reranker]
    )
    response = engine.query(QUESTION)
    spans = _trace(li, "RetrieverQueryEngine.query")
    retriever, rerank = _only(spans, kind="retriever"), _only(spans, kind="reranker")
    assert rerank["name"] == "LLMRerank._postprocess_nodes"
    retrieved = fetch(li.database_url, "retrieved_documents", "rank", span_id=retriever["span_id"])
    reranked = fetch(li.database_url, "retrieved_documents", "rank", span_id=rerank["span_id"])
    assert len(retrieved) == 3
    assert [(d["document_id"], d["score"]) for d in reranked] == [
        (retrieved[2]["document_id"], 9.0),
        (retrieved[0]["document_id"], 4.0),
    ]
    assert [d["document_id"] for d in reranked] == [n.node.node_id for n in response.source_nodes]
    llms = [s for s in spans if s["kind"] == "llm"]
    assert sorted(s["input_tokens"] for s in llms) == [120, 300]
    assert _ancestry(spans, next(s for s in llms if s["input_tokens"] == 300))[2] == rerank["name"]


# ---------------------------------------------------------------------- concurrency, threads


async def test_twenty_concurrent_aqueries_are_twenty_complete_traces(li: LLMObs) -> None:
    index = knowledge_index(WordHashEmbedding(embed_dim=64))

    class SlowEmbedding(WordHashEmbedding):
        delay: float = 0.0

        async def _aget_query_embedding(self, query: str) -> list[float]:
            await asyncio.sleep(self.delay)  # interleave the queries
            return self._vector(query)

    async def one(i: int) -> str:
        retriever = index.as_retriever(embed_model=SlowEmbedding(embed_dim=64, delay=0.001 * (i % 5)))
        engine = RetrieverQueryEngine.from_args(
            retriever, llm=UsageMockLLM(answer=f"answer {i}", prompt_tokens=100 + i, completion_tokens=1 + i)
        )
        with li.context(session_id=f"s-{i}"):
            return str(await engine.aquery(f"question {i}"))

    answers = await asyncio.gather(*(one(i) for i in range(20)))
    assert answers == [f"answer {i}" for i in range(20)]
    rows = _rows(li)
    by_trace: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_trace[r["trace_id"]].append(r)
    builds = {t for t, spans in by_trace.items() if not any(s["name"].endswith("aquery") for s in spans)}
    assert {by_trace[t][0]["name"] for t in builds} <= {
        "SentenceSplitter.__call__",
        "WordHashEmbedding.get_text_embedding_batch",
    }  # building the index before the queries
    for t in builds:
        del by_trace[t]
    assert len(by_trace) == 20
    shapes = set()
    for spans in by_trace.values():
        ids = {s["span_id"] for s in spans}
        root = _only(spans, parent_span_id=None)
        assert root["name"] == "RetrieverQueryEngine.aquery" and root["span_id"] == root["trace_id"]
        assert all(s["parent_span_id"] in ids for s in spans if s is not root)
        i = int(root["input"].split()[-1])
        assert {s["session_id"] for s in spans} == {f"s-{i}"}
        llm_row = _only(spans, kind="llm")
        assert (llm_row["name"], llm_row["output"]) == ("UsageMockLLM.acomplete", f"answer {i}")
        assert (llm_row["input_tokens"], llm_row["output_tokens"]) == (100 + i, 1 + i)
        shapes.add(tuple(sorted((s["kind"], s["name"]) for s in spans)))
    assert len(shapes) == 1  # the same complete tree twenty times
    assert li.stats()["open_spans"] == 0 and li.stats()["handler_errors"] == {}


class _SideCallRetriever(BaseRetriever):
    """Retrieves normally, but first makes an LLM call on another thread."""

    def __init__(self, inner: BaseRetriever, side_llm: UsageMockLLM, thread_cls: type) -> None:
        super().__init__()
        self._inner, self._side_llm, self._thread_cls = inner, side_llm, thread_cls

    def _retrieve(self, query_bundle: Any) -> list:
        worker = self._thread_cls(target=lambda: self._side_llm.complete("side question"))
        worker.start()
        worker.join()
        return self._inner.retrieve(query_bundle)


@pytest.mark.parametrize("thread_cls", [threading.Thread, LlamaIndexThread], ids=["raw", "llama_index"])
def test_a_thread_that_loses_the_context_starts_its_own_trace(li: LLMObs, thread_cls: type) -> None:
    index = knowledge_index()
    side = UsageMockLLM(answer="side answer", prompt_tokens=7, completion_tokens=3)
    retriever = _SideCallRetriever(index.as_retriever(), side, thread_cls)
    engine = RetrieverQueryEngine.from_args(retriever, llm=UsageMockLLM())
    assert str(engine.query(QUESTION)) == "Refunds take 5 business days."
    rows = _rows(li)
    side_row = _only(rows, output="side answer")
    query = _only(rows, name="RetrieverQueryEngine.query")
    spans = [r for r in rows if r["trace_id"] == query["span_id"]]
    ids = {s["span_id"] for s in spans}
    assert all(s["parent_span_id"] in ids for s in spans if s is not query)
    assert sorted(s["output_tokens"] for s in spans if s["kind"] == "llm") == (
        [3, 30] if thread_cls is LlamaIndexThread else [30]
    )
    if thread_cls is threading.Thread:  # raw thread: LlamaIndex gives no parent, a trace of its own
        assert side_row["parent_span_id"] is None and side_row["trace_id"] == side_row["span_id"]
    else:  # LlamaIndex's Thread copies the context: the call stays in the query's trace
        assert side_row["trace_id"] == query["span_id"]
        assert side_row["parent_span_id"] == _only(spans, name="_SideCallRetriever.retrieve")["span_id"]


def test_queries_on_raw_threads_are_separate_complete_traces(li: LLMObs) -> None:
    index = knowledge_index()
    answers: dict[int, str] = {}

    def run(i: int) -> None:
        engine = index.as_query_engine(llm=UsageMockLLM(answer=f"answer {i}", completion_tokens=i + 1))
        answers[i] = str(engine.query(f"question {i}"))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert answers == {i: f"answer {i}" for i in range(6)}
    rows = _rows(li)
    roots = [r for r in rows if r["name"] == "RetrieverQueryEngine.query"]
    assert len(roots) == 6 and all(r["parent_span_id"] is None for r in roots)
    shapes = set()
    for root in roots:
        spans = [r for r in rows if r["trace_id"] == root["span_id"]]
        ids = {s["span_id"] for s in spans}
        assert all(s["parent_span_id"] in ids for s in spans if s is not root)
        i = int(root["input"].split()[-1])
        assert _only(spans, kind="llm")["output_tokens"] == i + 1
        shapes.add(tuple(sorted((s["kind"], s["name"]) for s in spans)))
    assert len(shapes) == 1


# ---------------------------------------------------------------------- attach, detach, errors


def test_instrument_attaches_once_and_close_detaches(
    obs: LLMObs, li_settings: None, clean_dispatcher: None
) -> None:
    root = get_dispatcher()
    n_span, n_event = len(root.span_handlers), len(root.event_handlers)
    handle = obs.instrument_llama_index()
    assert obs.instrument_llama_index() is handle  # idempotent
    assert (len(root.span_handlers), len(root.event_handlers)) == (n_span + 1, n_event + 1)
    llm = UsageMockLLM()
    llm.complete("one")
    assert len(_rows(obs)) == 1
    handle.close()
    handle.close()
    assert (len(root.span_handlers), len(root.event_handlers)) == (n_span, n_event)
    llm.complete("two")
    assert len(_rows(obs)) == 1  # nothing recorded once detached
    again = obs.instrument_llama_index()
    llm.complete("three")
    assert len(_rows(obs)) == 2
    obs.shutdown()  # shutting down detaches as well
    assert not again.attached and (len(root.span_handlers), len(root.event_handlers)) == (n_span, n_event)


def test_internal_errors_are_counted_and_never_reach_the_app(
    li: LLMObs, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("recorder bug")

    monkeypatch.setattr(li.recorder, "start", broken)
    response = knowledge_index().as_query_engine(llm=UsageMockLLM()).query(QUESTION)
    assert str(response) == "Refunds take 5 business days."
    errors = li.stats()["handler_errors"]
    assert errors["llama_index.span_enter"] > 0


def test_a_query_inside_a_recorded_langchain_run_joins_its_trace(li: LLMObs) -> None:
    from langchain_core.runnables import RunnableLambda

    engine = knowledge_index().as_query_engine(llm=UsageMockLLM())
    step = RunnableLambda(lambda q: str(engine.query(q)), name="lc_step")
    run_id = uuid.uuid4()
    metadata = {"session_id": "s-lc", "prompt_version": "v3"}
    config = {"callbacks": [li.langchain_handler()], "run_id": run_id, "metadata": metadata}
    assert step.invoke(QUESTION, config=config) == "Refunds take 5 business days."
    assert step.invoke(QUESTION) == "Refunds take 5 business days."  # LangChain not recorded
    rows = _rows(li)
    inside, alone = [r for r in rows if r["name"] == "RetrieverQueryEngine.query"]
    assert inside["parent_span_id"] == str(run_id) and inside["trace_id"] == str(run_id)
    spans = [r for r in rows if r["trace_id"] == str(run_id)]
    assert {r["framework"] for r in spans} == {"langchain", "llama_index"}
    assert {(r["session_id"], r["prompt_version"]) for r in spans} == {("s-lc", "v3")}
    assert alone["parent_span_id"] is None and alone["trace_id"] == alone["span_id"]
