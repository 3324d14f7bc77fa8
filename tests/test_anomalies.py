"""Anomaly detection on stores written through the real handler: the seed's case study (the demo's
simulated day), its control run, a stationary week, and crafted stores for each detector."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from anomaly_support import T0, Clock, Request, Traffic, noisy
from conftest import _PG_SKIP_REASON, _fresh_postgres_url, drop_postgres_schema

from llmobs_callbacks import LLMObs
from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.analysis.anomalies import (
    AnomalyThresholds,
    Detector,
    backtest,
    detect_anomalies,
    format_anomalies,
    load,
)
from llmobs_callbacks.cli import main
from llmobs_callbacks.demo import Scenario, simulate

DAY = datetime(2025, 3, 3, tzinfo=timezone.utc)
SWITCH_AT = 18.0


def _url(kind: str, tmp_path_factory: pytest.TempPathFactory, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp(name) / 'llmobs.db'}"
    if _PG_SKIP_REASON:
        pytest.skip(_PG_SKIP_REASON)
    return _fresh_postgres_url()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def case_study(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """The seed's day: v1, then from 18:00 v2 with twice the context (the demo's simulation)."""
    url = _url(request.param, tmp_path_factory, "case")
    result = simulate(
        url,
        Scenario(
            start=DAY, hours=24.0, requests_per_hour=40, switch_at_hour=SWITCH_AT, v2_regresses=True, seed=7
        ),
        prometheus_registry=None,
    )
    with TraceStore(url) as ts:
        yield ts, result, url
    if request.param == "postgresql":
        drop_postgres_schema(url)


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    url = _url("sqlite", tmp_path_factory, "control")
    result = simulate(
        url,
        Scenario(
            start=DAY, hours=24.0, requests_per_hour=40, switch_at_hour=SWITCH_AT, v2_regresses=False, seed=7
        ),
        prometheus_registry=None,
    )
    with TraceStore(url) as ts:
        yield ts, result


def _by_type(anomalies: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for a in anomalies:
        out.setdefault(a.type, []).append(a)
    return out


def test_case_study_raises_token_cost_and_branch_anomalies_naming_v2(case_study) -> None:
    ts, result, _ = case_study
    assert result.by_version["v2"] > 0 and result.by_version["v1"] > 0
    anomalies = ts.anomalies(now=result.end, window="1h", baseline="24h")
    found = _by_type(anomalies)
    for kind in ("token_spike", "cost_spike", "branch_shift"):
        assert kind in found, format_anomalies(anomalies)
        (a,) = found[kind]
        assert a.prompt_version == "v2"
        assert a.severity in ("warning", "critical")
        assert "v2" in a.explanation
    token = found["token_spike"][0]
    assert token.current >= 1.5 * token.baseline  # the store's v2 vs v1 tokens per request
    # The reference is v1's requests on the same model (those with an LLM call) before the window.
    v1 = ts.traces(
        prompt_version="v1", model=token.model, until=result.end - timedelta(hours=1), scores=False
    )
    assert token.baseline == pytest.approx((v1["input_tokens"] + v1["output_tokens"]).mean(), rel=1e-9)
    branch = found["branch_shift"][0]
    assert branch.graph == "support_bot" and branch.route == "classify→human_review"
    assert branch.current > branch.baseline
    # The measured shares are the store's: human_review decisions of v2 among v2's decisions.
    assert branch.details["current_mix"]["human_review"] == result.human_review["v2"]
    assert branch.samples == result.by_version["v2"]
    assert not [a for a in anomalies if a.prompt_version == "v1" and a.severity != "info"]


def test_case_study_is_caught_within_the_hour(case_study) -> None:
    ts, _result, _ = case_study
    switch = DAY + timedelta(hours=SWITCH_AT)
    before = ts.anomalies(now=switch)
    assert [a for a in before if a.severity != "info"] == []
    after = _by_type(ts.anomalies(now=switch + timedelta(hours=1)))
    assert after["token_spike"][0].prompt_version == "v2"
    assert after["cost_spike"][0].prompt_version == "v2"
    assert after["new_prompt_version"][0].prompt_version == "v2"
    assert after["new_prompt_version"][0].severity == "info"


def test_cli_anomalies_json_and_exit_code(case_study, capsys: pytest.CaptureFixture[str]) -> None:
    _ts, result, url = case_study
    now = result.end.isoformat()
    code = main(["anomalies", "--database-url", url, "--now", now, "--json", "--fail-on-anomaly"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 1
    assert {(r["type"], r["prompt_version"]) for r in rows} >= {
        ("token_spike", "v2"),
        ("cost_spike", "v2"),
        ("branch_shift", "v2"),
    }
    # The same call an hour before the switch: quiet, exit 0.
    early = (DAY + timedelta(hours=SWITCH_AT - 1)).isoformat()
    assert main(["anomalies", "--database-url", url, "--now", early, "--fail-on-anomaly"]) == 0
    assert "no anomalies" in capsys.readouterr().out
    # A threshold raised on the command line silences the token rule and the statistical path.
    main(["anomalies", "--database-url", url, "--now", now, "--json", "--type", "token_spike",
          "--set", "token_spike_factor=3", "--set", "min_increase=2"])  # fmt: skip
    assert json.loads(capsys.readouterr().out) == []


def test_control_run_raises_nothing(control) -> None:
    ts, result = control
    anomalies = ts.anomalies(now=result.end)
    assert [a for a in anomalies if a.severity != "info"] == [], format_anomalies(anomalies)
    # Not quiet for lack of data: every request detector compared v2 (and v1) with a reference.
    detector = Detector(load(ts, result.end - timedelta(hours=25), result.end), AnomalyThresholds())
    assert detector.detect(result.end, timedelta(hours=1), timedelta(hours=24)) == anomalies
    for kind in ("token_spike", "cost_spike", "latency_spike", "error_rate", "branch_shift"):
        assert detector.evaluated[kind] >= 1, (kind, detector.evaluated)
    # …and at every hour of the day after the first one.
    for now, found in backtest(ts, DAY + timedelta(hours=2), result.end, every="1h"):
        assert [a for a in found if a.severity != "info"] == [], (now, format_anomalies(found))


def test_stationary_week_gives_zero_anomalies(tmp_path) -> None:
    """7 simulated days of v1 traffic with noise: no anomaly at any hour of days 2–7."""
    url = f"sqlite:///{tmp_path / 'week.db'}"
    hours = 168
    result = simulate(
        url,
        Scenario(start=DAY, hours=hours, requests_per_hour=20, switch_at_hour=None, seed=11),
        prometheus_registry=None,
    )
    with TraceStore(url) as ts:
        assert ts.anomalies(now=result.end) == []
        start = DAY + timedelta(hours=25)
        detector = Detector(load(ts, start - timedelta(hours=25), result.end), AnomalyThresholds())
        checks = 0
        moment = start
        while moment <= result.end:
            found = detector.detect(moment, timedelta(hours=1), timedelta(hours=24))
            assert found == [], (moment, format_anomalies(found))
            checks += 1
            moment += timedelta(hours=1)
    assert checks == hours - 24
    # Each detector had enough data in every check, so the silence means something (order
    # lookups, ~5 an hour, stay below min_requests: the tool detector rightly never compares).
    for kind in ("token_spike", "cost_spike", "latency_spike", "error_rate", "retrieval_empty"):
        assert detector.evaluated[kind] >= checks, (kind, detector.evaluated)
    assert detector.evaluated["branch_shift"] >= checks // 2


# -- crafted stores: one detector each ------------------------------------------------------------


@pytest.fixture
def traffic(db_url: str) -> Iterator[Traffic]:
    clock = Clock(T0)
    obs = LLMObs(db_url, prometheus_registry=None, clock=clock)
    yield Traffic(obs, clock)
    obs.shutdown()


def _store(t: Traffic) -> TraceStore:
    assert t.obs.flush()
    return TraceStore(t.obs.sql.engine)


def test_error_rate_tool_failures_and_empty_retrievals(traffic: Traffic) -> None:
    traffic.hours(T0, 24, 20, noisy("v1"))
    now = T0 + timedelta(hours=25)

    def bad_hour(moment: datetime, rng) -> Request:
        i = int((moment - T0).total_seconds())
        return Request(fails=i % 3 == 0, empty_retrieval=i % 2 == 0)

    traffic.hours(T0 + timedelta(hours=24), 1, 30, bad_hour, seed=2)
    ts = _store(traffic)
    window = ts.traces(since=now - timedelta(hours=1), until=now, scores=False)
    failed = int((window["status"] == "error").sum())
    assert failed >= 5
    found = _by_type(ts.anomalies(now=now))
    (error,) = found["error_rate"]
    assert (error.prompt_version, error.model) == ("v1", None)
    assert error.current == pytest.approx(failed / len(window))
    assert error.baseline == 0.0 and error.severity == "critical"
    (tool,) = found["tool_failure"]
    assert tool.tool == "lookup_order" and tool.details["events"] == failed
    (empty,) = found["retrieval_empty"]
    assert empty.tool == "Docs" and empty.current > 0.3 and empty.baseline == 0.0
    assert "token_spike" not in found and "cost_spike" not in found


def test_quiet_hours_page_nobody(traffic: Traffic) -> None:
    """Five requests with doubled tokens and failing tools: below min_requests, so nothing."""
    traffic.hours(T0, 24, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=24), 1, 5, noisy("v1", scale=2.0, tool_fails=True), seed=3)
    ts = _store(traffic)
    now = T0 + timedelta(hours=25)
    assert ts.anomalies(now=now) == []
    # The same detectors with a lower minimum do see them.
    found = _by_type(ts.anomalies(now=now, thresholds=AnomalyThresholds(min_requests=5)))
    assert {"tool_failure", "token_spike"} <= set(found)


def test_token_spike_of_an_established_version_and_configurable_thresholds(traffic: Traffic) -> None:
    traffic.hours(T0, 24, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=24), 1, 20, noisy("v1", scale=1.8), seed=4)
    ts = _store(traffic)
    now = T0 + timedelta(hours=25)
    found = _by_type(ts.anomalies(now=now))
    (token,) = found["token_spike"]
    assert token.prompt_version == "v1" and token.severity == "critical"
    assert token.details["reference"] == "its baseline" and not token.details["new_version"]
    assert 1.6 < token.change < 2.0
    assert token.z is not None and token.z >= 4
    strict = AnomalyThresholds(token_spike_factor=2.5, cost_per_request_factor=2.5, min_increase=1.5)
    assert "token_spike" not in _by_type(ts.anomalies(now=now, thresholds=strict))
    assert [a.type for a in detect_anomalies(ts, now=now, types=["token_spike"])] == ["token_spike"]


def test_new_prompt_version_behaving_like_the_old_one_is_info_only(traffic: Traffic) -> None:
    traffic.hours(T0, 24, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=24), 1, 20, noisy("v2"), seed=5)
    ts = _store(traffic)
    anomalies = ts.anomalies(now=T0 + timedelta(hours=25))
    assert [(a.type, a.severity, a.prompt_version) for a in anomalies] == [
        ("new_prompt_version", "info", "v2")
    ]
    assert anomalies[0].samples == 20


def test_quality_drop_from_user_feedback(traffic: Traffic) -> None:
    ids = traffic.hours(T0, 24, 20, noisy("v1"))
    for i, trace_id in enumerate(ids):
        traffic.obs.feedback(trace_id, score=0.0 if i % 10 == 0 else 1.0)
    late = traffic.hours(T0 + timedelta(hours=24), 1, 20, noisy("v1"), seed=6)
    for i, trace_id in enumerate(late):
        traffic.obs.feedback(trace_id, score=1.0 if i % 4 == 0 else 0.0)
    ts = _store(traffic)
    (drop,) = _by_type(ts.anomalies(now=T0 + timedelta(hours=25)))["quality_drop"]
    assert drop.prompt_version == "v1" and drop.metric == "mean_user_feedback"
    assert drop.current == pytest.approx(5 / 20)
    assert drop.baseline == pytest.approx(0.9, abs=0.01)
    assert drop.samples == 20


def test_anomaly_records_are_json_ready(traffic: Traffic) -> None:
    traffic.hours(T0, 24, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=24), 1, 20, noisy("v2", scale=2.0), seed=7)
    ts = _store(traffic)
    anomalies = ts.anomalies(now=T0 + timedelta(hours=25))
    rows = json.loads(json.dumps([a.as_dict() for a in anomalies]))
    assert {r["type"] for r in rows} >= {"token_spike", "cost_spike", "new_prompt_version"}
    for row in rows:
        assert set(row) >= {"type", "severity", "prompt_version", "model", "current", "baseline", "change"}
        assert row["window_end"] == (T0 + timedelta(hours=25)).isoformat()
    text = format_anomalies(anomalies)
    assert len(text.splitlines()) == len(anomalies)
    assert text.splitlines()[0].startswith("CRITICAL")
