"""Release gate (``llmobs gate`` / ``TraceStore.gate``): requests written through the real
LangChain handler (and, for the seeded study, straight rows of realistic shape) into SQLite and
PostgreSQL, the gate run through its CLI and its Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from anomaly_support import T0, Clock, Request, Traffic, noisy
from conftest import sql
from gate_support import Requests, write
from langchain_core.runnables import RunnableLambda
from lc_fakes import UsageFakeChatModel, ai

from llmobs_callbacks import LLMObs
from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.analysis.gate import (
    GateCriteria,
    GateInputError,
    QualityLimit,
    parse_fraction,
    parse_quality_limit,
    run_gate,
)
from llmobs_callbacks.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def traffic(db_url: str) -> Iterator[Traffic]:
    clock = Clock(T0)
    obs = LLMObs(db_url, prometheus_registry=None, clock=clock)
    t = Traffic(obs, clock)
    t.url = db_url  # type: ignore[attr-defined]
    yield t
    obs.shutdown()


class App:
    """A traced bot: one RunnableLambda calling a fake chat model that reports the usage it is
    told, under the version (and input id) given in the run's metadata."""

    def __init__(self, url: str, model: str = "gpt-4o-mini", provider: str = "openai") -> None:
        self.url = url
        self.obs = LLMObs(url, prometheus_registry=None, clock=Clock(T0))
        self._usage: tuple[int, int] = (0, 0)

        def messages() -> Iterator[Any]:
            while True:
                yield ai("an answer", *self._usage, model_name=model)

        llm = UsageFakeChatModel(messages=messages(), model_name=model, provider=provider)
        self.chain = RunnableLambda(lambda q: str(llm.invoke(q["question"]).content)).with_config(
            run_name="support"
        )

    def ask(self, version: str, question: str, tokens: tuple[int, int], input_id: str | None = None) -> str:
        self._usage = tokens
        run_id = uuid.uuid4()
        metadata = {"prompt_name": "support", "prompt_version": version}
        if input_id is not None:
            metadata["input_id"] = input_id
        self.chain.invoke(
            {"question": question},
            config={"callbacks": [self.obs.langchain_handler()], "run_id": run_id, "metadata": metadata},
        )
        return str(run_id)

    def close(self) -> None:
        assert self.obs.flush()
        self.obs.shutdown()


def _gate(t: Traffic, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    assert t.obs.flush()
    code = main(["gate", "--database-url", t.url, *args])  # type: ignore[attr-defined]
    return code, capsys.readouterr().out


def _cli(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["gate", "--database-url", url, *args])
    return code, capsys.readouterr().out


COLUMNS = ("criterion", "baseline", "candidate", "change", "95% CI", "p", "limit", "result")


def _row(table: str, criterion: str) -> dict[str, str]:
    """The cells of a criterion's row, by column (cut where the header's columns start)."""
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("criterion "))
    starts = [header.index(name) for name in COLUMNS]
    for line in lines:
        if line.startswith(criterion + " ") or line == criterion:
            ends = [*starts[1:], None]
            return {n: line[a:b].strip() for n, a, b in zip(COLUMNS, starts, ends, strict=True)}
    raise AssertionError(f"no row {criterion!r} in\n{table}")


def _result_line(table: str) -> str:
    return next(line for line in table.splitlines() if line.startswith("result: "))


# -- behaviour kept from the point-estimate gate ---------------------------------------------------


def test_same_behaviour_passes(traffic: Traffic, capsys) -> None:
    traffic.hours(T0, 2, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=2), 2, 20, noisy("v2"), seed=2)
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v2")
    assert code == 0, out
    assert _result_line(out).startswith("result: PASS: no criterion significantly worse")
    assert "unpaired" in out.splitlines()[0]
    assert [_row(out, "requests")[k] for k in ("baseline", "candidate")] == ["40", "40"]
    for criterion in ("cost per request", "p95 latency", "tokens per request", "error rate"):
        assert _row(out, criterion)["result"] == "pass"
    assert _row(out, "tokens per request")["limit"] == "<= +50%"  # a default criterion now
    assert _row(out, "quality")["result"] == "n/a"  # no scores stored: not checked


def test_costlier_candidate_fails_with_exit_1(traffic: Traffic, capsys) -> None:
    traffic.hours(T0, 2, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=2), 2, 20, noisy("v2", scale=2.0), seed=2)
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v2", "--json")
    assert code == 1
    result = json.loads(out)
    rows = {r["criterion"]: r for r in result["criteria"]}
    cost = rows["cost per request"]
    assert cost["status"] == "FAIL" and cost["significant"] is True
    # The figures are the store's: mean cost of each version's requests.
    (base,), (cand,) = (
        sql(traffic.url, "select avg(cost_usd) from spans where kind='llm' and prompt_version=:v", v=v)  # type: ignore[attr-defined]
        for v in ("v1", "v2")
    )
    assert cost["baseline"] == pytest.approx(base[0])
    assert cost["candidate"] == pytest.approx(cand[0])
    assert cost["change"] == pytest.approx(cand[0] / base[0] - 1)
    # The test behind it: a family-wise p-value and a bootstrap interval around the change.
    assert 0 < cost["p_value"] < result["alpha"] == 0.01 and cost["p_raw"] <= cost["p_value"]
    assert cost["ci_low"] < cost["change"] < cost["ci_high"] and cost["ci_low"] > 0.2
    assert cost["change_kind"] == "relative" and cost["direction"] == "worse"
    assert rows["tokens per request"]["status"] == "FAIL"  # twice the tokens, limit +50 %
    assert rows["error rate"]["status"] == "pass"
    assert result["verdict"] == "FAIL" and result["exit_code"] == 1 and result["paired"] is False
    assert result["summary"] == (
        "FAIL: significantly worse and not shown within the limit: cost per request, tokens per request "
        "(family-wise alpha 0.01)"
    )
    # Looser limits let the same candidate through; its interval is then within them.
    code, out = _gate(
        traffic, capsys, "--baseline", "v1", "--candidate", "v2",
        "--max-cost-increase", "150%", "--max-token-increase", "150%",
    )  # fmt: skip
    assert code == 0, out
    assert "worse but within the limit: cost per request" in _result_line(out)


def test_too_little_data_exits_2(traffic: Traffic, capsys) -> None:
    traffic.hours(T0, 2, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=2), 1, 10, noisy("v2", scale=3.0), seed=2)
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v2")
    assert code == 2, out
    assert _row(out, "requests")["result"] == "insufficient"
    assert _result_line(out) == (
        "result: INSUFFICIENT DATA: requests: 40 and 10 requests, fewer than 30 on a side"
    )
    code, out = _gate(traffic, capsys, "--baseline", "v1", "--candidate", "v2", "--min-samples", "10")
    assert code == 1, out  # enough for a lower minimum: the 3× cost is a significant regression


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
    assert errors["result"] == "FAIL"
    url: str = traffic.url  # type: ignore[attr-defined]
    failed = sql(url, "select count(*) from spans where parent_span_id is null and status='error'")[0][0]
    assert errors["candidate"] == f"{failed / 40 * 100:.2f}%" and errors["baseline"] == "0.00%"
    # relative by default: half the feedback lost is -50 % of the baseline's mean, worse
    quality = _row(out, "quality: user_feedback")
    assert [quality[k] for k in ("baseline", "candidate", "change", "limit", "result")] == [
        "1.000", "0.500", "-50.0% (worse)", ">= -10%", "FAIL"
    ]  # fmt: skip
    assert "cost per request" not in out  # switched off
    # The Python API gives the same verdict.
    with TraceStore(url) as ts:
        result = ts.gate("v1", "v2", GateCriteria(max_cost_increase=None))
    assert result.exit_code == 1
    assert {r.criterion for r in result.regressions} == {"error rate", "quality: user_feedback"}


def test_by_model(db_url: str, capsys) -> None:
    # two apps on two models (the model asked for is the grouping key), the same prompt version
    rng = np.random.default_rng(6)
    for model in ("gpt-4o-mini", "gpt-4o"):
        app = App(db_url, model=model)
        for i in range(40):
            app.ask("v1", f"question {i}", (int(rng.uniform(85, 115)), int(rng.uniform(17, 23))))
        app.close()
    code, out = _cli(db_url, capsys, "--by", "model", "--baseline", "gpt-4o-mini", "--candidate", "gpt-4o")
    assert code == 1, out
    assert "release gate (model, unpaired)" in out
    assert _row(out, "cost per request")["result"] == "FAIL"  # gpt-4o's price is ~16× gpt-4o-mini's
    assert _row(out, "tokens per request")["result"] == "pass"  # same tokens
    code, out = _cli(db_url, capsys, "--by", "model", "--baseline", "gpt-4o", "--candidate", "gpt-4o-mini")
    assert code == 0, out


# -- the statistics, measured over seeded runs -----------------------------------------------------

# Shapes of realistic traffic, one per run in turn: (latency lognormal sigma, tokens/cost shape).
SHAPES = [(0.3, ("gamma", 5.0)), (0.5, ("gamma", 3.0)), (0.6, ("lognormal", 0.5)), (0.4, ("normal", 0.25))]


def _study_side(rng: np.random.Generator, version: str, n: int, shape: int, **change: float) -> Requests:
    sigma, (kind, p) = SHAPES[shape]
    if kind == "gamma":
        tokens = rng.gamma(p, 1200 / p, n)
    elif kind == "lognormal":
        tokens = rng.lognormal(np.log(1200), p, n)
    else:
        tokens = rng.normal(1200, p * 1200, n)
    tokens = np.maximum(np.round(tokens), 1)
    latency = rng.lognormal(np.log(1500), sigma, n) * change.get("latency", 1.0)
    cost = tokens * 2e-6 * change.get("cost", 1.0)  # a dearer model: same tokens, +50 % price
    return Requests(version, latency, tokens, cost_usd=cost, errors=rng.random(n) < 0.01)


def test_false_alarms_and_detection_over_seeded_runs(sqlite_url: str) -> None:
    """40 seeded runs per case, through ``run_gate`` on a real store: identical distributions at
    30 vs 30 requests fail at most 1 run; a real +50 % cost or p95 latency at 100 vs 100 fails
    at least 39. (The figures of a larger study are in the README.)"""
    runs, cases, sides = 40, ("same", "costly", "slow"), []
    for r in range(runs):  # each run in its own hour of the store, each case in its own 10 minutes
        rng, shape = np.random.default_rng([2025, r]), r % len(SHAPES)
        for i, (n, change) in enumerate(((30, {}), (100, {"cost": 1.5}), (100, {"latency": 1.5}))):
            a, b = _study_side(rng, "a", n, shape), _study_side(rng, "b", n, shape, **change)
            a.start = T0 + timedelta(hours=r, minutes=10 * i)
            sides += [a, b]
    write(sqlite_url, *sides)
    false_alarms, caught = [], {"costly": 0, "slow": 0}
    with TraceStore(sqlite_url) as ts:
        for r in range(runs):
            for i, case in enumerate(cases):
                since = T0 + timedelta(hours=r, minutes=10 * i)
                result = run_gate(ts, "a", "b", since=since, until=since + timedelta(minutes=10))
                failed = [row.criterion for row in result.regressions]
                if case == "same":
                    assert result.baseline_requests == result.candidate_requests == 30
                    if failed:
                        false_alarms.append((r, failed))
                else:
                    assert result.baseline_requests == result.candidate_requests == 100
                    caught[case] += failed == ["cost per request" if case == "costly" else "p95 latency"]
    assert len(false_alarms) <= 1, false_alarms
    assert caught["costly"] >= 39 and caught["slow"] >= 39, caught


def test_a_gate_run_is_deterministic(sqlite_url: str) -> None:
    rng = np.random.default_rng(5)
    write(sqlite_url, _study_side(rng, "v1", 50, 1), _study_side(rng, "v2", 50, 1, latency=1.2))
    with TraceStore(sqlite_url) as ts:
        first, again = (run_gate(ts, "v1", "v2").as_dict() for _ in range(2))
        other_seed = run_gate(ts, "v1", "v2", GateCriteria(seed=1)).as_dict()
    assert first == again
    latency = [next(r for r in d["criteria"] if r["criterion"] == "p95 latency") for d in (first, other_seed)]
    assert latency[0]["change"] == latency[1]["change"]  # the estimate does not depend on the seed
    assert latency[0]["ci_low"] != latency[1]["ci_low"]  # the resamples do


# -- cost unknown: tokens decide -------------------------------------------------------------------


def test_doubled_tokens_with_an_unpriced_model_does_not_pass(db_url: str, capsys) -> None:
    """A prompt update that doubles tokens per request, on a model genai-prices cannot price:
    cost is n/a (the row names the model) and tokens per request fails the gate."""
    app = App(db_url, model="acme-chat-7b", provider="acme")
    rng = np.random.default_rng(3)
    for version, factor in (("v1", 1), ("v2", 2)):
        for i in range(40):
            app.ask(
                version,
                f"question {i}",
                (int(rng.uniform(85, 115)) * factor, int(rng.uniform(17, 23)) * factor),
            )
    app.close()
    assert sql(db_url, "select count(*) from spans where kind='llm' and cost_usd is null")[0][0] == 80
    code, out = _cli(db_url, capsys, "--baseline", "v1", "--candidate", "v2")
    assert code == 1, out
    cost = _row(out, "cost per request")
    assert (cost["baseline"], cost["candidate"], cost["result"]) == ("-", "-", "n/a")
    assert _row(out, "tokens per request")["result"] == "FAIL"
    assert (
        "cost per request: unknown: baseline: 40 of 40 requests have calls of unpriced model(s) "
        "'acme-chat-7b'; candidate: 40 of 40 requests have calls of unpriced model(s) 'acme-chat-7b'; "
        "tokens per request decides"
    ) in out
    summary = _result_line(out)
    assert summary.startswith("result: FAIL: significantly worse and not shown within the limit: tokens per")
    assert "; cost unknown (unpriced model 'acme-chat-7b'), so tokens per request decided (+" in summary
    assert summary.endswith("%, FAIL)")
    # The same versions with tokens per request switched off: spend is unchecked, not a pass.
    code, out = _cli(db_url, capsys, "--baseline", "v1", "--candidate", "v2", "--max-token-increase", "off")
    assert code == 2, out
    assert _row(out, "cost per request")["result"] == "insufficient"
    assert "tokens per request is off: spend is unchecked" in _result_line(out)


def test_unpriced_cost_with_unchanged_tokens_passes_and_says_tokens_decided(sqlite_url: str) -> None:
    app = App(sqlite_url, model="acme-chat-7b", provider="acme")
    for version in ("v1", "v2"):
        for i in range(30):
            app.ask(version, f"question {i}", (100 + i % 7, 20))
    app.close()
    with TraceStore(sqlite_url) as ts:
        result = run_gate(ts, "v1", "v2")
    assert result.exit_code == 0
    assert result.summary.startswith("PASS: no criterion significantly worse")
    assert result.summary.endswith(
        "; cost unknown (unpriced model 'acme-chat-7b'), so tokens per request decided (+0.0%, pass)"
    )
    assert result.unpriced_models == ["acme-chat-7b"] and result.rows[1].status == "n/a"
    assert result.as_dict()["cost_unknown"].startswith("baseline: 30 of 30")


# -- bad input -------------------------------------------------------------------------------------


def test_a_version_with_no_requests_is_one_line_and_exit_2(db_url: str) -> None:
    rng = np.random.default_rng(1)
    write(db_url, _study_side(rng, "v1", 5, 0), _study_side(rng, "v2", 5, 0))
    with TraceStore(db_url) as ts, pytest.raises(GateInputError) as caught:
        run_gate(ts, "v1", "v3")
    assert str(caught.value) == "no requests for prompt_version 'v3'; known: v1, v2"
    # the real command line, in its own process
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "llmobs_callbacks.cli", "gate", "--database-url", db_url,
         "--baseline", "v1", "--candidate", "v3"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "llmobs gate: no requests for prompt_version 'v3'; known: v1, v2\n"
    assert done.stdout == ""


def test_bad_limits_are_one_line_and_exit_2(sqlite_url: str, capsys) -> None:
    rng = np.random.default_rng(1)
    write(sqlite_url, _study_side(rng, "v1", 5, 0), _study_side(rng, "v2", 5, 0))
    for args, message in (
        (["--max-cost-increase", "lots"], "--max-cost-increase 'lots': expected a fraction"),
        (["--quality-limit", "faithfulness=much"], "bad quality limit 'faithfulness=much'"),
        (["--baseline", "v0"], "no requests for prompt_version 'v0'; known: v1, v2"),
    ):
        code = main(["gate", "--database-url", sqlite_url, "--baseline", "v1", "--candidate", "v2", *args])
        captured = capsys.readouterr()
        assert code == 2 and captured.out == ""
        assert captured.err.startswith(f"llmobs gate: {message}") and captured.err.count("\n") == 1


def test_parse_fraction_and_quality_limits() -> None:
    assert parse_fraction("20%") == pytest.approx(0.2)
    assert parse_fraction("0.02") == pytest.approx(0.02)
    assert parse_fraction("-0.2") == pytest.approx(-0.2)
    with pytest.raises(ValueError):
        parse_fraction("lots")
    assert parse_quality_limit("faithfulness=-10%") == ("faithfulness", QualityLimit(0.10, relative=True))
    assert parse_quality_limit("hallucination=0.05") == ("hallucination", QualityLimit(0.05, relative=False))
    assert parse_quality_limit("15%") == (None, QualityLimit(0.15))
    assert parse_quality_limit("relevance=off") == ("relevance", None)
    assert QualityLimit(0.1).describe(lower_is_better=False) == ">= -10%"
    assert QualityLimit(0.05, relative=False).describe(lower_is_better=True) == "<= +0.05"


# -- quality on each score's own scale -------------------------------------------------------------


def test_lower_is_better_sign_and_per_metric_limits(db_url: str, capsys) -> None:
    """Hallucination (a 0/1 flag, lower is better) rises from 5 % to 30 %: its change is +0.250
    and worse; faithfulness (1–5) falls 4.3 → 3.8: −11.6 %, beyond the default −10 % but within
    a −20 % limit given for it alone."""
    rng = np.random.default_rng(11)
    n = 100

    def side(version: str, hallucinated: float, faithful: float) -> Requests:
        faith = np.clip(np.round(rng.normal(faithful, 0.6, n) * 2) / 2, 1, 5)
        flags = (np.arange(n) < hallucinated * n).astype(float)
        rng.shuffle(flags)
        tokens = np.round(rng.normal(1200, 100, n))
        latency = rng.lognormal(np.log(1500), 0.3, n)
        return Requests(version, latency, tokens, scores={"hallucination": flags, "faithfulness": faith})

    write(db_url, side("v1", 0.05, 4.3), side("v2", 0.30, 3.8))
    code, out = _cli(db_url, capsys, "--baseline", "v1", "--candidate", "v2", "--json")
    rows = {r["criterion"]: r for r in json.loads(out)["criteria"]}
    hallucination, faithfulness = rows["quality: hallucination"], rows["quality: faithfulness"]
    assert hallucination["baseline"] == pytest.approx(0.05) and hallucination["candidate"] == pytest.approx(
        0.30
    )
    # relative by default: +500 % of the baseline's 0.05, worse (not a flipped -500 %)
    assert hallucination["change"] == pytest.approx(5.0) and hallucination["direction"] == "worse"
    assert hallucination["limit"] == "<= +10%" and hallucination["status"] == "FAIL"
    assert faithfulness["change"] == pytest.approx(faithfulness["candidate"] / faithfulness["baseline"] - 1)
    assert faithfulness["change"] < -0.10 and faithfulness["direction"] == "worse"
    assert faithfulness["limit"] == ">= -10%" and faithfulness["status"] == "FAIL"
    assert code == 1
    # per-metric limits, each on its own scale: an absolute rise of the flag, a relative fall of 1–5
    code, out = _cli(
        db_url, capsys, "--baseline", "v1", "--candidate", "v2",
        "--quality-limit", "hallucination=0.05", "--quality-limit", "faithfulness=-20%",
    )  # fmt: skip
    row = _row(out, "quality: hallucination")
    assert (row["baseline"], row["candidate"], row["change"]) == ("0.050", "0.300", "+0.250 (worse)")
    assert (row["limit"], row["result"]) == ("<= +0.05", "FAIL")
    faith = _row(out, "quality: faithfulness")
    assert (faith["limit"], faith["result"]) == (">= -20%", "pass") and faith["change"].endswith("(worse)")
    assert code == 1
    # The better direction, with the sign as it is: v2 as baseline, v1 as candidate.
    code, out = _cli(
        db_url, capsys, "--baseline", "v2", "--candidate", "v1", "--quality-limit", "hallucination=0.05"
    )
    assert _row(out, "quality: hallucination")["change"] == "-0.250 (better)"
    assert _row(out, "quality: faithfulness")["change"].endswith("(better)")
    assert code == 0, out


# -- paired mode -----------------------------------------------------------------------------------


def test_paired_mode_catches_what_unpaired_misses(db_url: str, capsys) -> None:
    """An eval set of 30 questions of very different sizes, through v1 and v2 with the input id in
    the run's metadata: v2 spends 40 % more tokens on every question. Unpaired, the spread
    between questions hides it; paired per question it is certain."""
    app = App(db_url)
    rng = np.random.default_rng(8)
    sizes = rng.lognormal(np.log(800), 1.0, 30)
    for version, factor in (("v1", 1.0), ("v2", 1.4)):
        for i, size in enumerate(sizes):
            tokens = int(size * factor * rng.uniform(0.97, 1.03))
            app.ask(version, f"question {i}", (tokens, 50), input_id=f"case-{i}")
    app.ask("v1", "a question v2 never saw", (500, 50), input_id="case-extra")
    app.close()
    code, out = _cli(db_url, capsys, "--baseline", "v1", "--candidate", "v2", "--pair-by", "off")
    assert code == 0, out
    assert _row(out, "cost per request")["result"] == "pass"
    code, out = _cli(db_url, capsys, "--baseline", "v1", "--candidate", "v2")  # auto: every request has an id
    assert code == 1, out
    assert out.splitlines()[0].startswith("release gate (prompt_version, paired on 30 inputs by input_id)")
    assert [_row(out, "requests")[k] for k in ("baseline", "candidate")] == ["31", "30"]
    cost = _row(out, "cost per request")
    assert cost["result"] == "FAIL" and cost["p"] == "<0.001"
    assert "paired on 30 inputs; unmatched requests left out: 1 of v1 and 0 of v2" in out
    result = json.loads(_cli(db_url, capsys, "--baseline", "v1", "--candidate", "v2", "--json")[1])
    assert result["paired"] is True and result["pairs"] == 30 and result["paired_by"] == "input_id"
    assert result["unmatched"] == {"baseline": 1, "candidate": 0}
    # By a hash of the root's input text instead of an id: the same pairs.
    code, out = _cli(db_url, capsys, "--baseline", "v1", "--candidate", "v2", "--pair-by", "input")
    assert code == 1 and "paired on 30 inputs by input text" in out.splitlines()[0]


def test_paired_by_id_needs_ids(sqlite_url: str, capsys) -> None:
    rng = np.random.default_rng(2)
    write(sqlite_url, _study_side(rng, "v1", 30, 0), _study_side(rng, "v2", 30, 0))
    code, out = _cli(sqlite_url, capsys, "--baseline", "v1", "--candidate", "v2")
    assert code == 0 and "unpaired" in out.splitlines()[0]  # auto: no input ids, unpaired
    code, out = _cli(sqlite_url, capsys, "--baseline", "v1", "--candidate", "v2", "--pair-by", "id")
    assert code == 2 and _row(out, "requests")["result"] == "insufficient"
    assert "requests: 0 and 0 pairs, fewer than 30 on a side" in out


def test_internal_traces_are_not_requests(sqlite_url: str) -> None:
    rng = np.random.default_rng(4)
    judge = Requests("v2", [60_000.0] * 10, [5000] * 10, internal=True)  # e.g. judge runs tagged v2
    write(sqlite_url, _study_side(rng, "v1", 30, 0), _study_side(rng, "v2", 30, 0), judge)
    with TraceStore(sqlite_url) as ts:
        result = run_gate(ts, "v1", "v2")
    assert (result.baseline_requests, result.candidate_requests) == (30, 30)
    assert result.exit_code == 0, result.format_table()
