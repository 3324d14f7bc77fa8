"""A real Prometheus scrapes a test app every second; every dashboard query must return data,
every variable must resolve (and honour the selector), exemplars must be where panels ask for them.

Uses Debian's `prometheus` package when installed (`.ci/run` installs it); skips with the reason
otherwise, and fails instead under LLMOBS_REQUIRE_PROMETHEUS=1 (CI).
"""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prom_support import prometheus_binary, run_traffic, support_graph
from prometheus_client import CollectorRegistry

from llmobs_callbacks import LLMObs
from llmobs_callbacks.dashboards import (
    ALERTS_FILE,
    Thresholds,
    alert_rules,
    asset_path,
    grafana_dashboard,
    resolve,
    variable_queries,
)
from llmobs_callbacks.dashboards.promql import one_of

TRACES_PER_ROUND = 9  # run_traffic: 2 RAG, 1 streamed, 1 unpriced, 1 failed LLM, 2 tools, 2 graphs
BILLING_QUESTIONS = ("refund please", "refund now", "refund it", "opening hours?")  # a second graph, 3:1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path, target: str) -> None:
        self.url, self.proc, self.log = url, proc, log
        self.target = target  # the scraped app's address: its `instance` label

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
    obs = LLMObs(
        sqlite_url,
        prometheus_registry=CollectorRegistry(),
        flush_interval_s=0.1,
        service="support-bot",
        environment="test",
        budget_usd={"day": 50.0},
    )
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
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log, f"127.0.0.1:{target.port}")
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


_LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+), (?P<label>\w+)\)")


def grafana_values(prom: Prometheus, query: str, variables: dict[str, str]) -> list[str]:
    """What Grafana lists for a ``label_values(selector, label)`` variable, variables resolved."""
    found = _LABEL_VALUES.fullmatch(query)
    assert found, query
    selector = resolve(found["selector"], variables)
    return sorted(prom.api(f"label/{found['label']}/values", **{"match[]": selector}))


def grafana_all(values: list[str], all_value: str | None) -> str:
    """A multi-value variable set to "All", as Grafana puts it into a PromQL regex matcher."""
    return all_value if all_value is not None else f"({one_of(values)})"


def resolve_variables(prom: Prometheus, dashboard: dict[str, Any]) -> tuple[dict[str, str], dict[str, list]]:
    """Every query variable at "All", in order (each may use the ones before): the substitutions
    and the values Grafana would list."""
    variables: dict[str, str] = {}
    listed: dict[str, list[str]] = {}
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        listed[v["name"]] = grafana_values(prom, v["query"]["query"], variables)
        variables[f"${v['name']}"] = grafana_all(listed[v["name"]], v["allValue"])
    return variables, listed


def _round_of_traffic(app: LLMObs, billing: Any) -> list[str]:
    traces = run_traffic(app)
    for question in BILLING_QUESTIONS:
        run_id = uuid.uuid4()
        traces.append(str(run_id))
        billing.invoke(
            {"question": question}, config={"callbacks": [app.langchain_handler()], "run_id": run_id}
        )
    return traces


def test_every_dashboard_query_returns_data_and_exemplars_lead_to_traces(
    app: LLMObs, prometheus: Prometheus
) -> None:
    traces: list[str] = []
    billing = support_graph("billing")
    # Rounds of traffic with scrapes in between, so rate() and histogram_quantile() see increases.
    for round_no in range(1, 4):
        traces += _round_of_traffic(app, billing)
        assert app.flush()
        expected = (TRACES_PER_ROUND + len(BILLING_QUESTIONS)) * round_no
        prometheus.wait_for(
            f"round {round_no} to be scraped",
            lambda expected=expected: (
                float(prometheus.query("sum(llmobs_traces_total)")[0]["value"][1]) == expected
            ),
        )

    dash = grafana_dashboard()
    variables, listed = resolve_variables(prometheus, dash)
    assert listed["job"] == ["llmobs-test"]
    assert listed["service"] == ["support-bot"]
    assert listed["environment"] == ["test"]
    assert listed["instance"] == [prometheus.target]
    assert {"gpt-4o-mini", "my-finetune-xyz"} <= set(listed["model"])
    assert {"v1", "v2", "none"} <= set(listed["prompt_version"])
    assert listed["graph"] == ["billing", "support"]
    # service and environment narrow the instances, and through them every panel
    narrowed = {**variables, "$service": "nobody"}
    assert grafana_values(prometheus, variable_queries(dash)["instance"], narrowed) == []

    def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[dict, dict, str]]:
        """(panel, target, PromQL) as Grafana runs them: a repeated panel once per graph."""
        for panel in dashboard["panels"]:
            for target in panel.get("targets", ()):
                for graph in listed["graph"] if panel.get("repeat") == "graph" else [None]:
                    values = variables if graph is None else {**variables, "$graph": one_of([graph])}
                    yield panel, target, resolve(target["expr"], values)

    selected = grafana_dashboard(Thresholds(selector='job="llmobs-test"'))
    empty = []
    for dashboard in (dash, selected):
        for panel, _, expr in panel_queries(dashboard):
            result = prometheus.query(expr)
            if not any(math.isfinite(float(r["value"][1])) for r in result):
                empty.append((panel["title"], expr, result))
    assert not empty, "dashboard queries without data:\n" + "\n".join(map(str, empty))

    # every variable query honours the selector: the same values when it matches, none otherwise
    for selector, expect_none in (('job="llmobs-test"', False), ('job="elsewhere"', True)):
        for name, query in variable_queries(grafana_dashboard(Thresholds(selector=selector))).items():
            assert selector in query, (name, query)
            got = grafana_values(prometheus, query, {})
            assert got == ([] if expect_none else listed[name]), (selector, name, got)

    # branch mix: shares within each graph and node, summing to 1 per (graph, from_node)
    mix = next(p for p in dash["panels"] if p.get("repeat") == "graph")
    assert mix["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "none"
    for graph_values in (".*", *(one_of([g]) for g in listed["graph"])):
        result = prometheus.query(resolve(mix["targets"][0]["expr"], {**variables, "$graph": graph_values}))
        totals: dict[tuple[str, str], float] = defaultdict(float)
        shares = {}
        for r in result:
            labels = r["metric"]
            totals[labels["graph"], labels["from_node"]] += float(r["value"][1])
            shares[labels["graph"], labels["to_node"]] = float(r["value"][1])
        graphs = (
            listed["graph"]
            if graph_values == ".*"
            else [g for g in listed["graph"] if one_of([g]) == graph_values]
        )
        assert set(totals) == {(g, "classify") for g in graphs}, result
        assert all(v == pytest.approx(1.0) for v in totals.values()), totals
        if "billing" in graphs:  # 3 refunds to 1 general per round
            assert shares["billing", "refunds"] > shares["billing", "general"] > 0

    # a few values a user reads off the panels, straight from Prometheus
    def scalar(expr: str) -> float:
        return float(prometheus.query(expr)[0]["value"][1])

    assert scalar('sum(llmobs_llm_requests_total{status="error"})') == 3
    assert scalar('sum(llmobs_retrieved_documents_bucket{le=~"0|0.0"})') == 3  # one empty retrieval per round
    assert scalar('sum(llmobs_tool_calls_total{tool="lookup_order"})') == 6
    assert scalar("sum(llmobs_handler_errors_total)") == 3
    assert scalar('llmobs_budget_usd{period="day"}') == 50
    assert scalar("llmobs_store_available") == 1

    # exemplars: asked for on exactly the time series panels whose series carry them (once per
    # panel), leading to stored trace ids
    now = time.time()
    with_exemplars = set()
    for panel in dash["panels"]:
        if panel["type"] != "timeseries":
            continue
        ids: set[str] = set()
        for target in panel["targets"]:
            expr = resolve(target["expr"], {**variables, "$graph": ".*"})
            data = prometheus.api("query_exemplars", query=expr, start=now - 600, end=now + 60)
            ids |= {e["labels"]["trace_id"] for series in data for e in series["exemplars"]}
        asks = [t["exemplar"] for t in panel["targets"]]
        if any(asks):
            assert asks.count(True) == 1, panel["title"]
            assert ids and ids <= set(traces), (panel["title"], ids)
            with_exemplars.add(panel["title"])
        else:
            assert not ids, panel["title"]
    assert with_exemplars == {
        "LLM latency p50 / p95 / p99",
        "Trace duration p95 by root",
        "Cost per hour by model (USD)",
        "Cost per hour by prompt version (USD)",
    }

    # the shipped alert rules load and evaluate in a real Prometheus
    expected_rules = len(alert_rules()["groups"][0]["rules"])

    def rules_healthy() -> bool:
        groups = prometheus.api("rules", type="alert")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == expected_rules and all(r["health"] == "ok" for r in rules)

    prometheus.wait_for("the alert rules to evaluate", rules_healthy, timeout=10)
