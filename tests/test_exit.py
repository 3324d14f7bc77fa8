"""No loss on exit: atexit flush, SIGTERM, and a spool left at exit replayed by the next process."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import fetch
from fixtures.durability import SPANS_PER_TRACE, run_traces

from llmobs_callbacks import LLMObs
from llmobs_callbacks.sinks.durable import Spool

# A child process: one LangChain invocation, then whatever ending the test asks for. The
# flush interval is long, so only the exit path can have written the spans.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time, uuid
    from langchain_core.runnables import RunnableLambda
    from llmobs_callbacks import LLMObs

    url, run_id, ending, spool = sys.argv[1], uuid.UUID(sys.argv[2]), sys.argv[3], sys.argv[4]
    if ending == "app_handler":
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))  # the app's own handler
    obs = LLMObs(url, prometheus_registry=None, flush_interval_s=3600, spool_dir=spool,
                 exit_timeout_s=float(os.environ.get("EXIT_TIMEOUT", "10")),
                 database_timeout_s=0.2)
    chain = RunnableLambda(lambda x: x + 1, name="add") | RunnableLambda(lambda x: x * 2, name="double")
    chain.invoke(1, config={"callbacks": [obs.langchain_handler()], "run_id": run_id})
    print("handles_sigterm", obs.handles_sigterm, flush=True)
    if ending == "exit":
        sys.exit(3)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    sys.exit(0)  # not reached: SIGTERM ends the process
    """
)


def _run_child(url: str, ending: str, spool: Path, env: dict[str, str] | None = None) -> tuple[str, int]:
    run_id = str(uuid.uuid4())
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, run_id, ending, str(spool)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, **(env or {})},
    )
    assert "Traceback" not in done.stderr, done.stderr
    return run_id, done.returncode


def test_sys_exit_right_after_invoke_stores_the_spans(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    run_id, code = _run_child(url, "exit", tmp_path / "spool")
    assert code == 3  # the app's exit status is kept
    rows = fetch(url, "spans", trace_id=run_id)
    assert sorted(r["name"] for r in rows) == ["RunnableSequence", "add", "double"]


def test_sigterm_flushes_then_terminates_as_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    run_id, code = _run_child(url, "sigterm", tmp_path / "spool")
    assert code == -signal.SIGTERM  # still killed by the signal, as without llmobs
    assert len(fetch(url, "spans", trace_id=run_id)) == 3


def test_an_apps_own_sigterm_handler_is_left_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    run_id, code = _run_child(url, "app_handler", tmp_path / "spool")
    assert code == 7  # the app's handler ran (sys.exit(7)) ...
    assert len(fetch(url, "spans", trace_id=run_id)) == 3  # ... and atexit still flushed


@pytest.mark.parametrize("slow_claim", [False, True], ids=["claim", "slow-claim"])
def test_spans_spooled_at_exit_are_replayed_by_the_next_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_claim: bool
) -> None:
    """``slow_claim``: the worker is still claiming the earlier process's segment when
    ``flush()`` asks whether anything is spooled; the answer must wait for the claim."""
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    spool = tmp_path / "spool"
    with LLMObs(url, prometheus_registry=None, spool_dir=spool) as first:
        earlier = run_traces(first.langchain_handler(), 5)
    locker = sqlite3.connect(path, timeout=5, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # the database is unavailable while the child exits
    run_id, code = _run_child(url, "exit", spool, env={"EXIT_TIMEOUT": "1"})
    assert code == 3
    assert len(list(spool.glob("segment-*.jsonl"))) == 1  # left behind, not lost
    locker.execute("COMMIT")
    locker.close()
    assert fetch(url, "spans", trace_id=run_id) == []

    if slow_claim:
        claim = Spool.claim_orphans

        def slow(self: Spool) -> int:
            time.sleep(0.3)
            return claim(self)

        monkeypatch.setattr(Spool, "claim_orphans", slow)
    nxt = LLMObs(url, prometheus_registry=None, spool_dir=spool)
    assert nxt.flush(timeout=30) is True
    assert len(fetch(url, "spans", trace_id=run_id)) == SPANS_PER_TRACE
    assert {r["trace_id"] for r in fetch(url, "spans")} == {*earlier, run_id}
    assert nxt.stats()["spool"]["replayed_spans"] == SPANS_PER_TRACE
    assert list(spool.glob("segment-*.jsonl")) == []
    nxt.shutdown()
