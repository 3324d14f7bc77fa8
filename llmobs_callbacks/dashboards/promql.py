"""What the dashboard and the alert rules share: their thresholds and PromQL building blocks."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..judge.rubric import BUILTIN_METRICS

# The judge's built-in metrics scored on a 1-5 scale; every other score (hallucination, rule
# scores such as empty_answer / refusal / grounded, thumbs feedback) is a 0-1 flag or rate.
RATING_METRICS = tuple(name for name, metric in BUILTIN_METRICS.items() if metric.kind == "scale")

# The le="0" bucket of the documents histogram, as Prometheus 2 ("0.0") and 3 ("0") store it.
EMPTY_BUCKET = 'le=~"0|0.0"'
ERROR = 'status="error"'
IN_OUT = 'type=~"input|output"'
HALLUCINATION = 'metric="hallucination"'
FAITHFULNESS = 'metric="faithfulness"'


@dataclass(frozen=True)
class Thresholds:
    """Limits used by the alert rules (and drawn as thresholds on the dashboard)."""

    p99_latency_s: float = 10.0
    error_rate: float = 0.02
    hourly_cost_budget_usd: float = 10.0
    cost_spike_factor: float = 2.0  # hourly cost > factor × its 24 h average
    token_increase: float = 0.5  # average tokens per request +50 % over the 24 h baseline
    branch_shift: float = 0.20  # a branch's share moves by 20 percentage points
    branch_min_decisions: int = 20  # per hour and (graph, from_node), before the share counts
    tool_failure_rate: float = 0.10
    hallucination_rate: float = 0.05  # hallucination scores are 0/1, 1 = hallucinated
    min_faithfulness: float = 3.5  # faithfulness scores on a 1-5 scale
    # Minimum traffic of every rate-based rule: a rate counts only with at least this many
    # events in the rule's window and group (LLM calls per model, tool calls per tool, scores
    # per prompt version), so one failed call in a quiet 5 minutes pages nobody.
    min_requests: int = 20
    pending: str = "10m"  # how long a condition must hold before the alert fires
    selector: str = ""  # extra label matchers for every metric, e.g. 'job="support-bot"'
    extra_labels: dict[str, str] = field(default_factory=dict)  # added to every alert
    # Quality metrics drawn on the 1-5 ratings panel; all others go to the 0-1 panel.
    rating_metrics: tuple[str, ...] = RATING_METRICS


def series(metric: str, *matchers: str) -> str:
    """``metric{matchers}`` (empty matchers left out)."""
    parts = [x for x in matchers if x]
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def branch_share(selected: str, window: str, fn: str = "rate", sep: str = " ") -> str:
    """Each routing branch's share of its (graph, from_node)'s decisions: 1 per node, per graph."""
    return (
        f"sum by (graph, from_node, to_node) ({fn}({selected}[{window}])){sep}"
        f"/ ignoring (to_node) group_left{sep}"
        f"sum by (graph, from_node) ({fn}({selected}[{window}]))"
    )


def one_of(values: tuple[str, ...] | list[str]) -> str:
    """A PromQL regex matching exactly ``values``."""
    return "|".join(_regex_escape(v) for v in values)


def _regex_escape(value: str) -> str:
    # RE2 metacharacters; a backslash in the PromQL string literal is itself escaped.
    out = "".join("\\" + c if c in r".+*?()|[]{}^$\\" else c for c in value)
    return out.replace("\\", "\\\\").replace('"', '\\"')


def fmt(value: float) -> str:
    return f"{value:g}"


def pct(value: float) -> str:
    return f"{value * 100:g} %"
