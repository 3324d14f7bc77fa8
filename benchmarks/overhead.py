"""What our handler adds to the user's request path, and what the writer sustains.

    python benchmarks/overhead.py [--rounds 15] [--n 200] [--ingest 50000]

* Per-invocation time of the same chain with no callbacks, with a no-op
  ``BaseCallbackHandler`` and with ``LLMObs(...).langchain_handler()`` (SQLite store, batch
  processor), in interleaved rounds (the order shuffled each round) so drift in machine speed
  hits every variant alike. Reported: medians over rounds, and the overhead of ours over the
  no-op handler per invocation and per run (span).
* The hot path alone: ``on_chain_start`` + ``on_chain_end`` called directly (no LangChain
  dispatch), µs per span.
* Ingest: spans/s from the processor queue into SQLite (chain spans, and priced LLM spans).
* LlamaIndex (when installed): µs per ``VectorStoreIndex`` query (the demo's query engine on
  LlamaIndex's ``MockLLM``/``MockEmbedding``) with no handler on the root dispatcher, with no-op
  span and event handlers, and with ``obs.instrument_llama_index()``: what we add per query
  over no handler, over the no-op baseline, and per span.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableParallel, RunnablePassthrough

from llmobs_callbacks import LLMObs
from llmobs_callbacks.model import SpanRecord, TokenUsage


class NoopHandler(BaseCallbackHandler):
    """The baseline: a handler LangChain must call, doing nothing."""

    run_inline = True

    def on_chain_start(self, *a: Any, **k: Any) -> None: ...
    def on_chain_end(self, *a: Any, **k: Any) -> None: ...
    def on_chat_model_start(self, *a: Any, **k: Any) -> None: ...
    def on_llm_end(self, *a: Any, **k: Any) -> None: ...
    def on_retriever_start(self, *a: Any, **k: Any) -> None: ...
    def on_retriever_end(self, *a: Any, **k: Any) -> None: ...


def _answers() -> Any:
    # itertools.repeat: safe to advance from the executor threads async runs use
    return itertools.repeat(
        AIMessage(
            "a short answer",
            usage_metadata={"input_tokens": 120, "output_tokens": 30, "total_tokens": 150},
            response_metadata={"model_name": "gpt-4o-mini"},
        )
    )


class Docs(BaseRetriever):
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [
            Document(id="d1", page_content="refunds take 5 days", metadata={"score": 0.9}),
            Document(id="d2", page_content="shipping takes 3 days", metadata={"score": 0.7}),
        ]


def chain_4() -> Any:
    """4 runs: sequence, prompt, chat model, parser."""
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")])
    return prompt | GenericFakeChatModel(messages=_answers()) | StrOutputParser()


def chain_7() -> Any:
    """7 runs: sequence, parallel, retriever, passthrough, prompt, chat model, parser."""
    prompt = ChatPromptTemplate.from_messages([("system", "Context: {context}"), ("human", "{question}")])
    return (
        RunnableParallel(context=Docs(), question=RunnablePassthrough())
        | prompt
        | GenericFakeChatModel(messages=_answers())
        | StrOutputParser()
    )


def _inputs(runs: int) -> Any:
    return {"question": "How long do refunds take?"} if runs == 4 else "How long do refunds take?"


def bench_invoke(
    chain: Any, runs: int, configs: dict[str, dict], rounds: int, n: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall time and the calling thread's CPU time, µs per invocation, per variant and round.

    The CPU time of the calling thread is what the hot path adds; wall time also includes
    the writer thread's share of the GIL when the app itself never waits (fake models).
    """
    wall: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}
    x = _inputs(runs)
    for _ in range(rounds):
        order = list(configs)
        random.shuffle(order)
        for name in order:
            cfg = configs[name]
            gc.collect()
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(n):
                chain.invoke(x, config=cfg)
            wall[name].append((time.perf_counter() - t0) / n * 1e6)
            cpu[name].append((time.thread_time() - c0) / n * 1e6)
    return wall, cpu


def bench_ainvoke(
    chain: Any, runs: int, configs: dict[str, dict], rounds: int, n: int, width: int
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {k: [] for k in configs}
    x = _inputs(runs)

    async def one_round(cfg: dict) -> float:
        t0 = time.perf_counter()
        for _ in range(max(n // width, 1)):
            await asyncio.gather(*(chain.ainvoke(x, config=cfg) for _ in range(width)))
        return (time.perf_counter() - t0) / (max(n // width, 1) * width) * 1e6

    for _ in range(rounds):
        order = list(configs)
        random.shuffle(order)
        for name in order:
            gc.collect()
            results[name].append(asyncio.run(one_round(configs[name])))
    return results


def bench_hot_path(n: int = 50_000, rounds: int = 5) -> float:
    """µs per span for start+end straight into our handler, no LangChain dispatch and no
    writer competing for the GIL: the caller-side cost alone (best of ``rounds``)."""
    from llmobs_callbacks.diagnostics import Diagnostics
    from llmobs_callbacks.integrations.langchain import LangChainCallbackHandler
    from llmobs_callbacks.recorder import Recorder

    class Discard:
        def on_end(self, span: SpanRecord) -> None:
            pass

    diagnostics = Diagnostics()
    h = LangChainCallbackHandler(Recorder(Discard(), diagnostics), diagnostics)
    root = uuid.uuid4()
    h.on_chain_start(None, {"q": 1}, run_id=root, name="root")
    md = {"prompt_version": "v1", "session_id": "s"}
    tags = ["seq:step:1"]
    best = float("inf")
    for _ in range(rounds):
        ids = [uuid.uuid4() for _ in range(n)]
        gc.collect()
        t0 = time.perf_counter()
        for rid in ids:
            h.on_chain_start(
                None, {"q": 1}, run_id=rid, parent_run_id=root, tags=tags, metadata=md, name="step"
            )
            h.on_chain_end({"a": 2}, run_id=rid)
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def bench_ingest(url: str, n: int, llm: bool) -> float:
    """Spans/s from a filled queue to committed rows (the writer thread's throughput)."""
    obs = LLMObs(url, max_queue_size=n + 10, flush_interval_s=3600, max_batch_size=n + 10)
    now = time.time_ns()
    spans = []
    for i in range(n):
        s = SpanRecord(uuid.uuid4(), "t", None, "llm" if llm else "chain", "step", "manual", now)
        s.end_ns, s.input, s.output = now + 1_000_000, {"q": i}, "answer " * 10
        s.metadata, s.tags, s.session_id = {"prompt_version": "v1"}, ["a"], "s"
        if llm:
            s.model, s.provider = "gpt-4o-mini", "openai"
            s.usage = TokenUsage(input_tokens=100 + i % 50, output_tokens=20, total_tokens=120 + i % 50)
        spans.append(s)
    for s in spans:  # the worker sleeps (batch size > n, timer 1 h) until flush
        obs.processor.on_end(s)
    t0 = time.perf_counter()
    assert obs.flush(timeout=600)
    elapsed = time.perf_counter() - t0
    obs.shutdown()
    return n / elapsed


def bench_llama_index(obs: LLMObs, rounds: int, n: int) -> tuple[dict, dict, int] | None:
    """(wall, caller CPU) µs per query per variant and round, and spans per query; None
    without llama-index-core."""
    try:
        from llama_index.core.instrumentation import get_dispatcher
        from llama_index.core.instrumentation.event_handlers import BaseEventHandler
        from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

        from llmobs_callbacks.demo import llama_index_drafter
    except ImportError:
        return None
    query = llama_index_drafter()
    if query is None:
        return None

    class NoopSpans(BaseSpanHandler[Any]):
        calls: int = 0

        def span_enter(self, *a: Any, **k: Any) -> None:
            self.calls += 1

        def span_exit(self, *a: Any, **k: Any) -> None: ...
        def span_drop(self, *a: Any, **k: Any) -> None: ...
        def new_span(self, *a: Any, **k: Any) -> None: ...
        def prepare_to_exit_span(self, *a: Any, **k: Any) -> None: ...
        def prepare_to_drop_span(self, *a: Any, **k: Any) -> None: ...

    class NoopEvents(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None: ...

    root = get_dispatcher()
    baseline = (list(root.span_handlers), list(root.event_handlers))
    noop_spans, noop_events = NoopSpans(), NoopEvents()
    question = "I was charged twice, can a manager help?"
    wall: dict[str, list[float]] = {"none": [], "noop": [], "llmobs": []}
    cpu: dict[str, list[float]] = {"none": [], "noop": [], "llmobs": []}
    try:
        for _ in range(rounds):
            order = list(wall)
            random.shuffle(order)
            for name in order:
                handle = None
                if name == "noop":
                    root.add_span_handler(noop_spans)
                    root.add_event_handler(noop_events)
                elif name == "llmobs":
                    handle = obs.instrument_llama_index()
                gc.collect()
                t0, c0 = time.perf_counter(), time.thread_time()
                for _ in range(n):
                    query(question)
                wall[name].append((time.perf_counter() - t0) / n * 1e6)
                cpu[name].append((time.thread_time() - c0) / n * 1e6)
                if handle is not None:
                    handle.close()
                root.span_handlers, root.event_handlers = list(baseline[0]), list(baseline[1])
                obs.flush(60)
    finally:
        root.span_handlers, root.event_handlers = baseline
    spans_per_query = round(noop_spans.calls / (rounds * n))
    return wall, cpu, spans_per_query


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f}"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=200, help="invocations per variant per round")
    parser.add_argument("--ingest", type=int, default=50_000, help="spans for the ingest benchmark")
    parser.add_argument("--async-width", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmobs-bench-"))
    obs = LLMObs(f"sqlite:///{tmp / 'bench.db'}")
    configs = {
        "none": {},
        "noop": {"callbacks": [NoopHandler()]},
        "llmobs": {"callbacks": [obs.langchain_handler()]},
    }
    print(f"rounds={args.rounds} n={args.n}; medians over rounds, µs per invocation\n")
    print("| chain | mode | measure | no callbacks | no-op handler | llmobs | added over no-op | per run |")
    print("|---|---|---|---:|---:|---:|---:|---:|")

    def row(label: str, mode: str, measure: str, res: dict[str, list[float]], runs: int) -> None:
        # Paired per round (the variants of one round ran back to back): machine drift
        # between rounds cancels out of the difference.
        added = _median([ours - noop for ours, noop in zip(res["llmobs"], res["noop"], strict=True)])
        print(
            f"| {label} | {mode} | {measure} | {_median(res['none']):.1f} | {_median(res['noop']):.1f} "
            f"| {_median(res['llmobs']):.1f} | {added:.1f} | {added / runs:.2f} |"
        )

    for runs, factory in ((4, chain_4), (7, chain_7)):
        chain = factory()
        obs.flush(60)
        wall, cpu = bench_invoke(chain, runs, configs, args.rounds, args.n)
        row(f"{runs}-run", "sync", "caller CPU", cpu, runs)
        row(f"{runs}-run", "sync", "wall", wall, runs)
        obs.flush(60)
        res = bench_ainvoke(chain, runs, configs, args.rounds, args.n, args.async_width)
        row(f"{runs}-run", f"async ×{args.async_width}", "wall", res, runs)
    obs.flush(60)
    li = bench_llama_index(obs, args.rounds, max(args.n // 4, 10))
    if li is not None:
        li_wall, li_cpu, spans = li
        print(f"\nLlamaIndex VectorStoreIndex query ({spans} spans), µs per query:\n")
        print(
            "| measure | no handler | no-op handlers | llmobs "
            "| added over no handler | added over no-op | per span |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for measure, res in (("caller CPU", li_cpu), ("wall", li_wall)):
            over_none = _median([a - b for a, b in zip(res["llmobs"], res["none"], strict=True)])
            over_noop = _median([a - b for a, b in zip(res["llmobs"], res["noop"], strict=True)])
            print(
                f"| {measure} | {_median(res['none']):.1f} | {_median(res['noop']):.1f} "
                f"| {_median(res['llmobs']):.1f} | {over_none:.1f} | {over_noop:.1f} "
                f"| {over_noop / spans:.2f} |"
            )
    stats = obs.stats()
    obs.shutdown()
    print(f"\nhot path alone (handler start+end called directly): {bench_hot_path():.2f} µs per span")
    print(f"dropped={stats['spans_dropped']} handler_errors={stats['handler_errors']}\n")
    for llm in (False, True):
        url = f"sqlite:///{tmp / f'ingest-{llm}.db'}"
        rate = bench_ingest(url, args.ingest if not llm else max(args.ingest // 5, 1000), llm)
        print(f"ingest into SQLite, {'LLM spans (priced)' if llm else 'chain spans'}: {rate:,.0f} spans/s")


if __name__ == "__main__":
    main()
