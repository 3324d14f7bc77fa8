"""A real Prometheus scrapes a test app every second; every dashboard query must return data.

Uses Debian's `prometheus` package when installed (`.ci/run` installs it); skips with the reason
otherwise, and fails instead under LLMOBS_REQUIRE_PROMETHEUS=1 (CI).
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prom_support import prometheus_binary, run_traffic
from prometheus_client import CollectorRegistry

from llmobs_callbacks import LLMObs
from llmobs_callbacks.dashboards import ALERTS_FILE, asset_path, dashboard_queries, grafana_dashboard

TRACES_PER_ROUND = 9  # run_traffic: 2 RAG, 1 streamed, 1 unpriced, 1 failed LLM, 2 tools, 2 graphs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def api(self, path: str, **params: Any) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return data["result"]

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except (urllib.error.URLError, ConnectionError, AssertionError, KeyError, IndexError):
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; log: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)


@pytest.fixture
def app(sqlite_url: str) -> Iterator[LLMObs]:
    obs = LLMObs(sqlite_url, prometheus_registry=CollectorRegistry(), flush_interval_s=0.1)
    yield obs
    obs.shutdown()


@pytest.fixture
def prometheus(app: LLMObs, tmp_path: Path) -> Iterator[Prometheus]:
    binary = prometheus_binary("prometheus")
    target = app.serve_metrics(port=0)  # the app's /metrics, as an app without one would serve it
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {asset_path(ALERTS_FILE)}\n"
        "scrape_configs:\n  - job_name: llmobs-test\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target.port}']\n"
    )
    log = tmp_path / "prometheus.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        prom.wait_for(
            "prometheus to be ready",
            lambda: urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2).status == 200,
        )
        prom.wait_for("the first scrape of the app", lambda: prom.query('up{job="llmobs-test"} == 1') != [])
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_every_dashboard_query_returns_data_and_exemplars_lead_to_traces(
    app: LLMObs, prometheus: Prometheus
) -> None:
    traces: list[str] = []
    # Rounds of traffic with scrapes in between, so rate() and histogram_quantile() see increases.
    for round_no in range(1, 4):
        traces += run_traffic(app)
        assert app.flush()
        expected = TRACES_PER_ROUND * round_no
        prometheus.wait_for(
            f"round {round_no} to be scraped",
            lambda expected=expected: (
                float(prometheus.query("sum(llmobs_traces_total)")[0]["value"][1]) == expected
            ),
        )

    empty = []
    for title, expr in dashboard_queries(grafana_dashboard()):
        result = prometheus.query(expr)
        values = [float(r["value"][1]) for r in result]
        if not any(math.isfinite(v) for v in values):
            empty.append((title, expr, result))
    assert not empty, "dashboard queries without data:\n" + "\n".join(map(str, empty))

    # a few values a user reads off the panels, straight from Prometheus
    def scalar(expr: str) -> float:
        return float(prometheus.query(expr)[0]["value"][1])

    assert scalar('sum(llmobs_llm_requests_total{status="error"})') == 3
    assert scalar('sum(llmobs_retrieved_documents_bucket{le=~"0|0.0"})') == 3  # one empty retrieval per round
    assert scalar('sum(llmobs_tool_calls_total{tool="lookup_order"})') == 6
    assert scalar("sum(llmobs_handler_errors_total)") == 3

    # exemplars: a point on the latency or cost panel leads to a trace id the store has
    now = time.time()
    for metric in ("llmobs_llm_duration_seconds_bucket", "llmobs_llm_cost_usd_total"):
        data = prometheus.api("query_exemplars", query=metric, start=now - 600, end=now + 60)
        ids = {e["labels"]["trace_id"] for series in data for e in series["exemplars"]}
        assert ids and ids <= set(traces), (metric, ids)

    # the shipped alert rules load and evaluate in a real Prometheus
    def rules_healthy() -> bool:
        groups = prometheus.api("rules", type="alert")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == 10 and all(r["health"] == "ok" for r in rules)

    prometheus.wait_for("the alert rules to evaluate", rules_healthy, timeout=10)
