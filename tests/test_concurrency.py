"""No span lands in another trace under asyncio and threads."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import defaultdict

from conftest import fetch
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from lc_fakes import ai, chat

from llmobs_callbacks import LLMObs


def _chain(i: int):
    async def slow(x):
        await asyncio.sleep(0.001 * (i % 5))
        return x

    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    return (
        RunnableLambda(lambda x: x, afunc=slow, name=f"pre-{i}")
        | prompt
        | chat(ai(f"a{i}", 10 + i, i))
        | StrOutputParser()
    )


def _assert_traces(url: str, expected: dict[str, int]) -> None:
    """``expected``: root run_id → i. Every trace has its 5 spans and only its own."""
    rows = fetch(url, "spans")
    by_trace: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_trace[r["trace_id"]].append(r)
    assert set(by_trace) == set(expected)  # no stray trace
    for trace_id, i in expected.items():
        spans = by_trace[trace_id]
        assert sorted(s["kind"] for s in spans) == ["chain", "chain", "llm", "parser", "prompt"]
        names = {s["name"] for s in spans}
        assert f"pre-{i}" in names
        llm = next(s for s in spans if s["kind"] == "llm")
        assert (llm["input_tokens"], llm["output_tokens"]) == (10 + i, i)
        assert llm["session_id"] == f"s-{i}"
        ids = {s["span_id"] for s in spans}
        assert all(s["parent_span_id"] in ids for s in spans if s["span_id"] != trace_id)


async def test_fifty_concurrent_ainvoke(obs: LLMObs) -> None:
    handler = obs.langchain_handler()
    expected = {}
    calls = []
    for i in range(50):
        run_id = uuid.uuid4()
        expected[str(run_id)] = i
        calls.append(
            _chain(i).ainvoke(
                {"q": str(i)},
                config={"callbacks": [handler], "run_id": run_id, "metadata": {"session_id": f"s-{i}"}},
            )
        )
    results = await asyncio.gather(*calls)
    assert results == [f"a{i}" for i in range(50)]
    assert obs.flush()
    _assert_traces(obs.database_url, expected)


def test_eight_threads_times_ten_invokes(obs: LLMObs) -> None:
    handler = obs.langchain_handler()
    expected: dict[str, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for k in range(10):
                i = t * 10 + k
                run_id = uuid.uuid4()
                with lock:
                    expected[str(run_id)] = i
                _chain(i).invoke(
                    {"q": "x"},
                    config={"callbacks": [handler], "run_id": run_id, "metadata": {"session_id": f"s-{i}"}},
                )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert obs.flush()
    _assert_traces(obs.database_url, expected)
    assert len(expected) == 80
    assert obs.stats()["handler_errors"] == {}
