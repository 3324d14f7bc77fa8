"""The shipped Grafana dashboard and alert rules: structure, CLI export, promtool check and test."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prom_support import prometheus_binary

from llmobs_callbacks.cli import main
from llmobs_callbacks.dashboards import (
    ALERTS_FILE,
    DASHBOARD_FILE,
    Thresholds,
    alert_rules,
    alerts_yaml,
    asset_path,
    dashboard_json,
    dashboard_queries,
    grafana_dashboard,
    variable_queries,
)
from llmobs_callbacks.sinks import metric_names as names


def test_shipped_assets_are_the_generated_defaults() -> None:
    # Regenerate with `python -m llmobs_callbacks.dashboards` after changing llmobs_callbacks/dashboards/.
    assert asset_path(DASHBOARD_FILE).read_text(encoding="utf-8") == dashboard_json()
    assert asset_path(ALERTS_FILE).read_text(encoding="utf-8") == alerts_yaml()
    assert yaml.safe_load(asset_path(ALERTS_FILE).read_text(encoding="utf-8")) == alert_rules()


def test_dashboard_has_variables_and_the_promised_panels() -> None:
    dash = grafana_dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert list(variables) == [
        "datasource", "job", "service", "environment", "instance", "model", "prompt_version", "graph",
    ]  # fmt: skip
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    queries = variable_queries(dash)
    assert queries["job"] == "label_values(llmobs_info, job)"
    assert queries["instance"] == (
        'label_values(llmobs_info{job=~"$job", service=~"$service", environment=~"$environment"}, instance)'
    )
    assert variables["instance"]["allValue"] is None  # "All" = the instances found, so it narrows
    assert (
        queries["model"]
        == 'label_values(llmobs_llm_requests_total{job=~"$job", instance=~"$instance"}, model)'
    )
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'job=~"$job", instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
        if panel["type"] == "timeseries":
            assert panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "none", panel["title"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for needed in (
        "requests per second",
        "error rate",
        "latency p50 / p95 / p99",
        "time to first token p50 / p95 / p99",
        "tokens per hour by type",
        "tokens per hour by prompt version",
        "cost per hour by model",
        "cost per hour by prompt version",
        "cost forecast for the month",
        "budget spend vs budget",
        "budget used",
        "tool failure rate",
        "retrieval empty rate",
        "branch mix",
        "quality flags and rates (0-1)",
        "quality ratings (1-5)",
        "spans dropped per second by reason",
        "handler errors",
        "store available",
        "store write failures",
        "spool: spans waiting",
    ):
        assert needed in titles, needed
    by_title = {p["title"]: p for p in panels}

    # branch mix: one panel per graph, each a share within its (graph, from_node)
    mix = next(p for p in panels if p["title"].startswith("Branch mix"))
    assert (mix["repeat"], mix["repeatDirection"]) == ("graph", "h")
    (expr,) = (t["expr"] for t in mix["targets"])
    assert 'graph=~"$graph"' in expr and "/ ignoring (to_node) group_left sum by (graph, from_node)" in expr

    # the two score scales apart: 0-1 flags and rates, 1-5 ratings
    flags = by_title["Quality flags and rates (0-1) by metric and prompt version"]
    ratings = by_title["Quality ratings (1-5) by metric and prompt version"]
    assert 'metric!~"faithfulness|relevance|completeness"' in flags["targets"][0]["expr"]
    assert 'metric=~"faithfulness|relevance|completeness"' in ratings["targets"][0]["expr"]
    assert (flags["fieldConfig"]["defaults"]["min"], flags["fieldConfig"]["defaults"]["max"]) == (0, 1)
    assert (ratings["fieldConfig"]["defaults"]["min"], ratings["fieldConfig"]["defaults"]["max"]) == (1, 5)
    custom = grafana_dashboard(Thresholds(rating_metrics=("faithfulness", "stars")))
    custom_ratings = next(p for p in custom["panels"] if p["title"].startswith("Quality ratings"))
    assert 'metric=~"faithfulness|stars"' in custom_ratings["targets"][0]["expr"]

    # exemplars only where the series carry them (the real-Prometheus test checks each one)
    exemplar_panels = {p["title"] for p in panels if any(t["exemplar"] for t in p["targets"])}
    assert exemplar_panels == {
        "LLM latency p50 / p95 / p99",
        "Trace duration p95 by root",
        "Cost per hour by model (USD)",
        "Cost per hour by prompt version (USD)",
    }
    # no two panels overlap on the 24-column grid
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
    assert not any("$" in q for _, q in dashboard_queries(dash))


def test_every_metric_the_dashboard_and_rules_read_is_a_known_name() -> None:
    """Names come from one module: a misspelt metric in a panel or rule would never have data."""
    known = {f"{n}{suffix}" for n in names.ALL for suffix in ("", "_bucket", "_sum", "_count")}
    exprs = [q for _, q in dashboard_queries(grafana_dashboard())]
    exprs += list(variable_queries(grafana_dashboard()).values())
    exprs += [r["expr"] for r in alert_rules()["groups"][0]["rules"]]
    used = {name for e in exprs for name in re.findall(r"\bllmobs_[a-z_]+", e)}
    assert used and used <= known, used - known


def test_thresholds_and_selector_reach_dashboard_and_rules(tmp_path: Path, capsys) -> None:
    out = tmp_path / "dash.json"
    assert (
        main(["export-grafana", "-o", str(out), "--hourly-cost-budget", "25", "--selector", 'job="bot"']) == 0
    )
    dash = json.loads(out.read_text())
    cost = next(p for p in dash["panels"] if p["title"] == "Cost per hour by model (USD)")
    assert cost["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 25
    assert all('job="bot"' in q for _, q in dashboard_queries(dash))
    assert all('job="bot"' in q for q in variable_queries(dash).values())

    rules_file = tmp_path / "alerts.yml"
    flags = ["--hourly-cost-budget", "25", "--p99-latency", "4", "--min-requests", "5"]
    assert main(["export-alerts", "-o", str(rules_file), *flags]) == 0
    rules = {r["alert"]: r for r in yaml.safe_load(rules_file.read_text())["groups"][0]["rules"]}
    assert rules["LLMObsHourlyCostOverBudget"]["expr"] == "sum(increase(llmobs_llm_cost_usd_total[1h])) > 25"
    assert "  > 4\n" in rules["LLMObsHighLatencyP99"]["expr"]
    for name in (
        "LLMObsHighLatencyP99",
        "LLMObsHighErrorRate",
        "LLMObsTokensPerRequestIncrease",
        "LLMObsToolFailureRate",
        "LLMObsHallucinationRate",
        "LLMObsLowFaithfulness",
    ):  # every rate-based rule has the minimum-traffic guard
        assert rules[name]["expr"].endswith(" >= 5"), name
    capsys.readouterr()
    assert main(["export-alerts"]) == 0  # stdout by default
    assert capsys.readouterr().out == alerts_yaml()
    for command in ("export-grafana", "export-alerts", "serve-metrics"):
        assert main([command, "--help"]) == 0  # main returns the exit code, also for --help
        assert "--database-url" in capsys.readouterr().out


# -- promtool -------------------------------------------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [prometheus_binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_rules_on_exported_files(tmp_path: Path) -> None:
    custom = Thresholds(
        hourly_cost_budget_usd=3.5, selector='job="bot", env="prod"', extra_labels={"team": "ml"}
    )
    (tmp_path / "custom.yml").write_text(alerts_yaml(custom))
    for path in (asset_path(ALERTS_FILE), tmp_path / "custom.yml"):
        result = _promtool("check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert (
            f"SUCCESS: {len(alert_rules()['groups'][0]['rules'])} rules found"
            in result.stdout + result.stderr
        )


def _annotations(alert: str, labels: dict[str, str], t: Thresholds | None = None) -> dict[str, str]:
    """The rule's annotations with ``{{ $labels.x }}`` filled in, as Prometheus renders them."""
    rule = next(r for r in alert_rules(t)["groups"][0]["rules"] if r["alert"] == alert)
    return {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        for key, text in rule["annotations"].items()
    }


def _expect(alert: str, severity: str, t: Thresholds | None = None, **labels: str) -> dict[str, Any]:
    return {"exp_labels": {"severity": severity, **labels}, "exp_annotations": _annotations(alert, labels, t)}


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


LLM = {"provider": "openai", "prompt_version": "v2"}


def _rule_tests() -> list[dict[str, Any]]:
    d = "llmobs_llm_duration_seconds_bucket"
    dc = "llmobs_llm_duration_seconds_count"
    req = "llmobs_llm_requests_total"
    cost = "llmobs_llm_cost_usd_total"
    tu = "llmobs_llm_token_usage"
    br = "llmobs_branch_decisions_total"
    avail, fails = "llmobs_store_available", "llmobs_store_write_failures_total"
    a, b, c = ({"job": "bot", "instance": i} for i in ("a:1", "b:2", "c:3"))
    q = "llmobs_quality_score"
    return [
        {  # p99 latency: "slow" has every call in (10.24, 20.48] s, "fast" under 1.28 s; "quiet" is
            # as slow as "slow" with one call every 2 min: under the minimum traffic (20 in 5 min)
            "interval": "1m",
            "input_series": [
                _series(d, "0x30", model="slow", le="5.12", **LLM),
                _series(d, "0x30", model="slow", le="10.24", **LLM),
                _series(d, "0+10x30", model="slow", le="20.48", **LLM),
                _series(d, "0+10x30", model="slow", le="+Inf", **LLM),
                _series(f"{dc}", "0+10x30", model="slow", **LLM),
                _series(d, "0x30", model="fast", le="0.64", **LLM),
                _series(d, "0+10x30", model="fast", le="1.28", **LLM),
                _series(d, "0+10x30", model="fast", le="+Inf", **LLM),
                _series(f"{dc}", "0+10x30", model="fast", **LLM),
                _series(d, "0x30", model="quiet", le="10.24", **LLM),
                _series(d, "0+0.5x30", model="quiet", le="20.48", **LLM),
                _series(d, "0+0.5x30", model="quiet", le="+Inf", **LLM),
                _series(f"{dc}", "0+0.5x30", model="quiet", **LLM),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "LLMObsHighLatencyP99", "exp_alerts": []},  # pending
                {
                    "eval_time": "20m",
                    "alertname": "LLMObsHighLatencyP99",
                    "exp_alerts": [_expect("LLMObsHighLatencyP99", "warning", model="slow")],
                },
            ],
        },
        {  # error rate: 10 % for "bad", 1 % for "good", none for "clean"; 20 % for "quiet", with
            # 12.5 calls in 5 min (under the minimum traffic of 20)
            "interval": "1m",
            "input_series": [
                _series(req, "0+2x30", model="quiet", status="ok", **LLM),
                _series(req, "0+0.5x30", model="quiet", status="error", **LLM),
                _series(req, "0+90x30", model="bad", status="ok", **LLM),
                _series(req, "0+10x30", model="bad", status="error", **LLM),
                _series(req, "0+99x30", model="good", status="ok", **LLM),
                _series(req, "0+1x30", model="good", status="error", **LLM),
                _series(req, "0+50x30", model="clean", status="ok", **LLM),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "20m",
                    "alertname": "LLMObsHighErrorRate",
                    "exp_alerts": [_expect("LLMObsHighErrorRate", "critical", model="bad")],
                }
            ],
        },
        {  # over budget: $0.50 a minute is $30 an hour (> $10)
            "interval": "1m",
            "input_series": [_series(cost, "0+0.5x120", model="m", **LLM)],
            "alert_rule_test": [
                {
                    "eval_time": "90m",
                    "alertname": "LLMObsHourlyCostOverBudget",
                    "exp_alerts": [_expect("LLMObsHourlyCostOverBudget", "critical")],
                },
                # steady spend is not a spike
                {"eval_time": "90m", "alertname": "LLMObsHourlyCostSpike", "exp_alerts": []},
            ],
        },
        {  # under budget: $6 an hour
            "interval": "1m",
            "input_series": [_series(cost, "0+0.1x120", model="m", **LLM)],
            "alert_rule_test": [
                {"eval_time": "90m", "alertname": "LLMObsHourlyCostOverBudget", "exp_alerts": []}
            ],
        },
        {  # spike: 25 h at $0.01/min, then an hour at $0.10/min (5 min samples: promtool stays fast)
            "interval": "5m",
            "input_series": [_series(cost, "0+0.05x300 15.5+0.5x11", model="m", **LLM)],
            "alert_rule_test": [
                {"eval_time": "1490m", "alertname": "LLMObsHourlyCostSpike", "exp_alerts": []},
                {
                    "eval_time": "1560m",
                    "alertname": "LLMObsHourlyCostSpike",
                    "exp_alerts": [_expect("LLMObsHourlyCostSpike", "warning")],
                },
            ],
        },
        {  # a jump in a series 2 h old has no 24 h baseline yet: no spike alert
            "interval": "5m",
            "input_series": [_series(cost, "0+0.05x12 1.1+0.5x11", model="m", **LLM)],
            "alert_rule_test": [
                {"eval_time": "120m", "alertname": "LLMObsHourlyCostSpike", "exp_alerts": []}
            ],
        },
        {  # tokens per request: input doubles from 1000 to 2000 in the last hour, output stays at 100
            "interval": "5m",
            "input_series": [
                # "rare" doubles too, with 12 calls an hour (under the minimum traffic of 20)
                _series(f"{tu}_count", "0+1x312", model="rare", provider="openai", type="input"),
                _series(
                    f"{tu}_sum", "0+1000x300 301000+2000x11", model="rare", provider="openai", type="input"
                ),
                _series(f"{tu}_count", "0+50x312", model="m", provider="openai", type="input"),
                _series(
                    f"{tu}_sum", "0+50000x300 15100000+100000x11", model="m", provider="openai", type="input"
                ),
                _series(f"{tu}_count", "0+50x312", model="m", provider="openai", type="output"),
                _series(f"{tu}_sum", "0+5000x312", model="m", provider="openai", type="output"),
            ],
            "alert_rule_test": [
                {"eval_time": "1500m", "alertname": "LLMObsTokensPerRequestIncrease", "exp_alerts": []},
                {
                    "eval_time": "1560m",
                    "alertname": "LLMObsTokensPerRequestIncrease",
                    "exp_alerts": [
                        _expect("LLMObsTokensPerRequestIncrease", "warning", model="m", type="input")
                    ],
                },
            ],
        },
        {  # branch mix: g goes from 50/50 to 90/10; h stays 50/50; "low" shifts but has < 20 decisions/h
            "interval": "5m",
            "input_series": [
                _series(br, "0+25x300 7545+45x11", graph="g", from_node="route", to_node="a"),
                _series(br, "0+25x300 7505+5x11", graph="g", from_node="route", to_node="b"),
                _series(br, "0+25x312", graph="h", from_node="route", to_node="a"),
                _series(br, "0+25x312", graph="h", from_node="route", to_node="b"),
                _series(br, "0+0.5x300 151.5+1.5x11", graph="low", from_node="route", to_node="a"),
                _series(br, "0+0.5x300 150x11", graph="low", from_node="route", to_node="b"),
            ],
            "alert_rule_test": [
                {"eval_time": "1500m", "alertname": "LLMObsBranchMixShift", "exp_alerts": []},
                {
                    "eval_time": "1560m",
                    "alertname": "LLMObsBranchMixShift",
                    "exp_alerts": [
                        _expect("LLMObsBranchMixShift", "warning", graph="g", from_node="route", to_node="a"),
                        _expect("LLMObsBranchMixShift", "warning", graph="g", from_node="route", to_node="b"),
                    ],
                },
            ],
        },
        {  # tools: 20 % failures for "flaky", 1 % for "solid", 50 % for "rare" (15 calls in 15 min)
            "interval": "1m",
            "input_series": [
                _series("llmobs_tool_calls_total", "0+0.5x40", tool="rare", status="ok"),
                _series("llmobs_tool_calls_total", "0+0.5x40", tool="rare", status="error"),
                _series("llmobs_tool_calls_total", "0+8x40", tool="flaky", status="ok"),
                _series("llmobs_tool_calls_total", "0+2x40", tool="flaky", status="error"),
                _series("llmobs_tool_calls_total", "0+99x40", tool="solid", status="ok"),
                _series("llmobs_tool_calls_total", "0+1x40", tool="solid", status="error"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "LLMObsToolFailureRate",
                    "exp_alerts": [_expect("LLMObsToolFailureRate", "warning", tool="flaky")],
                }
            ],
        },
        {  # quality: v1 hallucinates 10 % with faithfulness 3.0; v2 2 % with 4.5; v3 50 % with 1.0,
            # from 12 scores an hour (under the minimum traffic of 20)
            "interval": "1m",
            "input_series": [
                _series(f"{q}_sum", "0+0.1x90", metric="hallucination", prompt_version="v3"),
                _series(f"{q}_count", "0+0.2x90", metric="hallucination", prompt_version="v3"),
                _series(f"{q}_sum", "0+0.2x90", metric="faithfulness", prompt_version="v3"),
                _series(f"{q}_count", "0+0.2x90", metric="faithfulness", prompt_version="v3"),
                _series(f"{q}_sum", "0+1x90", metric="hallucination", prompt_version="v1"),
                _series(f"{q}_count", "0+10x90", metric="hallucination", prompt_version="v1"),
                _series(f"{q}_sum", "0+0.2x90", metric="hallucination", prompt_version="v2"),
                _series(f"{q}_count", "0+10x90", metric="hallucination", prompt_version="v2"),
                _series(f"{q}_sum", "0+30x90", metric="faithfulness", prompt_version="v1"),
                _series(f"{q}_count", "0+10x90", metric="faithfulness", prompt_version="v1"),
                _series(f"{q}_sum", "0+45x90", metric="faithfulness", prompt_version="v2"),
                _series(f"{q}_count", "0+10x90", metric="faithfulness", prompt_version="v2"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "80m",
                    "alertname": "LLMObsHallucinationRate",
                    "exp_alerts": [_expect("LLMObsHallucinationRate", "warning", prompt_version="v1")],
                },
                {
                    "eval_time": "80m",
                    "alertname": "LLMObsLowFaithfulness",
                    "exp_alerts": [_expect("LLMObsLowFaithfulness", "warning", prompt_version="v1")],
                },
            ],
        },
        {  # dropped spans: 5 dropped at minute 10, none after
            "interval": "1m",
            "input_series": [
                _series("llmobs_spans_dropped_total", "0x9 5x30", reason="queue_full"),
                _series("llmobs_spans_dropped_total", "0x40", reason="after_shutdown"),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "LLMObsSpansDropped", "exp_alerts": []},
                {
                    "eval_time": "12m",
                    "alertname": "LLMObsSpansDropped",
                    "exp_alerts": [_expect("LLMObsSpansDropped", "warning", reason="queue_full")],
                },
                {"eval_time": "35m", "alertname": "LLMObsSpansDropped", "exp_alerts": []},
            ],
        },
        {  # a reason's series appears with its first drops (store_rejected at minute 10); spool_full
            # dropped long ago and not since
            "interval": "1m",
            "input_series": [
                _series("llmobs_spans_dropped_total", "_x10 3x30", reason="store_rejected"),
                _series("llmobs_spans_dropped_total", "2x40", reason="spool_full"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "15m",
                    "alertname": "LLMObsSpansDropped",
                    "exp_alerts": [_expect("LLMObsSpansDropped", "warning", reason="store_rejected")],
                },
                {"eval_time": "25m", "alertname": "LLMObsSpansDropped", "exp_alerts": []},
            ],
        },
        {  # the store: a:1 keeps failing writes while available, b:2 is down (failing its replays
            # too: one alert, not two), c:3 failed one write at minute 11
            "interval": "1m",
            "input_series": [
                _series(avail, "1x40", **a),
                _series(fails, "0+1x40", **a),
                _series(avail, "0x40", **b),
                _series(fails, "0+1x40", **b),
                _series(avail, "1x40", **c),
                _series(fails, "0x10 1x30", **c),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "LLMObsStoreUnavailable", "exp_alerts": []},  # pending
                {"eval_time": "5m", "alertname": "LLMObsStoreWriteFailures", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "LLMObsStoreUnavailable",
                    "exp_alerts": [_expect("LLMObsStoreUnavailable", "critical", **b)],
                },
                {
                    "eval_time": "20m",
                    "alertname": "LLMObsStoreWriteFailures",
                    "exp_alerts": [_expect("LLMObsStoreWriteFailures", "warning", **a)],
                },
                {
                    "eval_time": "30m",
                    "alertname": "LLMObsStoreWriteFailures",
                    "exp_alerts": [_expect("LLMObsStoreWriteFailures", "warning", **a)],
                },
            ],
        },
    ]


def test_promtool_test_rules_fire_and_stay_quiet(tmp_path: Path) -> None:
    tests = _rule_tests()
    covered = {t["alertname"] for group in tests for t in group["alert_rule_test"] if t["exp_alerts"]}
    assert covered == {r["alert"] for r in alert_rules()["groups"][0]["rules"]}  # every alert fires somewhere
    spec = {"rule_files": [str(asset_path(ALERTS_FILE))], "evaluation_interval": "5m", "tests": tests}
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = _promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize("min_requests", [20, 0])
def test_one_error_in_a_quiet_window_pages_nobody(tmp_path: Path, min_requests: int) -> None:
    """With no pending time, the minimum-traffic guard alone keeps a quiet model's one failed call
    (1 of 6 calls in 5 min) from paging; a busy model failing 10 % of its calls still fires.
    min_requests=0 (no guard) shows the quiet model would fire otherwise."""
    t = Thresholds(pending="0m", min_requests=min_requests)
    (tmp_path / "rules.yml").write_text(alerts_yaml(t))
    req = "llmobs_llm_requests_total"
    expected = [_expect("LLMObsHighErrorRate", "critical", t, model="busy")]
    if min_requests == 0:
        expected.insert(0, _expect("LLMObsHighErrorRate", "critical", t, model="quiet"))
    tests = [
        {
            "interval": "1m",
            "input_series": [
                _series(req, "0+1x30", model="quiet", status="ok", **LLM),
                _series(req, "0x10 1x20", model="quiet", status="error", **LLM),
                _series(req, "0+30x30", model="busy", status="ok", **LLM),
                _series(req, "0x10 3+3x20", model="busy", status="error", **LLM),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "LLMObsHighErrorRate", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "LLMObsHighErrorRate", "exp_alerts": expected},
            ],
        }
    ]
    spec = {"rule_files": [str(tmp_path / "rules.yml")], "evaluation_interval": "1m", "tests": tests}
    test_file = tmp_path / "quiet_test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = _promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
