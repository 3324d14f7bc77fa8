"""Release gate: compare a candidate prompt (or model) version with a baseline from the store.

``run_gate(store, baseline="v1", candidate="v2")`` checks each criterion of :class:`GateCriteria`
on the requests (traces) of both versions and returns a :class:`GateResult` whose ``exit_code``
is 0 (every criterion passes), 1 (a regression) or 2 (too little data to decide: fewer than
``min_samples`` requests on either side). ``llmobs gate`` prints its table and exits with it, so a
CI job fails like a failing test when quality or cost regresses.

Definitions are those of ``TraceStore.summary``: a request's cost is the sum over its LLM calls;
latency is the root run's; a request is an error when its root failed; quality is the mean of each
score name (judge, rules, user feedback) given to the version's traces. For score names where
lower is better (``hallucination``, ``empty_answer``, ``refusal``) the delta is reversed, so a
negative delta always means "worse".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .anomalies import LOWER_IS_BETTER

if TYPE_CHECKING:  # pragma: no cover
    from .store import TraceStore

PASS, FAIL, NOT_APPLICABLE, INSUFFICIENT = "pass", "FAIL", "n/a", "insufficient"
GROUPINGS = ("prompt_version", "model")


@dataclass(frozen=True)
class GateCriteria:
    """Limits of the release gate (``None`` switches a criterion off).

    Increases are relative (0.20 = +20 % over the baseline); ``max_error_rate`` is absolute
    (0.02 = 2 % of the candidate's requests); ``min_quality_delta`` is the smallest allowed
    change of each score's mean (candidate − baseline, on the score's own scale: −0.2 allows a
    faithfulness drop from 4.3 to 4.1)."""

    max_cost_increase: float | None = 0.20
    max_latency_p95_increase: float | None = 0.20
    max_error_rate: float | None = 0.02
    min_quality_delta: float | None = -0.2
    max_token_increase: float | None = None
    min_samples: int = 30
    min_scores: int = 1  # scores of a metric on each side before its delta is checked
    require_quality: bool = False  # no comparable scores → insufficient data (exit 2) instead of n/a


@dataclass
class GateRow:
    criterion: str
    baseline: float | None
    candidate: float | None
    change: float | None  # relative (increase criteria) or absolute (error rate, quality)
    limit: str
    status: str  # pass / FAIL / n/a / insufficient
    unit: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


@dataclass
class GateResult:
    by: str
    baseline: str
    candidate: str
    baseline_requests: int
    candidate_requests: int
    rows: list[GateRow] = field(default_factory=list)

    @property
    def regressions(self) -> list[GateRow]:
        return [r for r in self.rows if r.status == FAIL]

    @property
    def insufficient(self) -> list[GateRow]:
        return [r for r in self.rows if r.status == INSUFFICIENT]

    @property
    def exit_code(self) -> int:
        """2 when there is too little data to decide, else 1 on any regression, else 0."""
        if self.insufficient:
            return 2
        return 1 if self.regressions else 0

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    @property
    def verdict(self) -> str:
        if self.insufficient:
            return "INSUFFICIENT DATA"
        return f"FAIL ({len(self.regressions)} regression(s))" if self.regressions else "PASS"

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "baseline_requests": self.baseline_requests,
            "candidate_requests": self.candidate_requests,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "criteria": [r.as_dict() for r in self.rows],
        }

    def format_table(self) -> str:
        """The gate as a text table (what ``llmobs gate`` prints)."""
        head = (
            f"release gate ({self.by}): candidate {self.candidate} ({self.candidate_requests} requests) "
            f"vs baseline {self.baseline} ({self.baseline_requests} requests)"
        )
        table = [("criterion", "baseline", "candidate", "change", "limit", "result")]
        for r in self.rows:
            table.append(
                (
                    r.criterion,
                    _value(r.baseline, r.unit),
                    _value(r.candidate, r.unit),
                    _change(r),
                    r.limit,
                    r.status,
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = [head, ""]
        for row in table:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        lines += ["", f"result: {self.verdict}"]
        return "\n".join(lines)


def _value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "$":
        return f"${value:.6f}"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "%":
        return f"{value * 100:.2f}%"
    if unit == "n":
        return f"{value:.0f}"
    return f"{value:.3f}"


def _change(r: GateRow) -> str:
    if r.change is None or (isinstance(r.change, float) and math.isnan(r.change)):
        return ""
    if r.unit in ("$", "ms") or r.criterion == "tokens per request":
        return f"{r.change * 100:+.1f}%"
    if r.unit == "%":
        return f"{r.change * 100:+.2f} pts"
    return f"{r.change:+.3f}"


def _pct(value: float) -> str:
    return f"{value * 100:g}%"


def run_gate(
    store: TraceStore,
    baseline: str,
    candidate: str,
    criteria: GateCriteria | None = None,
    *,
    by: str = "prompt_version",
    since: Any = None,
    until: Any = None,
) -> GateResult:
    """Compare ``candidate`` with ``baseline`` (values of ``by``: ``prompt_version`` or ``model``)
    over the requests stored between ``since`` and ``until`` (default: all)."""
    c = criteria or GateCriteria()
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of: {', '.join(GROUPINGS)}")
    base, cand = _sides(store, by, baseline, candidate, since, until)
    result = GateResult(by, baseline, candidate, len(base), len(cand))
    rows = result.rows
    enough = len(base) >= c.min_samples and len(cand) >= c.min_samples
    rows.append(
        GateRow(
            "requests",
            float(len(base)),
            float(len(cand)),
            None,
            f">= {c.min_samples}",
            PASS if enough else INSUFFICIENT,
            "n",
        )
    )

    def increase(name: str, b: float | None, k: float | None, limit: float | None, unit: str) -> None:
        if limit is None:
            return
        if b is None or k is None or math.isnan(b) or math.isnan(k) or b <= 0:
            rows.append(GateRow(name, b, k, None, f"<= +{_pct(limit)}", NOT_APPLICABLE, unit))
            return
        change = (k - b) / b
        status = PASS if change <= limit else FAIL
        rows.append(
            GateRow(name, b, k, change, f"<= +{_pct(limit)}", status if enough else INSUFFICIENT, unit)
        )

    def mean(frame: Any, column: str) -> float | None:
        values = frame[column].dropna()
        return float(values.mean()) if len(values) else None

    def p95(frame: Any) -> float | None:
        values = frame["latency_ms"].dropna()
        return float(values.quantile(0.95)) if len(values) else None

    increase("cost per request", mean(base, "cost_usd"), mean(cand, "cost_usd"), c.max_cost_increase, "$")
    increase("p95 latency", p95(base), p95(cand), c.max_latency_p95_increase, "ms")
    if c.max_token_increase is not None:
        increase("tokens per request", mean(base, "tokens"), mean(cand, "tokens"), c.max_token_increase, "")
    if c.max_error_rate is not None:
        b_rate = float((base["status"] == "error").mean()) if len(base) else None
        k_rate = float((cand["status"] == "error").mean()) if len(cand) else None
        status = NOT_APPLICABLE if k_rate is None else (PASS if k_rate <= c.max_error_rate else FAIL)
        rows.append(
            GateRow(
                "error rate",
                b_rate,
                k_rate,
                None if b_rate is None or k_rate is None else k_rate - b_rate,
                f"<= {_pct(c.max_error_rate)}",
                status if enough else INSUFFICIENT,
                "%",
            )
        )
    if c.min_quality_delta is not None:
        _quality_rows(base, cand, c, enough, rows)
    return result


def _sides(
    store: TraceStore, by: str, baseline: str, candidate: str, since: Any, until: Any
) -> tuple[Any, Any]:
    """The requests of each side (``anomalies.requests``: tokens, cost, latency, status, first
    model, prompt version) with ``score_<name>``: the mean of each score name per request."""
    from .anomalies import requests, score_values
    from .times import parse_time

    start = parse_time(since) or datetime(1970, 1, 1, tzinfo=timezone.utc)
    end = parse_time(until) or datetime(9999, 1, 1, tzinfo=timezone.utc)
    frame = requests(store, start, end)
    key = "pv" if by == "prompt_version" else "model"
    frame = frame[frame[key].isin([baseline, candidate])]
    scores = score_values(store, start)
    if len(scores) and len(frame):
        scores = scores[scores["trace_id"].isin(set(frame["trace_id"]))]
        if len(scores):
            means = scores.pivot_table(index="trace_id", columns="name", values="value", aggfunc="mean")
            means.columns = [f"score_{n}" for n in means.columns]
            frame = frame.join(means, on="trace_id")
    return frame[frame[key] == baseline], frame[frame[key] == candidate]


def _quality_rows(base: Any, cand: Any, c: GateCriteria, enough: bool, rows: list[GateRow]) -> None:
    limit = f">= {c.min_quality_delta:+g}"
    names = sorted(
        {col[len("score_") :] for frame in (base, cand) for col in frame.columns if col.startswith("score_")}
    )
    compared = False
    for name in names:
        col = f"score_{name}"
        b = base[col].dropna() if col in base else base.iloc[0:0, 0]
        k = cand[col].dropna() if col in cand else cand.iloc[0:0, 0]
        if len(b) < c.min_scores or len(k) < c.min_scores:
            status = INSUFFICIENT if c.require_quality else NOT_APPLICABLE
            rows.append(
                GateRow(
                    f"quality: {name}",
                    float(b.mean()) if len(b) else None,
                    float(k.mean()) if len(k) else None,
                    None,
                    limit,
                    status,
                )
            )
            continue
        compared = True
        b_mean, k_mean = float(b.mean()), float(k.mean())
        delta = (b_mean - k_mean) if name in LOWER_IS_BETTER else (k_mean - b_mean)
        status = PASS if delta >= c.min_quality_delta else FAIL  # type: ignore[operator]
        rows.append(
            GateRow(f"quality: {name}", b_mean, k_mean, delta, limit, status if enough else INSUFFICIENT)
        )
    if not compared and not names:
        rows.append(
            GateRow(
                "quality",
                None,
                None,
                None,
                limit,
                INSUFFICIENT if c.require_quality else NOT_APPLICABLE,
            )
        )


def parse_fraction(text: str) -> float:
    """``"20%"`` → 0.2; ``"0.2"`` → 0.2; ``"-0.2"`` → -0.2."""
    value = text.strip()
    if value.endswith("%"):
        return float(value[:-1]) / 100
    return float(value)
