"""Never raise into the user's code: every handler method of both integrations, driven with
hostile arguments (hypothesis, derandomised: the same examples on every run).

Unknown, duplicate and missing run ids, ends before starts and twice, parents that never
started, ``None`` and odd types for outputs and usage, huge strings, unserialisable and broken
objects, cycles, NaN/negative/huge token counts, and a clock that jumps backwards. Each test
checks that nothing escapes, that every oddity is counted under a known, bounded
``llmobs_handler_errors_total{reason}``, and that every span that was handed over is stored
(with non-negative latencies and sane token counts).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import inspect
import math
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMCompletionEndEvent,
    LLMPredictStartEvent,
)
from llama_index.core.instrumentation.events.rerank import ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.tools import FunctionTool, ToolOutput
from prometheus_client import CollectorRegistry

from llmobs_callbacks import LLMObs
from llmobs_callbacks.sinks.tables import TABLES

SPANS = next(t for t in TABLES if t.name == "spans")


# -- hostile values ---------------------------------------------------------------------------------
class Opaque:
    """Not serialisable, no useful repr."""

    __slots__ = ()


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")


class BrokenDump:
    """Looks like a pydantic model / a to_dict object, but both raise."""

    def model_dump(self, **kwargs: Any) -> Any:
        raise ValueError("model_dump exploded")

    def to_dict(self) -> Any:
        raise ValueError("to_dict exploded")


class BrokenGetattr:
    def __getattr__(self, name: str) -> Any:
        raise KeyError(name)  # not an AttributeError: getattr(x, n, default) does not catch it


class BrokenError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("exception str exploded")


def cycle_list() -> list[Any]:
    a: list[Any] = [1, "x"]
    a.append(a)
    return a


def cycle_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"k": "v"}
    d["self"] = d
    d["list"] = [d]
    return d


HUGE_TEXT = "secret-ish " * 2_000  # 22,000 characters: beyond the truncation limit

counts = st.one_of(
    st.none(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=10**15, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12", "many", "", True, False]),
)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.builds(lambda: HUGE_TEXT),  # (builds: keeps 22 kB out of failure reports)
    st.builds(Opaque),
    st.builds(BrokenRepr),
    st.builds(BrokenDump),
    st.builds(BrokenGetattr),
    st.builds(cycle_list),
    st.builds(cycle_dict),
    st.just(uuid.UUID(int=7)),
    st.just(decimal.Decimal("NaN")),
    st.just(dt.datetime(2024, 1, 1)),
    st.just(frozenset({1, 2})),
)

keys = st.one_of(st.text(max_size=6), st.integers(), st.none(), st.tuples(st.integers()), st.booleans())

values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(keys, inner, max_size=3),
    ),
    max_leaves=6,
)

str_dicts = st.dictionaries(st.text(max_size=8), values, max_size=3)

metadata = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "user_id": values,
            "session_id": values,
            "prompt_name": values,
            "prompt_version": values,
            "langgraph_node": st.text(max_size=5),
            "ls_model_name": values,
            "ls_provider": values,
            "other": values,
        },
    ),
)

tags = st.one_of(st.none(), st.lists(st.one_of(st.text(max_size=8), st.none(), st.integers()), max_size=3))

errors = st.one_of(
    st.builds(ValueError, st.text(max_size=20)),
    st.builds(BrokenError),
    st.builds(KeyError, values),
    st.just(GeneratorExit()),
    st.just(KeyboardInterrupt()),
    st.builds(lambda: RuntimeError(HUGE_TEXT)),
)


def usage_dicts() -> st.SearchStrategy[Any]:
    details = st.dictionaries(
        st.sampled_from(["cache_read", "cache_creation", "reasoning"]), counts, max_size=2
    )
    return st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {"input_tokens": counts, "output_tokens": counts},
            optional={
                "total_tokens": counts,
                "input_token_details": details,
                "output_token_details": details,
            },
        ),
        st.fixed_dictionaries(
            {"prompt_tokens": counts, "completion_tokens": counts},
            optional={"total_tokens": counts, "prompt_tokens_details": details},
        ),
        st.fixed_dictionaries(
            {"input_tokens": counts},
            optional={"cache_read_input_tokens": counts, "cache_creation_input_tokens": counts},
        ),
        st.fixed_dictionaries({"prompt_token_count": counts, "candidates_token_count": counts}),
        values,
    )


# -- the store and oracles shared by every fuzz test --------------------------------------------


class FuzzClock:
    """Epoch nanoseconds that jump backwards and forwards (NTP steps, replays): latencies and
    time to first token must still never be negative."""

    def __init__(self) -> None:
        self.steps: list[int] = [0]
        self.i = 0
        self.base = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        step = self.steps[self.i % len(self.steps)]
        self.i += 1
        self.base += step
        return self.base


class EndSpy:
    """Wraps the recorder's processor: the ids of every span handed over to be stored."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ids: list[str] = []

    def on_end(self, span: Any) -> None:
        self.ids.append(str(span.span_id))
        self.inner.on_end(span)


clock_steps = st.lists(
    st.integers(min_value=-(10**12), max_value=10**12), min_size=1, max_size=5
)  # up to ±1000 s per reading


@pytest.fixture(scope="module")
def fuzz_obs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LLMObs, FuzzClock, EndSpy, str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    clock = FuzzClock()
    obs = LLMObs(
        url,
        synchronous=True,  # stored as it ends: each example checks its own rows at once
        redact=True,
        hash_user_ids=b"fuzz-key",
        prometheus_registry=CollectorRegistry(),
        clock=clock,
    )
    spy = EndSpy(obs.recorder._processor)
    obs.recorder._processor = spy
    yield obs, clock, spy, url
    obs.shutdown()


def stored_rows(url: str, span_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not span_ids:
        return {}
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = SPANS
            rows = conn.execute(sa.select(t).where(t.c.span_id.in_(sorted(set(span_ids))))).mappings()
            return {r["span_id"]: dict(r) for r in rows}
    finally:
        engine.dispose()


def errors_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


# Oddities of the app's or framework's calls: counted, never an internal failure.
LIFECYCLE_REASONS = {"end_of_unknown_run", "invalid_token_count"}


def check_stored(url: str, spy: EndSpy, first: int) -> dict[str, dict[str, Any]]:
    """Every span handed over since ``first`` is stored once, with sane times."""
    handed = spy.ids[first:]
    rows = stored_rows(url, handed)
    assert set(rows) == set(handed)
    for row in rows.values():
        assert row["latency_ms"] is not None and row["latency_ms"] >= 0
        assert row["end_time"] >= row["start_time"]
        if row["ttft_ms"] is not None:
            assert 0 <= row["ttft_ms"] <= row["latency_ms"]
        for column in ("input_tokens", "output_tokens", "total_tokens", "cached_input_tokens"):
            assert row[column] is None or 0 <= row[column] < 10**13
        assert row["cost_usd"] is None or math.isfinite(row["cost_usd"])
    return rows


FUZZ_SETTINGS = settings(
    max_examples=150,
    derandomize=True,  # the same examples on every run: deterministic in CI
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


# -- LangChain ------------------------------------------------------------------------------------


def llm_results() -> st.SearchStrategy[Any]:
    """``LLMResult`` shapes LangChain hands ``on_llm_end`` (validation bypassed), and odd ones."""

    def build(content: Any, usage: Any, response_metadata: Any, llm_output: Any, chat_gen: bool) -> Any:
        if chat_gen:
            message = AIMessage.model_construct(
                content=content, usage_metadata=usage, response_metadata=response_metadata
            )
            gen: Any = ChatGeneration.model_construct(message=message, text="", generation_info=None)
        else:
            gen = Generation.model_construct(text=content, generation_info={"token_usage": usage})
        return LLMResult.model_construct(generations=[[gen]], llm_output=llm_output)

    return st.one_of(
        st.builds(
            build,
            values,
            usage_dicts(),
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {}, optional={"model_name": values, "usage": usage_dicts(), "service_tier": values}
                ),
            ),
            st.one_of(
                st.none(),
                values,
                st.fixed_dictionaries({"token_usage": usage_dicts()}, optional={"model_name": values}),
            ),
            st.booleans(),
        ),
        st.just(LLMResult.model_construct(generations=[], llm_output=None)),
        st.just(LLMResult.model_construct(generations=[[]], llm_output=None)),
        st.none(),
    )


def documents() -> st.SearchStrategy[Any]:
    doc = st.builds(
        lambda content, meta, doc_id: Document.model_construct(
            page_content=content, metadata=meta, id=doc_id
        ),
        values,
        st.one_of(st.none(), str_dicts),
        st.one_of(st.none(), values),
    )
    return st.one_of(st.none(), st.lists(st.one_of(doc, values), max_size=4))


def chat_messages() -> st.SearchStrategy[Any]:
    message = st.builds(lambda c: HumanMessage.model_construct(content=c), values)
    return st.lists(st.lists(st.one_of(message, values), max_size=3), min_size=1, max_size=2)


N_IDS = 4
ids = st.integers(min_value=0, max_value=N_IDS - 1)
parents = st.one_of(st.none(), ids, st.just("ghost"))

START_METHODS = (
    "on_chain_start",
    "on_chat_model_start",
    "on_llm_start",
    "on_tool_start",
    "on_retriever_start",
)
END_METHODS = {
    "on_chain_end": values,
    "on_llm_end": llm_results(),
    "on_tool_end": values,
    "on_retriever_end": documents(),
}
ERROR_METHODS = ("on_chain_error", "on_llm_error", "on_tool_error", "on_retriever_error")

lc_ops = st.one_of(
    st.tuples(
        st.just("start"),
        st.sampled_from(START_METHODS),
        ids,
        parents,
        values,
        chat_messages(),
        st.one_of(st.none(), st.dictionaries(st.sampled_from(["name", "id"]), values, max_size=2)),
        tags,
        metadata,
        st.one_of(st.none(), str_dicts),
    ),
    st.tuples(st.just("end"), st.sampled_from(sorted(END_METHODS)), ids, st.data()),
    st.tuples(
        st.just("error"), st.sampled_from(ERROR_METHODS), ids, errors, st.one_of(st.none(), llm_results())
    ),
    st.tuples(st.just("token"), ids, values, st.one_of(st.none(), values)),
    st.tuples(
        st.just("misc"),
        st.sampled_from(("on_text", "on_retry", "on_custom_event", "on_agent_action", "on_agent_finish")),
        ids,
        values,
    ),
)


@FUZZ_SETTINGS
@given(ops=st.lists(lc_ops, max_size=25), steps=clock_steps)
def test_langchain_handler_survives_hostile_call_sequences(
    fuzz_obs: Any, ops: list[Any], steps: list[int]
) -> None:
    obs, clock, spy, url = fuzz_obs
    clock.steps = steps
    handler = obs.langchain_handler()
    run_ids = [uuid.uuid4() for _ in range(N_IDS)]
    ghost = uuid.uuid4()  # a parent that never started
    state = ["new"] * N_IDS  # the reference model: new -> open -> ended
    expected_unknown = 0
    ended: set[str] = set()  # ever ended (a run may start again after its end)
    expected_events: dict[str, int] = {}
    before = obs.stats()
    first = len(spy.ids)
    for op in ops:
        kind = op[0]
        if kind == "start":
            _, method, i, parent, payload, messages, serialized, tag_list, md, params = op
            parent_id = None if parent is None else ghost if parent == "ghost" else run_ids[parent]
            kwargs: dict[str, Any] = {
                "run_id": run_ids[i],
                "parent_run_id": parent_id,
                "tags": tag_list,
                "metadata": md,
            }
            if method == "on_chat_model_start":
                handler.on_chat_model_start(serialized, messages, invocation_params=params, **kwargs)
            elif method == "on_llm_start":
                handler.on_llm_start(serialized, [payload], invocation_params=params, **kwargs)
            elif method == "on_tool_start":
                handler.on_tool_start(serialized, payload, inputs=params, **kwargs)
            elif method == "on_retriever_start":
                handler.on_retriever_start(serialized, payload, **kwargs)
            else:
                handler.on_chain_start(serialized, payload, **kwargs)
            if state[i] == "open":
                expected_events["duplicate_start"] = expected_events.get("duplicate_start", 0) + 1
            else:
                state[i] = "open"
        elif kind in ("end", "error"):
            i = op[2]
            if kind == "end":
                method, data = op[1], op[3]
                getattr(handler, method)(data.draw(END_METHODS[method]), run_id=run_ids[i])
            else:
                method, error, response = op[1], op[3], op[4]
                getattr(handler, method)(error, run_id=run_ids[i], response=response)
            if state[i] == "open":
                state[i] = "ended"
                ended.add(str(run_ids[i]))
            elif state[i] == "ended":
                expected_events["duplicate_end"] = expected_events.get("duplicate_end", 0) + 1
            else:
                expected_unknown += 1
        elif kind == "token":
            _, i, token, chunk = op
            handler.on_llm_new_token(token, chunk=chunk, run_id=run_ids[i])
        else:
            _, method, i, payload = op
            if method == "on_custom_event":
                handler.on_custom_event("fuzz", payload, run_id=run_ids[i])
            else:
                getattr(handler, method)(payload, run_id=run_ids[i])
    after = obs.stats()
    errors = errors_delta(before["handler_errors"], after["handler_errors"])
    assert set(errors) <= LIFECYCLE_REASONS, errors  # anything else is an internal failure
    assert errors.get("end_of_unknown_run", 0) == expected_unknown
    assert errors_delta(before["events"], after["events"]) == expected_events
    assert errors_delta(before["spans_dropped"], after["spans_dropped"]) == {}
    rows = check_stored(url, spy, first)
    assert set(rows) == ended  # every run that ended is stored, nothing else
    for row in rows.values():
        assert row["user_id"] is None or len(row["user_id"]) == 64  # hashed, whatever its type


@FUZZ_SETTINGS
@given(response=llm_results(), error=st.one_of(st.none(), errors), steps=clock_steps)
def test_every_llm_result_shape_ends_and_stores_its_run(
    fuzz_obs: Any, response: Any, error: BaseException | None, steps: list[int]
) -> None:
    """One LLM run per example, so every odd usage/result reaches a run that is open."""
    obs, clock, spy, url = fuzz_obs
    clock.steps = steps
    handler = obs.langchain_handler()
    run_id = uuid.uuid4()
    before = obs.stats()
    first = len(spy.ids)
    handler.on_chat_model_start(
        {"name": "Fuzz"}, [[HumanMessage("hi")]], run_id=run_id, metadata={"ls_model_name": "gpt-4o-mini"}
    )
    handler.on_llm_new_token("x", run_id=run_id)
    if error is None:
        handler.on_llm_end(response, run_id=run_id)
    else:
        handler.on_llm_error(error, run_id=run_id, response=response)
    errors = errors_delta(before["handler_errors"], obs.stats()["handler_errors"])
    assert set(errors) <= {"invalid_token_count"}, errors
    rows = check_stored(url, spy, first)
    assert set(rows) == {str(run_id)}
    row = rows[str(run_id)]
    assert row["status"] == ("ok" if error is None or isinstance(error, GeneratorExit) else "error")
    if (
        row["input_tokens"] is not None
        and row["output_tokens"] is not None
        and row["total_tokens"] is not None
    ):
        assert row["cost_usd"] is not None  # a priced model with usable counts is priced


# -- LlamaIndex: instrumentation span and event handlers -----------------------------------------


class FuzzRetriever(BaseRetriever):
    def _retrieve(self, query_bundle: Any) -> list[Any]:
        return []


class FuzzReranker(BaseNodePostprocessor):
    def _postprocess_nodes(self, nodes: Any, query_bundle: Any = None) -> Any:
        return nodes


def _tool_fn(x: str) -> str:
    """A tool."""
    return x


INSTANCES = {
    "MockLLM": MockLLM(),
    "MockEmbedding": MockEmbedding(embed_dim=2),
    "FuzzRetriever": FuzzRetriever(),
    "FuzzReranker": FuzzReranker(),
    "FunctionTool": FunctionTool.from_defaults(fn=_tool_fn),
    "object": object(),
    "None": None,
}
METHODS = (
    "chat",
    "stream_chat",
    "complete",
    "acomplete",
    "retrieve",
    "_retrieve",
    "call",
    "query",
    "get_query_embedding",
    "_postprocess_nodes",
    "run",
    "call_tool",
)


def _signature(
    messages: Any = None,
    prompt: Any = None,
    args: Any = (),
    kwargs: Any = None,
    str_or_query_bundle: Any = None,
    query_bundle: Any = None,
    ev: Any = None,
    start_event: Any = None,
) -> None: ...


SIGNATURE = inspect.signature(_signature)

bound_args = st.builds(
    lambda picked: SIGNATURE.bind_partial(**picked),
    st.fixed_dictionaries(
        {},
        optional={
            "messages": st.lists(
                st.one_of(
                    st.builds(
                        lambda c: ChatMessage.model_construct(content=c, role="user", additional_kwargs={}),
                        values,
                    ),
                    values,
                ),
                max_size=3,
            ),
            "prompt": values,
            "args": st.lists(values, max_size=2),
            "kwargs": st.one_of(st.none(), str_dicts),
            "str_or_query_bundle": st.one_of(values, st.builds(lambda q: QueryBundle(query_str=q), values)),
            "query_bundle": values,
            "ev": values,
            "start_event": values,
        },
    ),
)


def li_responses() -> st.SearchStrategy[Any]:
    raw = st.one_of(
        st.none(), values, st.fixed_dictionaries({"usage": usage_dicts()}, optional={"model": values})
    )
    chat_response = st.builds(
        lambda content, extra, r, delta: ChatResponse.model_construct(
            message=ChatMessage.model_construct(content=content, role="assistant", additional_kwargs=extra),
            raw=r,
            delta=delta,
            additional_kwargs={},
        ),
        values,
        st.one_of(
            st.just({}),
            st.fixed_dictionaries(
                {}, optional={"tool_calls": values, "prompt_tokens": counts, "completion_tokens": counts}
            ),
        ),
        raw,
        st.one_of(st.none(), st.text(max_size=3)),
    )
    completion = st.builds(
        lambda text, r: CompletionResponse.model_construct(
            text=text, raw=r, delta=None, additional_kwargs={}
        ),
        values,
        raw,
    )
    return st.one_of(st.none(), chat_response, completion)


def li_results() -> st.SearchStrategy[Any]:
    node = st.builds(
        lambda text, meta, score: NodeWithScore.model_construct(
            node=TextNode.model_construct(text=text, metadata=meta, id_="n"), score=score
        ),
        values,
        st.one_of(st.none(), str_dicts),
        st.one_of(st.none(), st.floats(allow_nan=True), values),
    )
    tool_output = st.builds(
        lambda content, is_error: ToolOutput.model_construct(
            tool_name="t", raw_input={}, raw_output=content, is_error=is_error, blocks=[]
        ),
        values,
        st.booleans(),
    )
    return st.one_of(
        values,
        li_responses(),
        st.lists(st.one_of(node, values), max_size=3),
        tool_output,
        st.lists(st.lists(st.floats(), max_size=2), max_size=2),
        st.just("generator"),  # replaced by a fresh generator (a stream)
    )


def li_events() -> st.SearchStrategy[Any]:
    response = li_responses()
    return st.one_of(
        st.builds(lambda r: LLMChatEndEvent.model_construct(response=r, messages=[]), response),
        st.builds(lambda r: LLMCompletionEndEvent.model_construct(response=r, prompt=""), response),
        st.builds(
            lambda r: LLMChatInProgressEvent.model_construct(response=r, messages=[]),
            response.filter(lambda r: r is not None),
        ),
        st.builds(lambda e: ExceptionEvent.model_construct(exception=e), errors),
        st.builds(
            lambda m: ReRankStartEvent.model_construct(model_name=m, query=None, nodes=[], top_n=1), values
        ),
        st.builds(lambda: LLMPredictStartEvent.model_construct(template=None, template_args=None)),
    )


def _stream() -> Iterator[str]:
    yield "a"


li_ops = st.one_of(
    st.tuples(
        st.just("enter"),
        ids,
        parents,
        st.sampled_from(sorted(INSTANCES)),
        st.sampled_from(METHODS),
        bound_args,
        st.one_of(
            st.none(),
            st.dictionaries(st.sampled_from(["user_id", "tags", "session_id", "x"]), values, max_size=2),
        ),
    ),
    st.tuples(st.just("exit"), ids, li_results()),
    st.tuples(st.just("drop"), ids, st.one_of(st.none(), errors)),
    st.tuples(st.just("event"), ids, li_events()),
    st.tuples(
        st.just("collect"),
    ),  # garbage-collect abandoned streams
)


def test_unreadable_stream_tokens_still_time_the_first_token(fuzz_obs: Any) -> None:
    """A token or chunk whose attribute access or truth test raises (found by the fuzzer):
    no internal error, and the chunk still counts as the model answering."""
    obs, _clock, spy, url = fuzz_obs
    handler = obs.langchain_handler()
    before, first = obs.stats(), len(spy.ids)
    for token, chunk in ((None, BrokenGetattr()), (BrokenGetattr(), None)):
        run_id = uuid.uuid4()
        handler.on_chat_model_start({"name": "Fuzz"}, [[HumanMessage("hi")]], run_id=run_id)
        handler.on_llm_new_token(token, chunk=chunk, run_id=run_id)
        handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("ok"))]]), run_id=run_id)
    assert errors_delta(before["handler_errors"], obs.stats()["handler_errors"]) == {}
    rows = check_stored(url, spy, first)
    assert len(rows) == 2 and all(r["ttft_ms"] is not None for r in rows.values())


@FUZZ_SETTINGS
@given(ops=st.lists(li_ops, max_size=25), steps=clock_steps)
def test_llama_index_handlers_survive_hostile_call_sequences(
    fuzz_obs: Any, ops: list[Any], steps: list[int]
) -> None:
    obs, clock, spy, url = fuzz_obs
    clock.steps = steps
    handle = obs.instrument_llama_index()
    span_handler, event_handler = handle.span_handler, handle.event_handler
    names: dict[int, str] = {}
    before = obs.stats()
    first = len(spy.ids)
    streams: list[Any] = []
    base = uuid.uuid4().hex
    for op in ops:
        kind = op[0]
        if kind == "enter":
            _, i, parent, instance_name, method, bound, tag_dict = op
            instance = INSTANCES[instance_name]
            names[i] = f"{type(instance).__name__}.{method}-{base[:8]}-{i:04d}-4000-8000-{base[:12]}"
            parent_id = (
                None if parent is None else "Ghost.run-" + base if parent == "ghost" else names.get(parent)
            )
            span_handler.span_enter(names[i], bound, instance=instance, parent_id=parent_id, tags=tag_dict)
        elif kind == "exit":
            _, i, result = op
            if result == "generator":
                result = _stream()
                streams.append(result)
            span_handler.span_exit(names.get(i, f"Unknown.x-{i}"), None, instance=None, result=result)
        elif kind == "drop":
            _, i, err = op
            span_handler.span_drop(names.get(i, f"Unknown.x-{i}"), None, instance=None, err=err)
        elif kind == "event":
            _, i, event = op
            event.span_id = names.get(i)
            event_handler.handle(event)
        else:
            streams.clear()  # unread streams are collected at once: their spans end as abandoned
    after = obs.stats()
    errors = errors_delta(before["handler_errors"], after["handler_errors"])
    assert set(errors) <= LIFECYCLE_REASONS, errors
    assert errors_delta(before["spans_dropped"], after["spans_dropped"]) == {}
    check_stored(url, spy, first)


legacy_event_types = st.sampled_from(list(CBEventType))


def legacy_payloads() -> st.SearchStrategy[Any]:
    keys = st.sampled_from(list(EventPayload))
    special = st.fixed_dictionaries(
        {},
        optional={
            EventPayload.RESPONSE: li_responses(),
            EventPayload.NODES: st.lists(li_results(), max_size=2),
            EventPayload.MESSAGES: st.lists(values, max_size=2),
            EventPayload.SERIALIZED: st.one_of(st.none(), str_dicts),
            EventPayload.EXCEPTION: st.one_of(errors, values),
            EventPayload.EMBEDDINGS: st.lists(st.lists(st.floats(), max_size=2), max_size=2),
            EventPayload.CHUNKS: st.lists(values, max_size=2),
            EventPayload.TEMPLATE: values,
        },
    )
    return st.one_of(st.none(), special, st.dictionaries(keys, values, max_size=3))


legacy_ops = st.one_of(
    st.tuples(
        st.just("start"), legacy_event_types, ids, st.one_of(parents, st.just("root")), legacy_payloads()
    ),
    st.tuples(st.just("end"), legacy_event_types, ids, legacy_payloads()),
)


@FUZZ_SETTINGS
@given(ops=st.lists(legacy_ops, max_size=25), steps=clock_steps)
def test_llama_index_legacy_handler_survives_hostile_call_sequences(
    fuzz_obs: Any, ops: list[Any], steps: list[int]
) -> None:
    obs, clock, spy, url = fuzz_obs
    clock.steps = steps
    handler = obs.llama_index_callback_handler()
    event_ids = [str(uuid.uuid4()) for _ in range(N_IDS)]
    before = obs.stats()
    first = len(spy.ids)
    for op in ops:
        if op[0] == "start":
            _, event_type, i, parent, payload = op
            parent_id = (
                "root" if parent in (None, "root") else "ghost" if parent == "ghost" else event_ids[parent]
            )
            assert (
                handler.on_event_start(event_type, payload, event_id=event_ids[i], parent_id=parent_id)
                == event_ids[i]
            )
        else:
            _, event_type, i, payload = op
            handler.on_event_end(event_type, payload, event_id=event_ids[i])
    after = obs.stats()
    errors = errors_delta(before["handler_errors"], after["handler_errors"])
    assert set(errors) <= LIFECYCLE_REASONS, errors
    assert errors_delta(before["spans_dropped"], after["spans_dropped"]) == {}
    check_stored(url, spy, first)


# -- any type anywhere: nothing escapes, failures are counted under bounded reasons -----------------

LC_METHODS = sorted(
    name
    for name in dir(BaseCallbackHandler)
    if name.startswith("on_") and callable(getattr(BaseCallbackHandler, name))
)
odd_ids = st.one_of(
    st.none(),
    st.builds(uuid.uuid4),
    st.text(max_size=4),
    st.integers(),
    st.lists(st.integers(), max_size=1),
    values,
)
chaos_ops = st.one_of(
    st.tuples(
        st.just("langchain"),
        st.sampled_from(LC_METHODS),
        st.lists(values, max_size=3),
        odd_ids,
        odd_ids,
        st.one_of(st.none(), str_dicts, values),
    ),
    st.tuples(
        st.just("li_span"),
        st.sampled_from(["span_enter", "span_exit", "span_drop"]),
        st.one_of(st.text(max_size=8), odd_ids),
        st.one_of(bound_args, values),
        st.one_of(st.sampled_from(sorted(INSTANCES)), values),
        st.one_of(odd_ids, values),
    ),
    st.tuples(st.just("li_event"), st.one_of(li_events(), values), odd_ids),
    st.tuples(
        st.just("legacy"),
        st.sampled_from(["on_event_start", "on_event_end"]),
        st.one_of(legacy_event_types, values),
        st.one_of(legacy_payloads(), values),
        odd_ids,
        odd_ids,
    ),
)
# Reasons name the entry point (bounded: one per handler method) that met the odd argument.
CHAOS_PREFIXES = ("langchain.", "llama_index.", "llama_index_legacy.")


@FUZZ_SETTINGS
@given(ops=st.lists(chaos_ops, max_size=15))
def test_any_argument_of_any_type_is_counted_never_raised(fuzz_obs: Any, ops: list[Any]) -> None:
    obs, _, spy, url = fuzz_obs
    lc = obs.langchain_handler()
    li = obs.instrument_llama_index()
    legacy = obs.llama_index_callback_handler()
    before = obs.stats()
    first = len(spy.ids)
    for op in ops:
        if op[0] == "langchain":
            _, method, args, run_id, parent, extra = op
            str_keys = isinstance(extra, dict) and all(isinstance(k, str) for k in extra)
            kwargs = {k: v for k, v in extra.items() if k != "self"} if str_keys else {"metadata": extra}
            kwargs.update(run_id=run_id, parent_run_id=parent)
            bound_method = getattr(lc, method)
            try:
                inspect.signature(bound_method).bind(*args, **kwargs)
            except TypeError:
                continue  # LangChain always calls with the method's own arity; any types, though
            bound_method(*args, **kwargs)
        elif op[0] == "li_span":
            _, method, id_, bound, instance, other = op
            instance = INSTANCES.get(instance, instance) if isinstance(instance, str) else instance
            if method == "span_enter":
                li.span_handler.span_enter(id_, bound, instance=instance, parent_id=other, tags=other)
            elif method == "span_exit":
                li.span_handler.span_exit(id_, bound, instance=instance, result=other)
            else:
                li.span_handler.span_drop(id_, bound, instance=instance, err=other)
        elif op[0] == "li_event":
            _, event, span_id = op
            with contextlib.suppress(Exception):  # a pydantic event may refuse the attribute
                event.span_id = span_id
            li.event_handler.handle(event)
        else:
            _, method, event_type, payload, event_id, parent = op
            if method == "on_event_start":
                legacy.on_event_start(event_type, payload, event_id=event_id, parent_id=parent)
            else:
                legacy.on_event_end(event_type, payload, event_id=event_id)
    after = obs.stats()
    errors = errors_delta(before["handler_errors"], after["handler_errors"])
    unexpected = {r for r in errors if r not in LIFECYCLE_REASONS and not r.startswith(CHAOS_PREFIXES)}
    assert not unexpected, errors  # the worker (preparer, redaction, store, metrics) never fails
    assert errors_delta(before["spans_dropped"], after["spans_dropped"]) == {}
    check_stored(url, spy, first)
