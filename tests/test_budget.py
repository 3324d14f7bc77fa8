"""Spend budgets: gauges in the Prometheus exposition, alerts at 80 % and 100 %, the user callback,
period roll-over and restarts, on spans recorded through the real handler."""

from __future__ import annotations

from datetime import timedelta

import pytest
from anomaly_support import T0, Clock, Request, Traffic
from conftest import sql
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llmobs_callbacks import LLMObs
from llmobs_callbacks.alerts import Alert
from llmobs_callbacks.budget import BudgetEvent, BudgetTracker, period_start

# 1,000 USD per million tokens: a request of 100 + 20 tokens costs 0.12 USD.
PRICES = {"gpt-4o-mini": {"input": 1000.0, "output": 1000.0}}
COST = 0.12


def _gauges(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name.startswith("llmobs_budget"):
                out[(sample.name, sample.labels["period"])] = sample.value
    return out


def _obs(url: str, clock: Clock, registry: CollectorRegistry, events: list, **kw) -> LLMObs:
    return LLMObs(
        url,
        clock=clock,
        prometheus_registry=registry,
        price_overrides=PRICES,
        budget_usd={"day": 1.0, "month": 10.0},
        on_budget=events.append,
        **kw,
    )


def test_budget_alerts_at_80_and_100_percent_and_gauges(db_url: str) -> None:
    clock, registry = Clock(T0), CollectorRegistry()
    events: list[BudgetEvent] = []
    alerts: list[Alert] = []
    obs = _obs(db_url, clock, registry, events)
    try:
        obs.alerts(notify=[alerts.append])
        traffic = Traffic(obs, clock)
        for i in range(12):
            traffic.send(T0 + timedelta(minutes=10 * i), Request())
        assert obs.flush()
        assert obs.alerts().flush()
        stored = sql(db_url, "select sum(cost_usd), count(*) from spans where cost_usd is not null")[0]
        assert stored[1] == 12 and stored[0] == pytest.approx(12 * COST)
        # One event per threshold: the 7th request passes 80 % (0.84 USD), the 9th 100 % (1.08).
        assert [(e.period, e.threshold) for e in events] == [("day", 0.8), ("day", 1.0)]
        assert events[0].spend_usd == pytest.approx(7 * COST) and events[1].spend_usd == pytest.approx(
            9 * COST
        )
        assert events[1].period_start == T0 and events[1].budget_usd == 1.0
        assert [(a.kind, a.severity) for a in alerts] == [("budget", "warning"), ("budget", "critical")]
        assert "day budget exhausted" in alerts[1].text
        gauges = _gauges(registry)
        assert gauges[("llmobs_budget_usd", "day")] == 1.0
        assert gauges[("llmobs_budget_usd", "month")] == 10.0
        assert gauges[("llmobs_budget_spend_usd", "day")] == pytest.approx(stored[0])
        assert gauges[("llmobs_budget_spend_usd", "month")] == pytest.approx(stored[0])
        # The next UTC day starts from zero; the month keeps counting.
        traffic.send(T0 + timedelta(days=1, hours=1), Request())
        assert obs.flush()
        gauges = _gauges(registry)
        assert gauges[("llmobs_budget_spend_usd", "day")] == pytest.approx(COST)
        assert gauges[("llmobs_budget_spend_usd", "month")] == pytest.approx(13 * COST)
    finally:
        obs.shutdown()


def test_a_restart_continues_from_the_stored_spend(db_url: str) -> None:
    clock = Clock(T0)
    events: list[BudgetEvent] = []
    obs = _obs(db_url, clock, CollectorRegistry(), events)
    traffic = Traffic(obs, clock)
    for i in range(8):  # 0.96 USD: past 80 %
        traffic.send(T0 + timedelta(minutes=10 * i), Request())
    obs.shutdown()
    assert [e.threshold for e in events] == [0.8]
    registry, later = CollectorRegistry(), []
    clock.at(T0 + timedelta(hours=3))
    obs = _obs(db_url, clock, registry, later)
    try:
        assert _gauges(registry)[("llmobs_budget_spend_usd", "day")] == pytest.approx(8 * COST)
        traffic = Traffic(obs, clock)
        traffic.send(T0 + timedelta(hours=3), Request())
        assert obs.flush() and obs.alerts().flush()
        assert [e.threshold for e in later] == [1.0]  # 80 % was announced before the restart
        assert later[0].spend_usd == pytest.approx(9 * COST)
    finally:
        obs.shutdown()


def test_budget_options_are_checked(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="unknown budget periods"):
        LLMObs(sqlite_url, prometheus_registry=None, budget_usd={"year": 100})
    with pytest.raises(ValueError, match="positive"):
        BudgetTracker({"day": 0})


def test_period_starts() -> None:
    moment = T0 + timedelta(days=2, hours=5)  # 2025-03-05 05:00, a Wednesday
    assert period_start("day", moment) == T0 + timedelta(days=2)
    assert period_start("week", moment) == T0  # Monday 2025-03-03
    assert period_start("month", moment) == T0.replace(day=1)
