"""prometheus-client multiprocess mode (gunicorn workers) and `llmobs serve-metrics`, in real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prom_support import run_traffic
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from llmobs_callbacks import LLMObs
from llmobs_callbacks.sinks.prometheus import PrometheusExporter
from llmobs_callbacks.sinks.schema import make_engine
from llmobs_callbacks.sinks.store_metrics import StoreMetricsFeed

TESTS = Path(__file__).parent
ROOT = TESTS.parent
# gpt-4o-mini: 100 input tokens at $0.15/M + 10 output tokens at $0.60/M
CALL_COST = (100 * 0.15 + 10 * 0.60) / 1e6
LABELS = {"model": "gpt-4o-mini", "provider": "openai", "prompt_version": "v1"}

# One worker: PROMETHEUS_MULTIPROC_DIR is set in its environment before anything is imported.
WORKER = textwrap.dedent(
    """
    import os, sys, uuid
    sys.path.insert(0, {tests!r})
    from lc_fakes import ai, chat
    from llmobs_callbacks import LLMObs
    from llmobs_callbacks.sinks.prometheus import multiprocess_mode

    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] and multiprocess_mode()

    def traffic(obs, calls):
        handler = obs.langchain_handler()
        for _ in range(calls):
            llm = chat(ai("x", 100, 10))
            llm.invoke("q", config={{"callbacks": [handler], "metadata": {{"prompt_version": "v1"}}}})
        handler.on_chain_end({{}}, run_id=uuid.uuid4())  # one counted internal error per process
        assert obs.flush()

    calls, db, fork = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "fork"
    obs = LLMObs("sqlite:///" + db)  # the global registry, as an app would
    if not fork:
        traffic(obs, calls)
        obs.shutdown()
        sys.exit(0)
    # gunicorn --preload: LLMObs made in the master, requests served by forked workers
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                traffic(obs, calls)
                obs.shutdown()
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in children)
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() != "prometheus_multiproc_dir"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _serve(*args: str) -> tuple[subprocess.Popen, str]:
    """Start `llmobs serve-metrics --port 0 ...`; returns the process and its /metrics URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmobs_callbacks.cli", "serve-metrics", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("serving "):
        proc.kill()
        raise AssertionError(
            f"serve-metrics did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, line.split()[1]


def _scrape(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        assert proc.wait(10) == 0  # SIGTERM is a clean stop
    finally:
        if proc.poll() is None:
            proc.kill()


def test_several_processes_aggregate_and_serve_metrics_sidecar(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS)))
    env = _env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), LLMOBS_SERVICE="bot", LLMOBS_ENVIRONMENT="staging")
    runs = [("2", "plain"), ("3", "plain"), ("4", "fork")]  # the fork run is 2 workers
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), calls, str(tmp_path / f"w{i}.db"), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i, (calls, mode) in enumerate(runs)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    calls, processes = 2 + 3 + 2 * 4, 2 + 2

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))
    assert registry.get_sample_value("llmobs_llm_requests_total", {**LABELS, "status": "ok"}) == calls
    assert registry.get_sample_value("llmobs_llm_tokens_total", {**LABELS, "type": "input"}) == 100 * calls
    assert registry.get_sample_value("llmobs_llm_tokens_total", {**LABELS, "type": "output"}) == 10 * calls
    assert registry.get_sample_value("llmobs_llm_cost_usd_total", LABELS) == pytest.approx(CALL_COST * calls)
    assert registry.get_sample_value("llmobs_llm_duration_seconds_count", LABELS) == calls
    assert registry.get_sample_value("llmobs_llm_duration_seconds_bucket", {**LABELS, "le": "+Inf"}) == calls
    usage = {"model": "gpt-4o-mini", "provider": "openai", "type": "input"}
    assert registry.get_sample_value("llmobs_llm_token_usage_bucket", {**usage, "le": "64.0"}) == 0
    assert registry.get_sample_value("llmobs_llm_token_usage_bucket", {**usage, "le": "256.0"}) == calls
    assert (
        registry.get_sample_value("llmobs_traces_total", {"root": "UsageFakeChatModel", "status": "ok"})
        == calls
    )
    # the one gauge: 1 (max over the workers, living or not), so no mark_process_dead hook is needed
    info = {"service": "bot", "environment": "staging"}
    assert registry.get_sample_value("llmobs_info", info) == 1
    # Diagnostics reach the files from the processor thread (no scrape-time hook across processes)
    assert (
        registry.get_sample_value("llmobs_handler_errors_total", {"reason": "end_of_unknown_run"})
        == processes
    )

    # `llmobs serve-metrics --multiprocess-dir`: a sidecar serving what the workers wrote
    proc, url = _serve("--multiprocess-dir", str(metrics_dir))
    try:
        scraped = _scrape(url)
    finally:
        _stop(proc)
    assert scraped[("llmobs_llm_requests_total", frozenset({**LABELS, "status": "ok"}.items()))] == calls
    assert scraped[("llmobs_info", frozenset(info.items()))] == 1
    assert scraped[("llmobs_llm_cost_usd_total", frozenset(LABELS.items()))] == pytest.approx(
        CALL_COST * calls
    )


# Families the store cannot reproduce: scores, judge and feedback live elsewhere, and drops and
# internal errors of the writing process are never stored.
NOT_IN_STORE = (
    "llmobs_quality_score",
    "llmobs_judge_evaluations",
    "llmobs_feedback",
    "llmobs_handler_errors",
    "llmobs_spans_dropped",
    # the writer's own health (sinks/durable.py): about this process, not the stored spans
    "llmobs_spool_spans_written",
    "llmobs_spool_spans_replayed",
    "llmobs_spool_pending_spans",
    "llmobs_store_write_failures",
    "llmobs_store_outages",
    "llmobs_store_available",
    "llmobs_store_state",
    "llmobs_spool_bytes",
    "llmobs_spool_oldest_span_age_seconds",
    "llmobs_spool_spans_spilled",
    "llmobs_values_sanitized",
    "llmobs_info",  # the reporting process's service and environment
)


def _comparable(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in registry.collect()
        if family.name not in NOT_IN_STORE
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_store_feed_gives_the_in_process_metrics(sqlite_url: str) -> None:
    in_process = CollectorRegistry()
    with LLMObs(sqlite_url, prometheus_registry=in_process) as obs:
        run_traffic(obs, n=2)
        assert obs.flush()
    from_store = CollectorRegistry()
    feed = StoreMetricsFeed(
        make_engine(sqlite_url),
        PrometheusExporter(from_store),
        since=datetime.now(timezone.utc) - timedelta(hours=1),
    )
    assert feed.poll() > 0
    expected, got = _comparable(in_process), _comparable(from_store)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-6), key
    assert feed.poll() == 0  # nothing counted twice
    assert _comparable(from_store) == got

    with LLMObs(sqlite_url, prometheus_registry=None) as obs:  # more traffic, stored only
        run_traffic_without_metrics(obs)
        assert obs.flush()
    assert feed.poll() == 1
    llm = {"model": "gpt-4o-mini", "provider": "openai", "prompt_version": "none", "status": "ok"}
    assert from_store.get_sample_value("llmobs_llm_requests_total", llm) == 1


def run_traffic_without_metrics(obs: LLMObs) -> None:
    from lc_fakes import ai, chat

    chat(ai("x", 7, 3)).invoke("q", config={"callbacks": [obs.langchain_handler()]})


def test_serve_metrics_command_from_the_store(sqlite_url: str) -> None:
    with LLMObs(sqlite_url, prometheus_registry=None) as obs:
        run_traffic_without_metrics(obs)
        assert obs.flush()
    proc, url = _serve("--database-url", sqlite_url, "--since", "1h", "--interval", "0.2")
    try:
        llm = frozenset(
            {"model": "gpt-4o-mini", "provider": "openai", "prompt_version": "none", "status": "ok"}.items()
        )
        assert _scrape(url)[("llmobs_llm_requests_total", llm)] == 1
        with LLMObs(sqlite_url, prometheus_registry=None) as obs:
            run_traffic_without_metrics(obs)
            assert obs.flush()
        deadline = time.monotonic() + 10
        while _scrape(url)[("llmobs_llm_requests_total", llm)] != 2:
            assert time.monotonic() < deadline, "serve-metrics did not pick up the new span"
            time.sleep(0.1)
    finally:
        _stop(proc)
