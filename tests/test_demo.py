"""The demo's case study: a simulated day through the real handler, read back from the store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import sql

from llmobs_callbacks.demo import Scenario, SimulatedClock, arrival_times, simulate

START = datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)


def _per_version(url: str) -> dict[str, dict[str, float]]:
    """Requests, tokens/request, cost/request and human-review share per prompt version."""
    rows = sql(
        url,
        """
        select r.prompt_version, count(distinct r.trace_id),
               sum(l.input_tokens + l.output_tokens), sum(l.cost_usd)
        from spans r left join spans l on l.trace_id = r.trace_id and l.kind = 'llm'
        where r.parent_span_id is null group by r.prompt_version
        """,
    )
    reviews = dict(
        sql(
            url,
            """
            select r.prompt_version, count(*) from branch_decisions b
            join spans r on r.trace_id = b.trace_id and r.parent_span_id is null
            where b.to_node = 'human_review' group by r.prompt_version
            """,
        )
    )
    return {
        version: {
            "requests": n,
            "tokens": tokens / n,
            "cost": cost / n,
            "review_share": reviews.get(version, 0) / n,
        }
        for version, n, tokens, cost in rows
    }


def test_simulated_clock_moves_only_when_told() -> None:
    clock = SimulatedClock(START, step_s=0.001)
    first, second = clock(), clock()
    assert second - first == 1_000_000  # one step per reading
    clock.advance(2.5)
    assert clock() - second == 2_501_000_000
    clock.jump_to(START)  # never backwards
    assert clock.now > START
    clock.jump_to(START + timedelta(hours=3))
    assert clock.now == START + timedelta(hours=3)


def test_arrivals_cover_the_window_at_the_requested_rate() -> None:
    scenario = Scenario(start=START, hours=10, requests_per_hour=30, seed=3)
    times = arrival_times(scenario)
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + timedelta(hours=10)
    assert 270 <= len(times) <= 330  # 30/h ± 10 % per hour
    for hour in range(10):
        in_hour = [t for t in times if START + timedelta(hours=hour) <= t < START + timedelta(hours=hour + 1)]
        assert 27 <= len(in_hour) <= 33
    assert arrival_times(scenario) == times  # a seed replays the same day


def test_case_study_v2_doubles_tokens_and_cost_and_escalates_more(db_url: str) -> None:
    scenario = Scenario(start=START, hours=8, requests_per_hour=40, switch_at_hour=4, seed=11)
    result = simulate(db_url, scenario)
    assert result.switch == START + timedelta(hours=4)
    assert result.requests == sum(result.by_version.values()) == len(arrival_times(scenario))
    (traces,) = sql(db_url, "select count(*) from spans where parent_span_id is null")[0]
    assert traces == result.requests
    # every span carries simulated time: inside the day, v1 before the switch and v2 after
    (lo, hi) = sql(db_url, "select min(start_time), max(end_time) from spans")[0]
    lo, hi = (datetime.fromisoformat(str(v)).replace(tzinfo=timezone.utc) for v in (lo, hi))
    assert lo >= START and hi <= START + timedelta(hours=8, minutes=5)
    v1_last = sql(db_url, "select max(start_time) from spans where prompt_version = 'v1'")[0][0]
    v2_first = sql(db_url, "select min(start_time) from spans where prompt_version = 'v2'")[0][0]
    assert str(v1_last) < str(v2_first)
    # LLM spans take simulated time that grows with the answer
    (llm_ms,) = sql(db_url, "select avg(latency_ms) from spans where kind = 'llm'")[0]
    assert 300 < llm_ms < 6000
    # the answers stream: every LangChain LLM call has a time to first token shorter than the call
    bad_ttft = sql(
        db_url,
        "select count(*) from spans where kind = 'llm' and framework = 'langchain'"
        " and (ttft_ms is null or ttft_ms >= latency_ms)",
    )
    assert bad_ttft[0][0] == 0
    stats = _per_version(db_url)
    assert stats["v1"]["requests"] == result.by_version["v1"]
    ratio_tokens = stats["v2"]["tokens"] / stats["v1"]["tokens"]
    ratio_cost = stats["v2"]["cost"] / stats["v1"]["cost"]
    assert 1.8 < ratio_tokens < 2.6, ratio_tokens
    assert 2.0 < ratio_cost < 2.9, ratio_cost
    assert 0.04 < stats["v1"]["review_share"] < 0.17
    assert 0.17 < stats["v2"]["review_share"] < 0.36
    # the users' feedback arrives as scores on their traces, at simulated times
    feedback = sql(db_url, "select count(*), min(created_at) from scores where source = 'user'")[0]
    assert feedback[0] > 0 and str(feedback[1]) >= str(START.replace(tzinfo=None))
    unknown = sql(db_url, "select count(*) from scores where label = 'unknown_trace'")[0][0]
    assert unknown == 0


def test_control_run_v2_behaves_like_v1(sqlite_url: str) -> None:
    scenario = Scenario(
        start=START, hours=8, requests_per_hour=40, switch_at_hour=4, v2_regresses=False, seed=11
    )
    simulate(sqlite_url, scenario)
    stats = _per_version(sqlite_url)
    assert 0.8 < stats["v2"]["tokens"] / stats["v1"]["tokens"] < 1.25
    assert 0.8 < stats["v2"]["cost"] / stats["v1"]["cost"] < 1.25
    assert abs(stats["v2"]["review_share"] - stats["v1"]["review_share"]) < 0.08


def test_no_switch_is_all_v1(sqlite_url: str) -> None:
    result = simulate(sqlite_url, Scenario(start=START, hours=2, requests_per_hour=20, switch_at_hour=None))
    assert result.switch is None and set(result.by_version) == {"v1"}
    assert sql(sqlite_url, "select distinct prompt_version from spans where prompt_version is not null") == [
        ("v1",)
    ]


@pytest.mark.parametrize("flag", [[], ["--control"]])
def test_cli_demo_prints_report_and_comparison(sqlite_url: str, capsys, flag: list[str]) -> None:
    from llmobs_callbacks.cli import main

    argv = ["demo", "--database-url", sqlite_url, "--hours", "3", "--requests-per-hour", "20"]
    assert main([*argv, "--switch-at-hour", "2", "--no-progress", *flag]) == 0
    out = capsys.readouterr().out
    assert ("control: behaves like v1" in out) == bool(flag)
    assert "v1 → v2" in out
    change = next(line for line in out.splitlines() if line.startswith("cost / request"))
    pct = int(change.split()[-1].rstrip("%"))
    assert (pct > 80) if not flag else (abs(pct) < 30)
