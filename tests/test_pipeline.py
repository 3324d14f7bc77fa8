"""Processor and lifecycle: flush, sync mode, drops, exit, eviction, never raising into the chain."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Sequence

import pytest
from conftest import fetch
from langchain_core.runnables import RunnableLambda
from lc_fakes import ai, chat

from llmobs_callbacks import LLMObs
from llmobs_callbacks.model import SpanRecord


class ListExporter:
    def __init__(self) -> None:
        self.spans: list[SpanRecord] = []
        self.closed = False

    def export(self, spans: Sequence[SpanRecord]) -> None:
        self.spans.extend(spans)

    def shutdown(self) -> None:
        self.closed = True


class FailingExporter(ListExporter):
    def export(self, spans: Sequence[SpanRecord]) -> None:
        raise ConnectionError("sink down")


def _invoke(obs: LLMObs, n: int = 1) -> None:
    chain = RunnableLambda(lambda x: x + 1, name="inc") | RunnableLambda(lambda x: x * 2, name="dbl")
    for i in range(n):
        chain.invoke(i, config={"callbacks": [obs.langchain_handler()]})


def test_flush_returns_true_when_everything_is_stored(db_url: str) -> None:
    with LLMObs(db_url, flush_interval_s=30) as obs:  # the timer alone would not write in time
        _invoke(obs, 25)
        assert obs.flush(timeout=10) is True
        assert len(fetch(db_url, "spans")) == 75
        assert obs.stats()["queued_spans"] == 0


def test_synchronous_mode_writes_before_invoke_returns(db_url: str) -> None:
    obs = LLMObs(db_url, synchronous=True)
    try:
        _invoke(obs)
        assert len(fetch(db_url, "spans")) == 3  # no flush needed
    finally:
        obs.shutdown()


def test_full_queue_drops_and_counts_never_blocks(sqlite_url: str) -> None:
    obs = LLMObs(sqlite_url, max_queue_size=4, max_batch_size=10_000, flush_interval_s=60)
    try:
        _invoke(obs, 4)  # 12 spans into a queue of 4 while the writer sleeps
        stats = obs.stats()
        assert stats["spans_dropped"] == {"queue_full": 8}
        assert obs.flush()
        assert len(fetch(sqlite_url, "spans")) == 4
    finally:
        obs.shutdown()


def test_exporter_failure_is_counted_and_other_sinks_still_get_spans(sqlite_url: str) -> None:
    good = ListExporter()
    with LLMObs(sqlite_url, exporters=[FailingExporter(), good]) as obs:
        _invoke(obs)
        assert obs.flush()
        stats = obs.stats()
    assert stats["spans_dropped"] == {"export_failed:FailingExporter": 3}
    assert stats["handler_errors"] == {"export:FailingExporter": 1}
    assert len(good.spans) == 3 and good.closed
    assert len(fetch(sqlite_url, "spans")) == 3


def test_exporters_receive_plain_records_not_framework_objects(sqlite_url: str) -> None:
    sink = ListExporter()
    with LLMObs(sqlite_url, exporters=[sink]) as obs:
        chat(ai("hello", 3, 2)).invoke("q", config={"callbacks": [obs.langchain_handler()]})
        assert obs.flush()
    (span,) = sink.spans
    assert isinstance(span.input, str) and isinstance(span.output, str)
    assert span.cost_usd is not None and span.usage.input_tokens == 3
    assert isinstance(span.metadata, dict)


def test_handler_never_raises_into_the_chain(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with LLMObs(sqlite_url) as obs:

        def broken(*args, **kwargs):
            raise RuntimeError("recorder bug")

        monkeypatch.setattr(obs.recorder, "start", broken)
        chain = RunnableLambda(lambda x: x + 1)
        assert chain.invoke(1, config={"callbacks": [obs.langchain_handler()]}) == 2
        errors = obs.stats()["handler_errors"]
    assert errors["langchain.on_chain_start"] == 1
    assert errors["end_of_unknown_run"] == 1


def test_hostile_callback_arguments_are_counted_not_raised(sqlite_url: str) -> None:
    with LLMObs(sqlite_url) as obs:
        h = obs.langchain_handler()
        rid = uuid.uuid4()
        h.on_chain_end({"x": 1}, run_id=uuid.uuid4())  # end before start
        h.on_llm_end(None, run_id=uuid.uuid4())
        h.on_chain_start(None, {"a": object()}, run_id=rid, parent_run_id=uuid.uuid4())  # unknown parent
        h.on_chain_start(None, None, run_id=rid)  # duplicate start
        h.on_llm_new_token("", run_id=uuid.uuid4())
        h.on_retriever_end([None, 3, "doc"], run_id=uuid.uuid4())
        h.on_chain_end(None, run_id=rid)
        h.on_chain_end(None, run_id=rid)  # second end
        assert obs.flush()
        stats = obs.stats()
        rows = fetch(sqlite_url, "spans")
    assert stats["handler_errors"]["end_of_unknown_run"] == 3
    assert stats["events"] == {"duplicate_start": 1, "duplicate_end": 1}
    assert len(rows) == 1 and rows[0]["span_id"] == str(rid)


def test_open_runs_are_evicted_after_ttl_and_stored_as_errors(sqlite_url: str) -> None:
    with LLMObs(sqlite_url, synchronous=True, open_span_ttl_s=0.05) as obs:
        h = obs.langchain_handler()
        rid = uuid.uuid4()
        h.on_chain_start({"name": "abandoned"}, {"q": 1}, run_id=rid)
        assert obs.stats()["open_spans"] == 1
        time.sleep(0.1)
        obs.flush()
        stats = obs.stats()
        (row,) = fetch(sqlite_url, "spans")
    assert stats["open_spans"] == 0 and stats["events"]["evicted_open_spans"] == 1
    assert row["name"] == "abandoned" and row["status"] == "error" and row["error_type"] == "SpanNotEnded"


def test_spans_are_stored_when_the_process_exits_right_after_invoke(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    script = textwrap.dedent(f"""
        import sys
        from langchain_core.runnables import RunnableLambda
        from llmobs_callbacks import LLMObs
        obs = LLMObs({url!r}, flush_interval_s=60)
        chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(lambda x: x * 2)
        for i in range(50):
            chain.invoke(i, config={{"callbacks": [obs.langchain_handler()]}})
        sys.exit(0)  # no flush, no shutdown: the atexit hook must store everything
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert len(fetch(url, "spans")) == 150


def test_shutdown_detaches_the_handler(sqlite_url: str) -> None:
    obs = LLMObs(sqlite_url)
    handler = obs.langchain_handler()
    assert obs.langchain_handler() is handler
    _invoke(obs)
    assert obs.shutdown() is True
    RunnableLambda(lambda x: x).invoke(1, config={"callbacks": [handler]})
    assert len(fetch(sqlite_url, "spans")) == 3


def test_import_needs_no_framework(tmp_path) -> None:
    script = textwrap.dedent(f"""
        import sys
        for name in ("langchain_core", "llama_index", "langgraph", "pandas", "matplotlib"):
            sys.modules[name] = None  # any import of these now fails
        import llmobs_callbacks
        from llmobs_callbacks import LLMObs
        obs = LLMObs("sqlite:///{tmp_path / "x.db"}")
        try:
            obs.langchain_handler()
        except ImportError as exc:
            print("IMPORT-ERROR:", exc)
        obs.shutdown()
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    )
    assert "pip install 'llmobs-callbacks[langchain]'" in out.stdout


def test_injected_clock_sets_span_times(sqlite_url: str) -> None:
    """Replays and simulations pass their own clock: stored times are the clock's, not the wall's."""
    from datetime import datetime, timezone

    ticks = iter(range(1_700_000_000_000_000_000, 1_800_000_000_000_000_000, 250_000_000))  # +250 ms
    with LLMObs(sqlite_url, clock=lambda: next(ticks)) as obs:
        RunnableLambda(lambda x: x, name="one").invoke(1, config={"callbacks": [obs.langchain_handler()]})
        assert obs.flush()
        (row,) = fetch(sqlite_url, "spans")
    assert row["start_time"] == datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)
    assert row["latency_ms"] == 250.0
