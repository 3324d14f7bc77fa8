"""Prometheus metrics from real LangChain runs: exact samples, labels, buckets and exemplars."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
import uuid

import pytest
from conftest import fetch
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from lc_fakes import ai, chat
from prom_support import DocsRetriever, label_values, lookup_order, run_traffic, samples, support_graph
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from llmobs_callbacks import LLMObs
from llmobs_callbacks.labels import OTHER, LabelLimiter, normalize_model_name
from llmobs_callbacks.model import SpanKind, SpanRecord, TokenUsage
from llmobs_callbacks.sinks import metric_names as names
from llmobs_callbacks.sinks.prometheus import (
    DOCUMENT_BUCKETS,
    DURATION_BUCKETS,
    TOKEN_BUCKETS,
    PrometheusExporter,
)

LLM = {"model": "gpt-4o-mini", "provider": "openai", "prompt_version": "v2"}


def _le(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(bound)


def _assert_buckets(reg: CollectorRegistry, name: str, labels: dict, observed: list[float], bounds) -> None:
    """Cumulative bucket counts exactly as ``observed`` values place them."""
    for bound in (*bounds, float("inf")):
        expected = sum(1 for v in observed if v <= bound)
        got = reg.get_sample_value(f"{name}_bucket", {**labels, "le": _le(bound)})
        assert got == expected, (name, bound, got, expected)
    assert reg.get_sample_value(f"{name}_count", labels) == len(observed)
    assert reg.get_sample_value(f"{name}_sum", labels) == pytest.approx(sum(observed), abs=1e-9)


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def test_llm_call_counters_histograms_labels_and_exemplars(sqlite_url: str, reg: CollectorRegistry) -> None:
    run_id = uuid.uuid4()
    with LLMObs(sqlite_url, prometheus_registry=reg) as obs:
        llm = chat(ai("answer", 1000, 100, cached=400, reasoning=30, model_name="gpt-4o-mini-2024-07-18"))
        meta = {"prompt_version": "v2", "session_id": "s-secret-1", "user_id": "u-secret-1"}
        llm.invoke("q", config={"callbacks": [obs.langchain_handler()], "run_id": run_id, "metadata": meta})
        assert obs.flush()
        row = next(r for r in fetch(sqlite_url, "spans") if r["kind"] == "llm")
    # the label is the model key (the requested model); the store keeps the response's snapshot beside it
    assert (row["model"], row["response_model"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert samples(reg, "llmobs_llm_requests_total") == {frozenset({**LLM, "status": "ok"}.items()): 1.0}
    tokens = {dict(k)["type"]: v for k, v in samples(reg, "llmobs_llm_tokens_total").items()}
    assert tokens == {"input": 1000, "output": 100, "cached_input": 400, "reasoning": 30}
    assert {
        frozenset(dict(k).items()) - {("type", dict(k)["type"])}
        for k in samples(reg, "llmobs_llm_tokens_total")
    } == {frozenset(LLM.items())}
    cost = reg.get_sample_value("llmobs_llm_cost_usd_total", LLM)
    assert cost == pytest.approx(0.00018, rel=1e-12) and cost == pytest.approx(row["cost_usd"], rel=1e-12)
    latency_s = row["latency_ms"] / 1e3
    _assert_buckets(reg, "llmobs_llm_duration_seconds", LLM, [latency_s], DURATION_BUCKETS)
    usage = {"model": "gpt-4o-mini", "provider": "openai"}
    _assert_buckets(reg, "llmobs_llm_token_usage", {**usage, "type": "input"}, [1000], TOKEN_BUCKETS)
    _assert_buckets(reg, "llmobs_llm_token_usage", {**usage, "type": "output"}, [100], TOKEN_BUCKETS)
    assert reg.get_sample_value("llmobs_llm_time_to_first_token_seconds_count", usage) is None  # not streamed
    assert samples(reg, "llmobs_llm_unpriced_requests_total") == {}
    root = {"root": "UsageFakeChatModel", "status": "ok"}
    assert reg.get_sample_value("llmobs_traces_total", root) == 1
    _assert_buckets(reg, "llmobs_trace_duration_seconds", root, [latency_s], DURATION_BUCKETS)

    # session and user ids are never label values
    text = generate_latest(reg).decode()
    assert "s-secret-1" not in text and "u-secret-1" not in text
    assert "session_id" not in text and "user_id" not in text

    # exemplars with the trace id: OpenMetrics only, on the duration bucket and on the cost
    om = generate_openmetrics(reg).decode()
    tid = re.escape(str(run_id))
    bucket = _le(next(b for b in DURATION_BUCKETS if latency_s <= b))
    assert re.search(
        rf'^llmobs_llm_duration_seconds_bucket\{{le="{re.escape(bucket)}",model="gpt-4o-mini",'
        rf'prompt_version="v2",provider="openai"\}} 1\.0 # \{{trace_id="{tid}"\}} ',
        om,
        re.M,
    )
    assert re.search(
        rf'^llmobs_llm_cost_usd_total\{{[^}}]*\}} 0\.00018 # \{{trace_id="{tid}"\}} 0\.00018 ', om, re.M
    )
    assert re.search(
        rf'^llmobs_trace_duration_seconds_bucket\{{[^}}]*\}} 1\.0 # \{{trace_id="{tid}"\}}', om, re.M
    )
    assert "# {" not in text  # the Prometheus text format 0.0.4 has no exemplars


def test_streamed_call_observes_ttft_and_missing_labels_are_none(
    sqlite_url: str, reg: CollectorRegistry
) -> None:
    with LLMObs(sqlite_url, prometheus_registry=reg) as obs:
        list(
            chat(ai("one two three", 50, 8), provider="OpenAI").stream(
                "q", config={"callbacks": [obs.langchain_handler()]}
            )
        )
        assert obs.flush()
        row = next(r for r in fetch(sqlite_url, "spans") if r["kind"] == "llm")
    labels = {"model": "gpt-4o-mini", "provider": "openai"}  # provider lower-cased
    _assert_buckets(
        reg, "llmobs_llm_time_to_first_token_seconds", labels, [row["ttft_ms"] / 1e3], DURATION_BUCKETS
    )
    assert (
        reg.get_sample_value(
            "llmobs_llm_requests_total", {**labels, "prompt_version": "none", "status": "ok"}
        )
        == 1
    )


def test_failed_and_unpriced_calls(sqlite_url: str, reg: CollectorRegistry) -> None:
    from prom_support import FailingChatModel

    with LLMObs(sqlite_url, prometheus_registry=reg) as obs:
        handler = obs.langchain_handler()
        chat(ai("x", 100, 10), model_name="my-finetune-xyz").invoke("q", config={"callbacks": [handler]})
        chat(ai("x", 100, 10), model_name="llama3:latest", provider="ollama").invoke(
            "q", config={"callbacks": [handler]}
        )
        with pytest.raises(RuntimeError):
            FailingChatModel(messages=iter([])).invoke("q", config={"callbacks": [handler]})
        assert obs.flush()
        unpriced = obs.stats()["unpriced"]
    assert unpriced == {"my-finetune-xyz": 1, "llama3:latest": 1}
    assert samples(reg, "llmobs_llm_unpriced_requests_total") == {
        frozenset({"model": "my-finetune-xyz"}.items()): 1.0,
        frozenset({"model": "llama3"}.items()): 1.0,
    }
    assert label_values(reg, "llmobs_llm_cost_usd_total", "model") == set()  # unknown cost is not 0
    err = {"model": "gpt-4o-mini", "provider": "openai", "prompt_version": "none", "status": "error"}
    assert reg.get_sample_value("llmobs_llm_requests_total", err) == 1
    assert reg.get_sample_value("llmobs_traces_total", {"root": "FailingChatModel", "status": "error"}) == 1


def test_tools_retrievals_branches_and_traces(sqlite_url: str, reg: CollectorRegistry) -> None:
    with LLMObs(sqlite_url, prometheus_registry=reg) as obs:
        cfg = {"callbacks": [obs.langchain_handler()]}
        lookup_order.invoke({"order_id": "A-1"}, config=cfg)
        lookup_order.invoke({"order_id": "A-2"}, config=cfg)
        with pytest.raises(ValueError):
            lookup_order.invoke({"order_id": "missing"}, config=cfg)
        DocsRetriever(docs=["a", "b", "c"]).invoke("q", config=cfg)
        DocsRetriever(docs=[]).invoke("q", config=cfg)
        DocsRetriever(docs=[]).invoke("q", config=cfg)
        graph = support_graph()
        for question in ("refund please", "refund now", "hours?"):
            graph.invoke({"question": question}, config=cfg)
        assert obs.flush()
        spans = fetch(sqlite_url, "spans")
    tool_ok, tool_err = {"tool": "lookup_order", "status": "ok"}, {"tool": "lookup_order", "status": "error"}
    assert reg.get_sample_value("llmobs_tool_calls_total", tool_ok) == 2
    assert reg.get_sample_value("llmobs_tool_calls_total", tool_err) == 1
    tool_latencies = sorted(
        r["latency_ms"] / 1e3 for r in spans if r["kind"] == "tool" and r["status"] == "ok"
    )
    _assert_buckets(reg, "llmobs_tool_duration_seconds", tool_ok, tool_latencies, DURATION_BUCKETS)

    retr = {"retriever": "DocsRetriever", "status": "ok"}
    assert reg.get_sample_value("llmobs_retrievals_total", retr) == 3
    _assert_buckets(reg, "llmobs_retrieved_documents", retr, [3, 0, 0], DOCUMENT_BUCKETS)
    # the retrieval empty rate, as the dashboard computes it: le="0" bucket / count
    empty = reg.get_sample_value("llmobs_retrieved_documents_bucket", {**retr, "le": "0.0"})
    assert empty / reg.get_sample_value("llmobs_retrieved_documents_count", retr) == pytest.approx(2 / 3)

    assert samples(reg, "llmobs_branch_decisions_total") == {
        frozenset({"graph": "support", "from_node": "classify", "to_node": "refunds"}.items()): 2.0,
        frozenset({"graph": "support", "from_node": "classify", "to_node": "general"}.items()): 1.0,
    }
    assert samples(reg, "llmobs_traces_total") == {
        frozenset({"root": "lookup_order", "status": "ok"}.items()): 2.0,
        frozenset({"root": "lookup_order", "status": "error"}.items()): 1.0,
        frozenset({"root": "DocsRetriever", "status": "ok"}.items()): 3.0,
        frozenset({"root": "support", "status": "ok"}.items()): 3.0,
    }
    graph_latencies = [
        r["latency_ms"] / 1e3 for r in spans if r["parent_span_id"] is None and r["name"] == "support"
    ]
    _assert_buckets(
        reg,
        "llmobs_trace_duration_seconds",
        {"root": "support", "status": "ok"},
        graph_latencies,
        DURATION_BUCKETS,
    )


def test_scores_judge_and_feedback_api(sqlite_url: str, reg: CollectorRegistry) -> None:
    with LLMObs(sqlite_url, prometheus_registry=reg) as obs:
        assert obs.metrics is not None
        obs.metrics.observe_score("faithfulness", 4, "v2", trace_id="t-1")
        obs.metrics.observe_score("faithfulness", 2.5, "v2")
        obs.metrics.observe_score("hallucination", 1, None)
        obs.metrics.count_judge_evaluation("ok")
        obs.metrics.count_judge_evaluation("error")
        obs.metrics.count_judge_evaluation("ok")
        obs.metrics.count_feedback("negative")
    from llmobs_callbacks.sinks.prometheus import SCORE_BUCKETS

    faith = {"metric": "faithfulness", "prompt_version": "v2"}
    _assert_buckets(reg, "llmobs_quality_score", faith, [4.0, 2.5], SCORE_BUCKETS)
    hall = {"metric": "hallucination", "prompt_version": "none"}
    _assert_buckets(reg, "llmobs_quality_score", hall, [1.0], SCORE_BUCKETS)
    assert samples(reg, "llmobs_judge_evaluations_total") == {
        frozenset({"status": "ok"}.items()): 2.0,
        frozenset({"status": "error"}.items()): 1.0,
    }
    assert samples(reg, "llmobs_feedback_total") == {frozenset({"rating": "negative"}.items()): 1.0}
    assert 'trace_id="t-1"' in generate_openmetrics(reg).decode()


def test_dropped_spans_and_internal_errors_are_current_at_scrape_time(
    sqlite_url: str, reg: CollectorRegistry
) -> None:
    # A queue of one and a worker that sleeps: the chain's later spans are dropped (never blocked).
    obs = LLMObs(
        sqlite_url, prometheus_registry=reg, max_queue_size=1, max_batch_size=1000, flush_interval_s=60
    )
    try:
        assert (
            reg.get_sample_value("llmobs_spans_dropped_total", {"reason": "queue_full"}) == 0
        )  # from the start
        chain = (
            ChatPromptTemplate.from_messages([("human", "{q}")]) | chat(ai("ok", 5, 1)) | StrOutputParser()
        )
        handler = obs.langchain_handler()
        chain.invoke({"q": "x"}, config={"callbacks": [handler]})
        handler.on_chain_end({}, run_id=uuid.uuid4())  # an end without a start
        stats = obs.stats()
        assert stats["spans_dropped"] == {"queue_full": 3}  # prompt queued; llm, parser, sequence dropped
        # no flush, no batch exported yet: a scrape reads the counters as they are now
        assert reg.get_sample_value("llmobs_spans_dropped_total", {"reason": "queue_full"}) == 3
        assert reg.get_sample_value("llmobs_handler_errors_total", {"reason": "end_of_unknown_run"}) == 1
        assert (
            reg.get_sample_value("llmobs_spans_dropped_total", {"reason": "queue_full"}) == 3
        )  # no double count
    finally:
        obs.shutdown()
    assert reg.get_sample_value("llmobs_spans_dropped_total", {"reason": "queue_full"}) == 3


def test_label_values_bounded_under_a_flood_of_model_names(reg: CollectorRegistry) -> None:
    exporter = PrometheusExporter(reg, label_limit=100)
    spans = []
    for i in range(10_000):
        span = SpanRecord(f"s{i}", f"t{i}", "parent", SpanKind.LLM, "ChatModel", "manual", 0)
        span.end_ns = 2_000_000
        span.model, span.provider, span.prompt_version = f"tenant-{i}-model", "openai", "v1"
        span.usage = TokenUsage(input_tokens=10, output_tokens=2)
        span.cost_usd = 0.001
        spans.append(span)
    exporter.export(spans)
    requests = samples(reg, "llmobs_llm_requests_total")
    assert len(requests) == 101  # 100 admitted model names + __other__
    assert (
        requests[
            frozenset({"model": OTHER, "provider": "openai", "prompt_version": "v1", "status": "ok"}.items())
        ]
        == 9_900
    )
    assert sum(requests.values()) == 10_000
    series = sum(len(f.samples) for f in reg.collect())
    assert series < 101 * 2 * (4 + 2 + 1 + 1 + 2 * 17) + 10  # bounded by the cap, not by 10,000 names
    assert exporter.metrics.labels.overflowed() == {"model": 9_900}
    assert reg.get_sample_value(
        "llmobs_llm_cost_usd_total", {"model": OTHER, "provider": "openai", "prompt_version": "v1"}
    ) == pytest.approx(9.9)


def test_series_appear_only_once_counted_and_repeat_spans_add_up(reg: CollectorRegistry) -> None:
    """The per-series cache of the LLM metrics must not create series nobody counted in (a
    ttft histogram for calls that never streamed, reasoning tokens of a model without them),
    and spans of one series over several batches add up exactly."""
    exporter = PrometheusExporter(reg)

    def span(i: int, *, streamed: bool = False, cost: float | None = 0.001) -> SpanRecord:
        s = SpanRecord(f"s{i}", f"t{i}", "parent", SpanKind.LLM, "ChatModel", "manual", 0)
        s.end_ns = 250_000_000
        s.model, s.provider, s.prompt_version = "gpt-4o-mini", "OpenAI", "v2"
        s.usage = TokenUsage(input_tokens=100 + i, output_tokens=10)
        s.cost_usd = cost
        if streamed:
            s.first_token_ns = 50_000_000
        return s

    exporter.export([span(i) for i in range(3)])
    exporter.export([span(3)])
    mp = {"model": "gpt-4o-mini", "provider": "openai"}
    assert reg.get_sample_value("llmobs_llm_requests_total", {**LLM, "status": "ok"}) == 4
    assert reg.get_sample_value("llmobs_llm_tokens_total", {**LLM, "type": "input"}) == 100 + 101 + 102 + 103
    assert reg.get_sample_value("llmobs_llm_time_to_first_token_seconds_count", mp) is None
    assert reg.get_sample_value("llmobs_llm_tokens_total", {**LLM, "type": "reasoning"}) is None
    assert reg.get_sample_value("llmobs_llm_unpriced_requests_total", {"model": "gpt-4o-mini"}) is None

    exporter.export([span(4, streamed=True, cost=None)])  # same series, now streamed and unpriced
    assert reg.get_sample_value("llmobs_llm_time_to_first_token_seconds_count", mp) == 1
    assert reg.get_sample_value("llmobs_llm_unpriced_requests_total", {"model": "gpt-4o-mini"}) == 1
    assert reg.get_sample_value("llmobs_llm_requests_total", {**LLM, "status": "ok"}) == 5
    assert reg.get_sample_value("llmobs_llm_cost_usd_total", LLM) == pytest.approx(0.004)
    assert reg.get_sample_value("llmobs_llm_duration_seconds_count", LLM) == 5


def test_label_cap_through_real_chains_per_label(sqlite_url: str, reg: CollectorRegistry) -> None:
    with LLMObs(sqlite_url, prometheus_registry=reg, prometheus_label_limit={"model": 3, "*": 50}) as obs:
        handler = obs.langchain_handler()
        for i in range(8):
            chat(ai("x", 10, 1), model_name=f"ft-model-{i}").invoke(
                "q", config={"callbacks": [handler], "metadata": {"prompt_version": f"p{i}"}}
            )
        assert obs.flush()
    assert label_values(reg, "llmobs_llm_requests_total", "model") == {
        "ft-model-0",
        "ft-model-1",
        "ft-model-2",
        OTHER,
    }
    assert label_values(reg, "llmobs_llm_requests_total", "prompt_version") == {f"p{i}" for i in range(8)}
    assert reg.get_sample_value("llmobs_llm_unpriced_requests_total", {"model": OTHER}) == 5


def test_model_name_normalisation() -> None:
    cases = {
        "gpt-4o-mini-2024-07-18": "gpt-4o-mini",
        "claude-3-5-sonnet-20241022": "claude-3-5-sonnet",
        "claude-3-5-sonnet@20240620": "claude-3-5-sonnet",
        "models/gemini-1.5-pro": "gemini-1.5-pro",
        "accounts/fireworks/models/llama-v3-70b-instruct": "llama-v3-70b-instruct",
        " GPT-4o ": "gpt-4o",
        "llama3:latest": "llama3",
        "gemini-1.5-pro-002": "gemini-1.5-pro-002",
        "o1": "o1",
    }
    assert {k: normalize_model_name(k) for k in cases} == cases
    limiter = LabelLimiter(2)
    assert limiter("model", None) == "none" and limiter("model", "") == "none"
    long = limiter("tool", "a\nb" + "x" * 500)
    assert long == ("a b" + "x" * 500)[:128]  # control characters replaced, truncated
    assert [limiter("tool", v) for v in ("t1", "t2", "t1", long)] == ["t1", OTHER, "t1", long]
    assert limiter.overflowed() == {"tool": 1}
    with pytest.raises(ValueError):
        LabelLimiter(0)


def test_instances_share_one_metric_set_per_registry(tmp_path, reg: CollectorRegistry) -> None:
    a = LLMObs(f"sqlite:///{tmp_path / 'a.db'}", prometheus_registry=reg)
    b = LLMObs(f"sqlite:///{tmp_path / 'b.db'}", prometheus_registry=reg)
    try:
        assert a.metrics is not None and b.metrics is not None and a.metrics.metrics is b.metrics.metrics
        for obs in (a, b):
            chat(ai("x", 10, 1)).invoke("q", config={"callbacks": [obs.langchain_handler()]})
            obs.langchain_handler().on_chain_end({}, run_id=uuid.uuid4())
            assert obs.flush()
        assert (
            reg.get_sample_value(
                "llmobs_llm_requests_total", {**LLM, "prompt_version": "none", "status": "ok"}
            )
            == 2
        )
        assert reg.get_sample_value("llmobs_handler_errors_total", {"reason": "end_of_unknown_run"}) == 2
    finally:
        a.shutdown()
        b.shutdown()
    # counters stay after the instances are gone (monotonic for Prometheus)
    assert reg.get_sample_value("llmobs_handler_errors_total", {"reason": "end_of_unknown_run"}) == 2


def test_default_global_registry_and_switching_metrics_off(sqlite_url: str) -> None:
    with LLMObs(sqlite_url) as first, LLMObs(sqlite_url) as second:  # no "Duplicated timeseries" error
        assert first.metrics is not None and first.metrics.registry is REGISTRY
        assert second.metrics is not None and second.metrics.metrics is first.metrics.metrics
    for off in (None, False):
        with LLMObs(sqlite_url, prometheus_registry=off) as obs:
            assert obs.metrics is None
            with pytest.raises(RuntimeError, match="metrics are off"):
                obs.serve_metrics(port=0)


def test_synchronous_mode_updates_metrics_on_the_calling_thread(
    sqlite_url: str, reg: CollectorRegistry
) -> None:
    with LLMObs(sqlite_url, prometheus_registry=reg, synchronous=True) as obs:
        chat(ai("x", 10, 1)).invoke("q", config={"callbacks": [obs.langchain_handler()]})
        assert (
            reg.get_sample_value(
                "llmobs_llm_requests_total", {**LLM, "prompt_version": "none", "status": "ok"}
            )
            == 1
        )


def test_serve_metrics_http_openmetrics_and_stopped_by_shutdown(
    sqlite_url: str, reg: CollectorRegistry
) -> None:
    obs = LLMObs(sqlite_url, prometheus_registry=reg)
    server = obs.serve_metrics(port=0)
    try:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
        run_id = uuid.uuid4()
        chat(ai("x", 10, 1)).invoke("q", config={"callbacks": [obs.langchain_handler()], "run_id": run_id})
        assert obs.flush()
        request = urllib.request.Request(
            server.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            body = resp.read().decode()
        assert f'# {{trace_id="{run_id}"}}' in body and body.rstrip().endswith("# EOF")
        with urllib.request.urlopen(server.url, timeout=5) as resp:  # Prometheus text format
            plain = resp.read().decode()
        assert 'llmobs_llm_requests_total{model="gpt-4o-mini"' in plain and "# {" not in plain
    finally:
        obs.shutdown()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(server.url, timeout=2)


def test_every_metric_of_the_design_table_with_its_type_and_labels(
    sqlite_url: str, reg: CollectorRegistry
) -> None:
    """DESIGN.md's table is a promise: names, types and label names, after real traffic; and the
    registered families are exactly those of ``metric_names`` (which the dashboard and rules use)."""
    contract = {
        "llmobs_llm_requests": ("counter", {"model", "provider", "prompt_version", "status"}),
        "llmobs_llm_tokens": ("counter", {"model", "provider", "prompt_version", "type"}),
        "llmobs_llm_cost_usd": ("counter", {"model", "provider", "prompt_version"}),
        "llmobs_llm_unpriced_requests": ("counter", {"model"}),
        "llmobs_llm_duration_seconds": ("histogram", {"model", "provider", "prompt_version"}),
        "llmobs_llm_time_to_first_token_seconds": ("histogram", {"model", "provider"}),
        "llmobs_tool_calls": ("counter", {"tool", "status"}),
        "llmobs_tool_duration_seconds": ("histogram", {"tool", "status"}),
        "llmobs_retrievals": ("counter", {"retriever", "status"}),
        "llmobs_retrieved_documents": ("histogram", {"retriever", "status"}),
        "llmobs_branch_decisions": ("counter", {"graph", "from_node", "to_node"}),
        "llmobs_traces": ("counter", {"root", "status"}),
        "llmobs_trace_duration_seconds": ("histogram", {"root", "status"}),
        "llmobs_quality_score": ("histogram", {"metric", "prompt_version"}),
        "llmobs_judge_evaluations": ("counter", {"status"}),
        "llmobs_feedback": ("counter", {"rating"}),
        "llmobs_spans_dropped": ("counter", {"reason"}),
        "llmobs_handler_errors": ("counter", {"reason"}),
        # beyond the table: OpenTelemetry's gen_ai.client.token.usage
        "llmobs_llm_token_usage": ("histogram", {"model", "provider", "type"}),
        # beyond the table: the writer's outage spool (sinks/durable.py)
        "llmobs_spool_spans_written": ("counter", set()),
        "llmobs_spool_spans_replayed": ("counter", set()),
        "llmobs_spool_pending_spans": ("gauge", set()),
        "llmobs_store_write_failures": ("counter", set()),
        "llmobs_store_outages": ("counter", set()),
        "llmobs_store_available": ("gauge", set()),
        "llmobs_store_state": ("gauge", {"state"}),
        "llmobs_spool_bytes": ("gauge", set()),
        "llmobs_spool_oldest_span_age_seconds": ("gauge", set()),
        "llmobs_spool_spans_spilled": ("counter", set()),
        "llmobs_values_sanitized": ("counter", {"reason"}),
        # beyond the table: who reports (per process), and budgets (with budget_usd=...)
        "llmobs_info": ("gauge", {"service", "environment"}),
        "llmobs_budget_usd": ("gauge", {"period"}),
        "llmobs_budget_spend_usd": ("gauge", {"period"}),
    }
    with LLMObs(sqlite_url, prometheus_registry=reg, budget_usd={"day": 50.0}) as obs:
        run_traffic(obs)
        assert obs.flush()
        families = {f.name: f for f in reg.collect()}
        assert set(families) == set(contract) == {names.family(n) for n in names.ALL}
        kinds = {
            **{names.family(n): "counter" for n in names.COUNTERS},
            **{n: "histogram" for n in names.HISTOGRAMS},
            **{n: "gauge" for n in names.GAUGES},
        }
        assert {name: kind for name, (kind, _) in contract.items()} == kinds
        for name, (kind, labels) in contract.items():
            family = families[name]
            assert family.type == kind, name
            assert family.samples, f"{name} has no samples after the traffic"
            for sample in family.samples:
                assert set(sample.labels) - {"le"} == labels, (name, sample)
    assert label_values(reg, "llmobs_llm_tokens_total", "type") == {"input", "output", "cached_input"}


def test_exemplars_ride_on_exactly_the_series_metric_names_lists(
    sqlite_url: str, reg: CollectorRegistry
) -> None:
    """The dashboard asks Grafana for exemplars where ``EXEMPLAR_SERIES`` says they are."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    with LLMObs(sqlite_url, prometheus_registry=reg) as obs:
        traces = set(run_traffic(obs))
        assert obs.flush()
        text = generate_openmetrics(reg).decode()
    with_exemplars = {
        s.name: s.exemplar.labels["trace_id"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.exemplar is not None
    }
    assert set(with_exemplars) == set(names.EXEMPLAR_SERIES)
    assert set(with_exemplars.values()) <= traces


def test_info_names_the_service_and_environment_of_each_llmobs(
    sqlite_url: str, reg: CollectorRegistry, monkeypatch
) -> None:
    monkeypatch.delenv("LLMOBS_SERVICE", raising=False)
    monkeypatch.delenv("LLMOBS_ENVIRONMENT", raising=False)
    with LLMObs(sqlite_url, prometheus_registry=reg, service="support-bot", environment="prod"):
        pass
    with LLMObs(sqlite_url, prometheus_registry=reg):  # a second instance on the same registry
        pass
    assert samples(reg, "llmobs_info") == {
        frozenset({"service": "support-bot", "environment": "prod"}.items()): 1.0,
        frozenset({"service": "none", "environment": "none"}.items()): 1.0,
    }
