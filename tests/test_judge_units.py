"""Sampler, rubric parser, rules and budget: pure units."""

from __future__ import annotations

import uuid

import pytest

from llmobs_callbacks.judge import (
    DailyBudget,
    JudgeOutputError,
    Metric,
    Rubric,
    Sampler,
    parse_judgement,
    rule_scores,
    sample_fraction,
)
from llmobs_callbacks.judge.rubric import BUILTIN_METRICS

NS = uuid.UUID("12345678-1234-5678-1234-567812345678")
METRICS = [BUILTIN_METRICS[m] for m in ("faithfulness", "relevance", "completeness", "hallucination")]


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid5(NS, str(i))) for i in range(n)]


def test_sampling_rate_and_determinism() -> None:
    ids = _ids(1000)
    first = {t for t in ids if Sampler(0.05).should_sample(t)}
    second = {t for t in ids if Sampler(0.05).should_sample(t)}
    assert 35 <= len(first) <= 65
    assert first == second
    assert all(0.0 <= sample_fraction(t) < 1.0 for t in ids)
    # a trace sampled at 5 % is sampled at every higher rate
    assert first <= {t for t in ids if Sampler(0.2).should_sample(t)}


def test_error_and_new_prompt_oversampling() -> None:
    ids = _ids(1000)
    s = Sampler(0.0, error_sample_rate=0.5)
    errors = [t for t in ids if s.should_sample(t, is_error=True)]
    assert 430 <= len(errors) <= 570
    assert not [t for t in ids if s.should_sample(t, is_error=False)]
    now = [1_000_000.0]
    s = Sampler(0.0, new_prompt_sample_rate=1.0, new_prompt_window_h=1.0, clock=lambda: now[0])
    assert s.should_sample(ids[0], prompt_version="v2")
    now[0] += 3601
    assert not s.should_sample(ids[0], prompt_version="v2")
    assert s.should_sample(ids[0], prompt_version="v3")  # first seen now


@pytest.mark.parametrize(
    "text",
    [
        '{"faithfulness": 4, "relevance": 5, "completeness": 3, "hallucination": "no", "reason": "ok"}',
        '```json\n{"faithfulness": "4", "relevance": "5/5", "completeness": 3.0, "hallucination": false,'
        ' "reason": "ok"}\n```',
        'Here is my verdict:\n{"Faithfulness": {"score": 4}, "relevance": 5, "completeness": "3",'
        ' "hallucination": "No", "reason": "ok"} Hope it helps.',
        '{"scores": {"faithfulness": 4, "relevance": 5, "completeness": 3, "hallucination": 0},'
        ' "reason": "ok"}',
    ],
)
def test_parser_accepts_usual_deviations(text: str) -> None:
    judgement = parse_judgement(text, METRICS)
    assert [(s.name, s.value, s.label) for s in judgement.scores] == [
        ("faithfulness", 4.0, None),
        ("relevance", 5.0, None),
        ("completeness", 3.0, None),
        ("hallucination", 0.0, "no"),
    ]
    assert judgement.reason == "ok"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The answer looks good, 4/5.",
        '{"faithfulness": 4, "relevance": 5, "completeness": 3}',  # missing hallucination
        '{"faithfulness": 9, "relevance": 5, "completeness": 3, "hallucination": "no"}',  # out of scale
        '{"faithfulness": "good", "relevance": 5, "completeness": 3, "hallucination": "no"}',
        '{"faithfulness": 4, "relevance": 5, "completeness": 3, "hallucination": "maybe"}',
        '{"faithfulness": true, "relevance": 5, "completeness": 3, "hallucination": "no"}',
        '{"faithfulness": 4, "relevance": 5, "completeness": 3, "hallucination": "no"',  # truncated
    ],
)
def test_parser_rejects_the_rest(text: str) -> None:
    with pytest.raises(JudgeOutputError):
        parse_judgement(text, METRICS)


def test_custom_rubric_and_metric_names() -> None:
    rubric = Rubric.of(
        ["tone", Metric("cites_sources", "Does it cite the context?", kind="boolean", low=0, high=1)],
        template="Q: {question}\nA: {answer}\nC: {context}\n{metrics}\nJSON like {example}",
        name="support-tone",
    )
    prompt = rubric.render("Why?", "Because.", ["doc one"])
    assert prompt.startswith("Q: Why?\nA: Because.\nC: [1] doc one\n")
    assert '"tone": a number from 1 to 5' in prompt and '"cites_sources": "yes" or "no"' in prompt
    judged = rubric.parse('{"tone": 2, "cites_sources": "yes", "reason": "terse"}')
    assert [(s.name, s.value, s.label) for s in judged.scores] == [
        ("tone", 2.0, None),
        ("cites_sources", 1.0, "yes"),
    ]
    assert rubric.id != Rubric.of(["tone"]).id


def test_rule_scores() -> None:
    docs = ["Refunds are processed within 5 business days of the request."]
    grounded = {
        s.name: (s.value, s.label) for s in rule_scores("Refunds are processed within 5 business days.", docs)
    }
    assert grounded == {
        "empty_answer": (0.0, "non_empty"),
        "grounded": (1.0, "grounded"),
        "refusal": (0.0, "answer"),
    }
    off = {s.name: (s.value, s.label) for s in rule_scores("Pizza toppings include olives and basil.", docs)}
    assert off["grounded"] == (0.0, "ungrounded")
    refused = {s.name: s.label for s in rule_scores("I'm sorry, but I can't help with that.", [])}
    assert refused == {"empty_answer": "non_empty", "refusal": "refusal"}  # no documents: no grounding
    assert [(s.name, s.value) for s in rule_scores("   ", docs)] == [("empty_answer", 1.0)]


def test_daily_budget_resets_at_utc_midnight() -> None:
    now = [86400.0 * 100 + 3600]
    budget = DailyBudget(1.0, clock=lambda: now[0])
    budget.add(0.6)
    assert not budget.exhausted()
    budget.add(0.4)
    assert budget.exhausted()
    now[0] += 86400
    assert not budget.exhausted() and budget.spent_today() == 0.0
    assert not DailyBudget(None).exhausted()
