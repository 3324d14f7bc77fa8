"""Release gate (``llmobs gate`` / ``TraceStore.gate``) on crafted stores written through the handler."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from anomaly_support import T0, Clock, Request, Traffic, noisy
from conftest import sql

from llmobs_callbacks import LLMObs
from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.analysis.gate import GateCriteria, parse_fraction
from llmobs_callbacks.cli import main


@pytest.fixture
def traffic(db_url: str) -> Iterator[Traffic]:
    clock = Clock(T0)
    obs = LLMObs(db_url, prometheus_registry=None, clock=clock)
    t = Traffic(obs, clock)
    t.url = db_url  # type: ignore[attr-defined]
    yield t
    obs.shutdown()


def _gate(t: Traffic, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    assert t.obs.flush()
    code = main(["gate", "--database-url", t.url, *args])  # type: ignore[attr-defined]
    return code, capsys.readouterr().out


def _row(table: str, criterion: str) -> list[str]:
    for line in table.splitlines():
        if line.startswith(criterion + " "):
            return line.split()
    raise AssertionError(f"no row {criterion!r} in\n{table}")


def test_same_behaviour_passes(traffic: Traffic, capsys) -> None:
    traffic.hours(T0, 2, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=2), 2, 20, noisy("v2"), seed=2)
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v2")
    assert code == 0, out
    assert out.rstrip().endswith("result: PASS")
    assert _row(out, "requests")[1:3] == ["40", "40"]
    assert _row(out, "cost per request")[-1] == "pass"
    assert _row(out, "quality")[-1] == "n/a"  # no scores stored: not checked


def test_costlier_candidate_fails_with_exit_1(traffic: Traffic, capsys) -> None:
    traffic.hours(T0, 2, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=2), 2, 20, noisy("v2", scale=2.0), seed=2)
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v2", "--json")
    assert code == 1
    result = json.loads(out)
    rows = {r["criterion"]: r for r in result["criteria"]}
    assert rows["cost per request"]["status"] == "FAIL"
    # The figures are the store's: mean cost of each version's requests.
    (base,), (cand,) = (
        sql(traffic.url, "select avg(cost_usd) from spans where kind='llm' and prompt_version=:v", v=v)  # type: ignore[attr-defined]
        for v in ("v1", "v2")
    )
    assert rows["cost per request"]["baseline"] == pytest.approx(base[0])
    assert rows["cost per request"]["candidate"] == pytest.approx(cand[0])
    assert rows["cost per request"]["change"] == pytest.approx(cand[0] / base[0] - 1)
    assert rows["error rate"]["status"] == "pass"
    assert result["verdict"].startswith("FAIL") and result["exit_code"] == 1
    # A looser limit lets the same candidate through.
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v2", "--max-cost-increase", "150%")
    assert code == 0, out


def test_too_little_data_exits_2(traffic: Traffic, capsys) -> None:
    traffic.hours(T0, 2, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=2), 1, 10, noisy("v2", scale=3.0), seed=2)
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v2")
    assert code == 2, out
    assert _row(out, "requests")[-1] == "insufficient"
    assert "INSUFFICIENT DATA" in out
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v2", "--min-samples", "10")
    assert code == 1  # enough for a lower minimum: the 3× cost is a regression
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v3")
    assert code == 2  # an unknown version has no requests


def test_error_rate_and_quality_regressions(traffic: Traffic, capsys) -> None:
    v1 = traffic.hours(T0, 2, 20, noisy("v1"))

    def flaky(moment, rng) -> Request:
        return Request(version="v2", fails=rng.random() < 0.25)

    v2 = traffic.hours(T0 + timedelta(hours=2), 2, 20, flaky, seed=2)
    for trace_id in v1:
        traffic.obs.feedback(trace_id, score=1.0)
    for i, trace_id in enumerate(v2):
        traffic.obs.feedback(trace_id, score=1.0 if i % 2 else 0.0)
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v2", "--max-cost-increase", "off")
    assert code == 1, out
    errors = _row(out, "error rate")
    assert errors[-1] == "FAIL"
    url: str = traffic.url  # type: ignore[attr-defined]
    failed = sql(url, "select count(*) from spans where parent_span_id is null and status='error'")[0][0]
    assert errors[3] == f"{failed / 40 * 100:.2f}%"
    quality = _row(out, "quality: user_feedback")
    assert quality[2:5] == ["1.000", "0.500", "-0.500"] and quality[-1] == "FAIL"
    assert "cost per request" not in out  # switched off
    # The Python API gives the same verdict.
    with TraceStore(traffic.url) as ts:  # type: ignore[attr-defined]
        result = ts.gate("v1", "v2", GateCriteria(max_cost_increase=None))
    assert result.exit_code == 1
    assert {r.criterion for r in result.regressions} >= {"error rate", "quality: user_feedback"}


def test_by_model(traffic: Traffic, capsys) -> None:
    traffic.hours(T0, 2, 20, noisy("v1", model="gpt-4o-mini"))
    traffic.llm.model_name = "gpt-4o"  # the app asks for another model (the grouping key)
    traffic.hours(T0 + timedelta(hours=2), 2, 20, noisy("v1", model="gpt-4o"), seed=2)
    code, out = _gate(traffic, capsys, "--by", "model", "--baseline", "gpt-4o-mini", "--candidate", "gpt-4o")
    assert code == 1, out
    assert "release gate (model)" in out
    assert _row(out, "cost per request")[-1] == "FAIL"  # gpt-4o's price is ~16× gpt-4o-mini's
    code, out = _gate(traffic, capsys, "--by", "model", "--baseline", "gpt-4o", "--candidate", "gpt-4o-mini")
    assert code == 0, out


def test_parse_fraction() -> None:
    assert parse_fraction("20%") == pytest.approx(0.2)
    assert parse_fraction("0.02") == pytest.approx(0.02)
    assert parse_fraction("-0.2") == pytest.approx(-0.2)
    with pytest.raises(ValueError):
        parse_fraction("lots")
