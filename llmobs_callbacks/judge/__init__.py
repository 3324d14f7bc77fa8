"""Quality: sampled LLM-as-judge, rule scores (see ``llmobs_callbacks.scores`` for feedback)."""

from .budget import DEFAULT_UNPRICED_CALLS_PER_DAY, DailyBudget, JudgeBudget
from .evaluator import Evaluation, Judge, JudgeTask, score_id
from .rubric import BUILTIN_METRICS, Judgement, JudgeOutputError, Metric, MetricScore, Rubric, parse_judgement
from .rules import RuleScore, rule_scores
from .sampler import Sampler, sample_fraction

__all__ = [
    "BUILTIN_METRICS",
    "DEFAULT_UNPRICED_CALLS_PER_DAY",
    "DailyBudget",
    "Evaluation",
    "Judge",
    "JudgeBudget",
    "JudgeOutputError",
    "JudgeTask",
    "Judgement",
    "Metric",
    "MetricScore",
    "Rubric",
    "RuleScore",
    "Sampler",
    "parse_judgement",
    "rule_scores",
    "sample_fraction",
    "score_id",
]
