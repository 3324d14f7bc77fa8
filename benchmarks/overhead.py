"""What our handler adds to the user's request path, and what the writer sustains.

    python benchmarks/overhead.py [--rounds 7] [--n 60] [--sections chains,hot,ingest,llama]

* Chains (``--sections chains``): per-invocation time of a 4-run chain, a 7-run RAG chain and a
  LangGraph agent (a StateGraph with a conditional route, a tool node and a chat model), sync
  and 50-way async, with no callbacks, a no-op ``BaseCallbackHandler`` and our handler in five
  set-ups: SQLite + Prometheus (the default), SQLite without Prometheus, PostgreSQL +
  Prometheus, SQLite + Prometheus + the LLM judge at 5 % (``Judge`` with a fake chat model).
  Interleaved rounds (variant order shuffled every round, ``gc.collect()`` and a writer flush
  before each block, untimed) so drift in machine speed hits every variant alike. Reported:
  the median over rounds of wall µs per invocation, the p99 of single invocations (sync: each
  ``invoke``; async: each ``ainvoke`` from start to end among 50 concurrent ones), and the
  added µs as the median of the paired per-round differences over no callbacks and over the
  no-op handler, in *total CPU*: the process's CPU time from the block's start until the
  writer has stored its spans (app + writer + judge threads; PostgreSQL's own server work is
  not in it). On a shared machine wall time mostly measures the other processes; CPU time
  does not. The caller thread's CPU (what the request path itself pays) and wall are shown too.
* The hot path alone (``hot``): ``on_chain_start`` + ``on_chain_end`` called directly (no
  LangChain dispatch, no writer), µs per span.
* Ingest (``ingest``): sustained spans/s through the real ``BatchSpanProcessor`` (batch size
  and interval as configured) into SQLite and PostgreSQL, chain spans and priced LLM spans
  (Prometheus on), and the queue at saturation: a burst far above what the writer sustains.
* LlamaIndex (``llama``, when installed): µs per ``VectorStoreIndex`` query with no handler,
  no-op handlers and ``obs.instrument_llama_index()``.

PostgreSQL runs in a schema ``bench_<random>`` of ``--postgres`` (dropped at the end); its
variants are skipped with a message when the server does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableParallel, RunnablePassthrough
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from prometheus_client import CollectorRegistry
from typing_extensions import TypedDict

from llmobs_callbacks import LLMObs
from llmobs_callbacks.model import SpanRecord, TokenUsage

POSTGRES_URL = os.environ.get(
    "LLMOBS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class NoopHandler(BaseCallbackHandler):
    """The baseline: a handler LangChain must call, doing nothing."""

    run_inline = True

    def on_chain_start(self, *a: Any, **k: Any) -> None: ...
    def on_chain_end(self, *a: Any, **k: Any) -> None: ...
    def on_chat_model_start(self, *a: Any, **k: Any) -> None: ...
    def on_llm_end(self, *a: Any, **k: Any) -> None: ...
    def on_retriever_start(self, *a: Any, **k: Any) -> None: ...
    def on_retriever_end(self, *a: Any, **k: Any) -> None: ...
    def on_tool_start(self, *a: Any, **k: Any) -> None: ...
    def on_tool_end(self, *a: Any, **k: Any) -> None: ...


class RunCounter(NoopHandler):
    """Counts started runs: how many spans one invocation makes."""

    def __init__(self) -> None:
        self.runs = 0

    def _count(self, *a: Any, **k: Any) -> None:
        self.runs += 1

    on_chain_start = on_chat_model_start = on_retriever_start = on_tool_start = _count


USAGE = {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150}


def _answers() -> Any:
    # itertools.repeat: safe to advance from the executor threads async runs use
    return itertools.repeat(
        AIMessage("a short answer", usage_metadata=USAGE, response_metadata={"model_name": "gpt-4o-mini"})
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


class AgentModel(BaseChatModel):
    """A tool-calling chat model: asks for ``lookup`` first, answers once the tool replied
    (decided by the conversation, so 50 concurrent agents never mix up their turns)."""

    @property
    def _llm_type(self) -> str:
        return "bench-agent"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        meta = {"model_name": "gpt-4o-mini"}
        if isinstance(messages[-1], ToolMessage):
            msg = AIMessage("Your refund was issued on Monday.", usage_metadata=USAGE, response_metadata=meta)
        else:
            call = {"name": "lookup", "args": {"order_id": "42"}, "id": "call_1", "type": "tool_call"}
            msg = AIMessage("", tool_calls=[call], usage_metadata=USAGE, response_metadata=meta)
        return ChatResult(generations=[ChatGeneration(message=msg)])


@tool
def lookup(order_id: str) -> str:
    """The refund status of an order."""
    return f"order {order_id}: refunded on Monday"


class AgentState(TypedDict):
    messages: Annotated[list, add_messages]


def agent_graph() -> Any:
    """A LangGraph agent: agent node (chat model) → conditional route → tools node → agent → END."""
    model = AgentModel()

    def agent(state: AgentState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: AgentState) -> str:
        return "tools" if state["messages"][-1].tool_calls else END

    g = StateGraph(AgentState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode([lookup]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route, ["tools", END])
    g.add_edge("tools", "agent")
    return g.compile(name="refund-agent")


CHAINS: dict[str, tuple[Callable[[], Any], Any]] = {
    "4-run chain": (chain_4, {"question": "How long do refunds take?"}),
    "7-run RAG chain": (chain_7, "How long do refunds take?"),
    "LangGraph agent": (agent_graph, {"messages": [("human", "Where is my refund for order 42?")]}),
}

# -- the variants ----------------------------------------------------------------------------------


def judge_model() -> Any:
    verdict = '{"faithfulness": 4, "relevance": 5, "completeness": 3, "hallucination": "no", "reason": "ok"}'
    return GenericFakeChatModel(
        messages=itertools.repeat(
            AIMessage(
                verdict,
                usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
                response_metadata={"model_name": "gpt-4o-mini"},
            )
        )
    )


@contextmanager
def postgres_schema(base_url: str, label: str) -> Iterator[str | None]:
    """A fresh schema ``bench_<label>_<random>`` (dropped afterwards), or None without a server."""
    import sqlalchemy as sa

    schema = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    try:
        engine = sa.create_engine(base_url, connect_args={"connect_timeout": 3})
        with engine.begin() as conn:
            conn.execute(sa.text(f'create schema "{schema}"'))
    except Exception as exc:  # noqa: BLE001 - no server: skip the PostgreSQL variants
        print(f"(PostgreSQL at {base_url} not usable, its variants are skipped: {type(exc).__name__})")
        yield None
        return
    try:
        yield f"{base_url}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        engine.dispose()


class Variant:
    """A way to run the chain: ``config`` for invoke; ``flush`` empties its tracer's backlog
    (untimed before a block; after it, counted in total CPU); ``enter``/``leave`` wrap a block,
    untimed (``peers.py``: an instrumentor hooks every callback manager only while active)."""

    def __init__(
        self,
        label: str,
        config: dict,
        obs: LLMObs | None = None,
        *,
        flush: Callable[[], Any] | None = None,
        enter: Callable[[], Any] = lambda: None,
        leave: Callable[[], Any] = lambda: None,
    ) -> None:
        self.label, self.config, self.obs = label, config, obs
        self._flush = flush if flush is not None else (lambda: obs.flush(120) if obs is not None else None)
        self.enter, self.leave = enter, leave

    def settle(self) -> None:
        """Untimed, before each block: the tracer's backlog from the last block is stored."""
        self._flush()


def make_variants(tmp: Path, pg_url: str | None, which: set[str]) -> dict[str, Variant]:
    from llmobs_callbacks.judge import Judge

    variants = {
        "none": Variant("no callbacks", {}),
        "noop": Variant("no-op handler", {"callbacks": [NoopHandler()]}),
    }

    def ours(key: str, label: str, url: str, **kwargs: Any) -> None:
        obs = LLMObs(url, **kwargs)
        variants[key] = Variant(label, {"callbacks": [obs.langchain_handler()]}, obs)

    sqlite = f"sqlite:///{tmp / 'bench.db'}"
    if "sqlite" in which:
        ours("sqlite", "llmobs SQLite + Prometheus", sqlite, prometheus_registry=CollectorRegistry())
    if "noprom" in which:
        ours(
            "noprom",
            "llmobs SQLite, no Prometheus",
            f"sqlite:///{tmp / 'noprom.db'}",
            prometheus_registry=False,
        )
    if "pg" in which and pg_url is not None:
        ours("pg", "llmobs PostgreSQL + Prometheus", pg_url, prometheus_registry=CollectorRegistry())
    if "judge" in which:
        ours(
            "judge",
            "llmobs SQLite + Prometheus + judge 5 %",
            f"sqlite:///{tmp / 'judge.db'}",
            prometheus_registry=CollectorRegistry(),
            judge=Judge(judge_model(), sample_rate=0.05, workers=1),
        )
    return variants


# -- measuring ------------------------------------------------------------------------------------


class Results:
    """Per variant and round, µs per invocation: ``wall``, the caller thread's CPU (``cpu``,
    sync only) and the process's CPU until the writer has stored the block's spans (``total``:
    app + writer + judge threads, robust to other processes taking the cores); and every single
    invocation's wall time (``single``, for p99)."""

    def __init__(self, keys: list[str]) -> None:
        self.wall: dict[str, list[float]] = {k: [] for k in keys}
        self.cpu: dict[str, list[float]] = {k: [] for k in keys}
        self.total: dict[str, list[float]] = {k: [] for k in keys}
        self.single: dict[str, list[float]] = {k: [] for k in keys}


def bench_sync(chain: Any, x: Any, variants: dict[str, Variant], rounds: int, n: int) -> Results:
    res = Results(list(variants))
    perf = time.perf_counter
    for _ in range(rounds):
        order = list(variants)
        random.shuffle(order)
        for key in order:
            v = variants[key]
            v.enter()
            try:
                chain.invoke(x, config=v.config)  # warm: the first call after instrumenting
                v.settle()
                gc.collect()
                cfg, single = v.config, res.single[key]
                t0, c0, p0 = perf(), time.thread_time(), time.process_time()
                for _ in range(n):
                    t = perf()
                    chain.invoke(x, config=cfg)
                    single.append(perf() - t)
                res.wall[key].append((perf() - t0) / n * 1e6)
                res.cpu[key].append((time.thread_time() - c0) / n * 1e6)
                v.settle()  # the writer's share of this block, in the process CPU
                res.total[key].append((time.process_time() - p0) / n * 1e6)
            finally:
                v.leave()
    return res


def bench_async(chain: Any, x: Any, variants: dict[str, Variant], rounds: int, n: int, width: int) -> Results:
    res = Results(list(variants))
    perf = time.perf_counter
    batches = max(n // width, 1)

    async def timed(cfg: dict) -> float:
        t = perf()
        await chain.ainvoke(x, config=cfg)
        return perf() - t

    async def block(cfg: dict) -> tuple[float, list[float]]:
        t0, single = perf(), []
        for _ in range(batches):
            single += await asyncio.gather(*(timed(cfg) for _ in range(width)))
        return (perf() - t0) / (batches * width) * 1e6, single

    for _ in range(rounds):
        order = list(variants)
        random.shuffle(order)
        for key in order:
            variants[key].settle()
            gc.collect()
            p0 = time.process_time()
            wall, single = asyncio.run(block(variants[key].config))
            variants[key].settle()
            res.total[key].append((time.process_time() - p0) / (batches * width) * 1e6)
            res.wall[key].append(wall)
            res.single[key] += single
    return res


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] * 1e6 if len(values) >= 2 else float("nan")


def paired(a: list[float], b: list[float]) -> float:
    """Median over rounds of the per-round difference (drift between rounds cancels out)."""
    return statistics.median(x - y for x, y in zip(a, b, strict=True))


def print_table(title: str, chain_rows: list[tuple[str, str, int, Results, bool]]) -> None:
    print(f"\n{title}\n")
    print(
        "| workload | mode | variant | wall µs/inv (median) | p99 | total CPU µs/inv | added over none "
        "| added over no-op | per run | caller CPU added over no-op | wall added over no-op |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for chain_label, mode, runs, res, has_cpu in chain_rows:
        for key in res.wall:
            added = over_noop = per_run = cpu = wall = "—"
            if key == "noop":
                added = f"{paired(res.total['noop'], res.total['none']):.1f}"
            elif key != "none":
                added = f"{paired(res.total[key], res.total['none']):.1f}"
                over = paired(res.total[key], res.total["noop"])
                over_noop, per_run = f"{over:.1f}", f"{over / runs:.2f}"
                cpu = f"{paired(res.cpu[key], res.cpu['noop']):.1f}" if has_cpu else "—"
                wall = f"{paired(res.wall[key], res.wall['noop']):.1f}"
            print(
                f"| {chain_label} | {mode} | {LABELS[key]} | {statistics.median(res.wall[key]):.1f} "
                f"| {p99(res.single[key]):.0f} | {statistics.median(res.total[key]):.1f} | {added} "
                f"| {over_noop} | {per_run} | {cpu} | {wall} |"
            )


LABELS: dict[str, str] = {}


def count_runs(chain: Any, x: Any) -> int:
    counter = RunCounter()
    chain.invoke(x, config={"callbacks": [counter]})
    return counter.runs


def run_chains(args: argparse.Namespace, tmp: Path) -> None:
    with postgres_schema(args.postgres, "overhead") if args.postgres else _none() as pg_url:
        variants = make_variants(tmp, pg_url, set(args.variants.split(",")))
        LABELS.update({k: v.label for k, v in variants.items()})
        try:
            rows: list[tuple[str, str, int, Results, bool]] = []
            for label, (factory, x) in CHAINS.items():
                chain = factory()
                runs = count_runs(chain, x)
                sync = bench_sync(chain, x, variants, args.rounds, args.n)
                rows.append((f"{label} ({runs} runs)", "sync", runs, sync, True))
                if args.async_width:
                    res = bench_async(chain, x, variants, args.rounds, args.n, args.async_width)
                    rows.append((f"{label} ({runs} runs)", f"async ×{args.async_width}", runs, res, False))
            print_table(
                f"rounds={args.rounds} n={args.n} per variant per round; load average at the end: "
                f"{os.getloadavg()[0]:.2f} (2 cores)",
                rows,
            )
            for v in variants.values():
                if v.obs is not None:
                    v.obs.flush(120)
                    stats = v.obs.stats()
                    print(
                        f"  {v.label}: dropped={sum(stats['spans_dropped'].values())} "
                        f"handler_errors={sum(stats['handler_errors'].values())}"
                    )
        finally:
            for v in variants.values():
                if v.obs is not None:
                    v.obs.shutdown(120)


@contextmanager
def _none() -> Iterator[None]:
    yield None


# -- hot path ---------------------------------------------------------------------------------------


def bench_hot_path(n: int = 50_000, rounds: int = 5) -> float:
    """CPU µs per span for start+end straight into our handler, no LangChain dispatch and no
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
        t0 = time.thread_time()  # CPU time: other processes taking the core do not count
        for rid in ids:
            h.on_chain_start(
                None, {"q": 1}, run_id=rid, parent_run_id=root, tags=tags, metadata=md, name="step"
            )
            h.on_chain_end({"a": 2}, run_id=rid)
        best = min(best, (time.thread_time() - t0) / n * 1e6)
    return best


# -- ingest ---------------------------------------------------------------------------------------


def make_spans(n: int, llm: bool) -> list[SpanRecord]:
    """Finished spans as the handler hands them over: 10 per trace (a root and 9 children)."""
    now = time.time_ns()
    spans = []
    trace = root = None
    for i in range(n):
        if i % 10 == 0:
            trace = root = uuid.uuid4()
            s = SpanRecord(root, trace, None, "chain", "RunnableSequence", "langchain", now)
        else:
            kind = "llm" if llm else "chain"
            s = SpanRecord(uuid.uuid4(), trace, root, kind, "step", "langchain", now)
        s.end_ns, s.input, s.output = now + 1_000_000 + i, {"question": f"q {i}"}, "answer " * 10
        s.metadata, s.tags, s.session_id = {"prompt_version": "v1", "team": "support"}, ["a"], "s"
        if llm and s.parent_span_id is not None:
            s.model, s.provider = "gpt-4o-mini", "openai"
            s.usage = TokenUsage(input_tokens=100 + i % 50, output_tokens=20, total_tokens=120 + i % 50)
            s.invocation_params = {"temperature": 0.2, "model": "gpt-4o-mini"}
        spans.append(s)
    return spans


def bench_ingest(
    url: str, n: int, llm: bool, batch: int, delay: float, busy_app: bool = False
) -> tuple[float, float]:
    """Sustained (spans/s wall, spans per writer-CPU-second) from enqueue to committed rows.

    All ``n`` spans are enqueued at once (a few µs); the worker drains them in batches of
    ``batch`` as it would under a steady stream, and ``flush`` returns when the last is stored.
    ``busy_app``: meanwhile an application thread runs pure Python without pause, so the writer
    has to win the GIL back (after up to the 5 ms switch interval) every time it releases it.
    """
    obs = LLMObs(
        url,
        max_queue_size=n + 10,
        max_batch_size=batch,
        flush_interval_s=delay,
        prometheus_registry=CollectorRegistry(),
    )
    try:
        spans = make_spans(n, llm)
        gc.collect()
        worker = obs.processor._worker
        done = threading.Event()
        app = threading.Thread(target=_busy_python, args=(done,), daemon=True)
        if busy_app:
            app.start()
        cpu0 = _thread_cpu(worker)
        t0 = time.perf_counter()
        for s in spans:
            obs.processor.on_end(s)
        try:
            assert obs.flush(timeout=600)
        finally:
            done.set()
        elapsed = time.perf_counter() - t0
        cpu = _thread_cpu(worker) - cpu0
        assert sum(obs.stats()["spans_dropped"].values()) == 0
        return n / elapsed, (n / cpu if cpu > 0 else float("nan"))
    finally:
        obs.shutdown()


def _busy_python(done: threading.Event) -> None:
    """A CPU-bound application thread: pure Python, never releasing the GIL on its own."""
    x = 0
    while not done.is_set():
        for _ in range(1000):
            x += 1


def _thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds of another thread (Linux: its clock), 0 where unavailable."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))  # type: ignore[arg-type]
    except (AttributeError, OSError, TypeError):
        return 0.0


def bench_saturation(url: str, rate: float, seconds: float) -> dict[str, float]:
    """Spans offered at ``rate``/s for ``seconds`` (more than the writer sustains) with the
    default settings (queue 20,000, batch 512): what is stored, what is dropped (and counted),
    the deepest the queue got, what the caller pays per ``on_end``, and how long the backlog
    takes to store once the burst ends."""
    obs = LLMObs(url, prometheus_registry=CollectorRegistry())
    try:
        n = int(rate * seconds)
        spans = make_spans(n, llm=True)
        queue = obs.processor._queue
        chunk, deepest, caller = 500, 0, 0.0
        gc.collect()
        perf = time.perf_counter
        t0 = perf()
        for i in range(0, n, chunk):
            delay = t0 + i / rate - perf()
            if delay > 0:
                time.sleep(delay)
            c = perf()
            for s in spans[i : i + chunk]:
                obs.processor.on_end(s)
            caller += perf() - c
            deepest = max(deepest, len(queue))
        offered_s = perf() - t0
        assert obs.flush(timeout=600)
        drained = perf() - t0 - offered_s
        dropped = obs.stats()["spans_dropped"].get("queue_full", 0)
        return {
            "offered": n,
            "offered_rate": n / offered_s,
            "dropped": dropped,
            "stored_rate": (n - dropped) / (offered_s + drained),
            "deepest": deepest,
            "enqueue_us": caller / n * 1e6,
            "drain_s": drained,
        }
    finally:
        obs.shutdown()


def run_ingest(args: argparse.Namespace, tmp: Path) -> None:
    print(
        f"\nIngest: {args.ingest:,} spans per run (10 per trace), batch {args.batch}, every {args.interval}s"
    )
    print("| store | spans | spans/s (wall) | spans per writer-CPU-second |")
    print("|---|---|---:|---:|")
    targets: list[tuple[str, Callable[[], Any]]] = [
        ("SQLite", lambda: _sqlite_ctx(tmp)),
    ]
    if args.postgres:
        targets.append(("PostgreSQL", lambda: postgres_schema(args.postgres, "ingest")))
    for label, ctx in targets:
        for llm in (False, True):
            with ctx() as url:
                if url is None:
                    continue
                wall, cpu = bench_ingest(url, args.ingest, llm, args.batch, args.interval)
            kind = "LLM (priced, 9 of 10) + Prometheus" if llm else "chain + Prometheus"
            print(f"| {label} | {kind} | {wall:,.0f} | {cpu:,.0f} |")
        with ctx() as url:  # the writer beside a CPU-bound application thread
            if url is not None:
                n = args.ingest // 3
                wall, cpu = bench_ingest(url, n, True, args.batch, args.interval, busy_app=True)
                print(f"| {label} | LLM, app thread busy in Python beside | {wall:,.0f} | {cpu:,.0f} |")
    with _sqlite_ctx(tmp) as url:
        sat = bench_saturation(url, args.saturation_rate, args.saturation_seconds)
    print(
        f"\nSaturation (SQLite, LLM spans, defaults: queue 20,000, batch 512): {sat['offered']:,} spans "
        f"offered at {sat['offered_rate']:,.0f}/s; stored {sat['stored_rate']:,.0f}/s, "
        f"{sat['dropped']:,} dropped and counted (queue_full), deepest queue {sat['deepest']:,}, "
        f"caller paid {sat['enqueue_us']:.2f} µs per on_end, backlog stored {sat['drain_s']:.1f} s after "
        "the burst"
    )


@contextmanager
def _sqlite_ctx(tmp: Path) -> Iterator[str]:
    path = tmp / f"ingest-{uuid.uuid4().hex[:8]}.db"
    yield f"sqlite:///{path}"


# -- LlamaIndex -------------------------------------------------------------------------------------


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
                obs.flush(60)
                gc.collect()
                t0, c0 = time.perf_counter(), time.thread_time()
                for _ in range(n):
                    query(question)
                wall[name].append((time.perf_counter() - t0) / n * 1e6)
                cpu[name].append((time.thread_time() - c0) / n * 1e6)
                if handle is not None:
                    handle.close()
                root.span_handlers, root.event_handlers = list(baseline[0]), list(baseline[1])
    finally:
        root.span_handlers, root.event_handlers = baseline
    spans_per_query = round(noop_spans.calls / (rounds * n))
    return wall, cpu, spans_per_query


def run_llama(args: argparse.Namespace, tmp: Path) -> None:
    obs = LLMObs(f"sqlite:///{tmp / 'llama.db'}", prometheus_registry=CollectorRegistry())
    try:
        li = bench_llama_index(obs, args.rounds, max(args.n // 4, 10))
    finally:
        obs.shutdown()
    if li is None:
        print("\n(LlamaIndex not installed: skipped)")
        return
    li_wall, li_cpu, spans = li
    print(f"\nLlamaIndex VectorStoreIndex query ({spans} spans), µs per query:\n")
    print(
        "| measure | no handler | no-op handlers | llmobs | added over none | added over no-op | per span |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for measure, res in (("caller CPU", li_cpu), ("wall", li_wall)):
        over_none = paired(res["llmobs"], res["none"])
        over_noop = paired(res["llmobs"], res["noop"])
        print(
            f"| {measure} | {statistics.median(res['none']):.1f} | {statistics.median(res['noop']):.1f} "
            f"| {statistics.median(res['llmobs']):.1f} | {over_none:.1f} | {over_noop:.1f} "
            f"| {over_noop / spans:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=60, help="invocations per variant per round")
    parser.add_argument("--async-width", type=int, default=50, help="0: no async rows")
    parser.add_argument("--sections", default="chains,hot,ingest,llama")
    parser.add_argument("--variants", default="sqlite,noprom,pg,judge", help="of ours, besides none/no-op")
    parser.add_argument("--postgres", default=POSTGRES_URL, help="'' to skip PostgreSQL")
    parser.add_argument("--ingest", type=int, default=30_000, help="spans per ingest run")
    parser.add_argument("--batch", type=int, default=512, help="processor max_batch_size for ingest")
    parser.add_argument("--interval", type=float, default=0.5, help="processor flush interval (s)")
    parser.add_argument("--saturation-rate", type=float, default=60_000, help="spans/s offered in the burst")
    parser.add_argument("--saturation-seconds", type=float, default=2.0)
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    with tempfile.TemporaryDirectory(prefix="llmobs-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        if "chains" in sections:
            run_chains(args, tmp)
        if "hot" in sections:
            print(f"\nhot path alone (handler start+end called directly): {bench_hot_path():.2f} µs per span")
        if "ingest" in sections:
            run_ingest(args, tmp)
        if "llama" in sections:
            run_llama(args, tmp)


if __name__ == "__main__":
    main()
