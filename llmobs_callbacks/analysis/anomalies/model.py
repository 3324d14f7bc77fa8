"""The anomaly record, the types and severities, and the detectors' thresholds."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    pass


SEVERITIES = ("info", "warning", "critical")
TYPES = (
    "token_spike",
    "cost_spike",
    "latency_spike",
    "error_rate",
    "tool_failure",
    "retrieval_empty",
    "branch_shift",
    "quality_drop",
    "new_prompt_version",
    "prompt_drift",
)
MISSING_GROUP = ""  # internal stand-in for a missing prompt version / model (pandas groups drop NaN)


@dataclass(frozen=True)
class AnomalyThresholds:
    """Thresholds of the anomaly detectors. Rule thresholds default to the seed's (the same as
    ``dashboards.Thresholds`` for the Prometheus alert rules); change any with ``replace()`` or
    keyword arguments, e.g. ``AnomalyThresholds(token_spike_factor=2.0)``."""

    # -- rules (each also needs p < rule_alpha) --
    token_spike_factor: float = 1.5  # mean tokens per request ≥ 1.5 × the reference's
    cost_spike_factor: float = 2.0  # the window's cost ≥ 2 × the baseline's mean per window
    cost_per_request_factor: float = 1.5  # a version's cost per request ≥ 1.5 × the reference's
    latency_spike_factor: float = 1.5  # p95 (and p99) latency ≥ 1.5 × the reference's
    error_rate: float = 0.02  # share of failed requests above 2 % …
    error_rate_factor: float = 3.0  # … or ≥ 3 × the reference's rate
    tool_failure_rate: float = 0.10  # share of failed calls of a tool
    tool_failure_factor: float = 3.0
    retrieval_empty_rate: float = 0.10  # share of retrievals that returned no document
    retrieval_empty_factor: float = 3.0
    branch_shift: float = 0.20  # a route's share of its node's decisions moves 20 points
    quality_drop: float = 0.10  # a score's mean falls by 10 % of the reference's mean
    hallucination_rate: float = 0.05  # share of judged traces flagged as hallucinated
    rule_alpha: float = 1e-3  # significance a rule's finding needs (one-sided tests)
    # -- statistics --
    z_threshold: float = 4.0  # robust z-score against the baseline's per-window buckets
    min_increase: float = 0.25  # and at least +25 % over the buckets' median (tokens, cost, latency)
    alpha: float = 1e-4  # exact tests of rates and shares (Bonferroni over a node's routes)
    branch_min_shift: float = 0.05  # a significant route shift must still move ≥ 5 points
    # -- minimum sample sizes: quiet hours page nobody --
    min_requests: int = 10  # requests (or tool calls, retrievals) in the current sample and reference
    min_requests_p99: int = 100  # p99 is only compared with this many requests on each side
    min_decisions: int = 20  # routing decisions of a graph node
    min_scores: int = 10  # scores of a metric
    min_baseline_buckets: int = 6  # baseline buckets with data before a robust z-score is used
    settle_fraction: float = 0.5  # a version serving since the first half of the baseline is established

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Anomaly:
    """One finding. ``current`` / ``baseline`` are in the unit of ``metric``; ``change`` is their
    ratio for ``change_unit == "x"`` and their difference for ``"pts"`` (rates and shares, in
    percentage points) and ``"delta"`` (score means)."""

    type: str
    severity: str
    metric: str
    current: float | None
    baseline: float | None
    change: float | None
    change_unit: str
    explanation: str
    prompt_version: str | None = None
    model: str | None = None
    tool: str | None = None
    graph: str | None = None
    route: str | None = None
    detector: str = "rule"  # "rule", "statistical" or "rule+statistical"
    samples: int = 0
    baseline_samples: int = 0
    p_value: float | None = None
    z: float | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str | None, ...]:
        """The anomaly's identity: its type and group (and, for quality, the score's metric; for
        a prompt drift, the prompt and its new template)."""
        metric = self.metric if self.type in ("quality_drop", "prompt_drift") else None
        return (self.type, self.prompt_version, self.model, self.tool, self.graph, self.route, metric)

    @property
    def fingerprint(self) -> str:
        """``key`` as text: what makes two findings "the same anomaly" (alert de-duplication)."""
        return "|".join("" if p is None else str(p) for p in self.key)

    @property
    def group(self) -> str:
        """The group as text: ``prompt_version=v2 model=gpt-4o-mini`` (empty for all traffic)."""
        pairs = [
            ("prompt_version", self.prompt_version),
            ("model", self.model),
            ("tool", self.tool),
            ("graph", self.graph),
            ("route", self.route),
        ]
        return " ".join(f"{k}={v}" for k, v in pairs if v is not None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO text, no NaN."""
        out = asdict(self)
        out["fingerprint"] = self.fingerprint
        return _json_safe(out)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def with_thresholds(base: AnomalyThresholds | None = None, **changes: Any) -> AnomalyThresholds:
    """``base`` (default thresholds) with ``changes`` applied; unknown names raise ``TypeError``."""
    return replace(base or AnomalyThresholds(), **changes)
