"""The gate's criteria, rows and result (text, JSON, exit code), and the parsers of its limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    pass


from .formatting import (
    amount_text,
    change_text,
    finite_or_none,
    interval_text,
    p_text,
    percent_text,
    value_text,
    worst_bound,
)

PASS, FAIL, NOT_APPLICABLE, INSUFFICIENT = "pass", "FAIL", "n/a", "insufficient"
GROUPINGS = ("prompt_version", "model")
PAIRINGS = ("auto", "id", "input", "off")
# Keys of a root run's metadata that name the input of an eval set, first found wins.
INPUT_ID_KEYS = ("input_id", "example_id", "dataset_item_id")


class GateInputError(ValueError):
    """The gate cannot run on what it was asked (an unknown version, a bad limit): one line."""


@dataclass(frozen=True)
class QualityLimit:
    """How much worse a score's mean may get: ``value`` of the baseline's mean when ``relative``
    (0.10 = 10 %), else on the score's own scale. The sign does not matter: "worse" is down for
    most scores and up for ``LOWER_IS_BETTER`` ones (hallucination, empty_answer, refusal)."""

    value: float
    relative: bool = True

    @classmethod
    def parse(cls, text: str) -> QualityLimit | None:
        """``"-10%"`` / ``"10%"`` → 10 % of the baseline's mean; ``"0.05"`` → 0.05 on the score's
        scale; ``"off"`` → not checked."""
        value = text.strip()
        if value.lower() in ("off", "none"):
            return None
        relative = value.endswith("%")
        return cls(abs(parse_fraction(value)), relative)

    def describe(self, lower_is_better: bool) -> str:
        sign = "<= +" if lower_is_better else ">= -"
        return f"{sign}{percent_text(self.value)}" if self.relative else f"{sign}{self.value:g}"


@dataclass(frozen=True)
class GateCriteria:
    """Limits of the release gate (``None`` switches a criterion off) and its statistics.

    Increases are relative (0.20 = +20 % over the baseline); ``max_error_rate`` is the
    candidate's rate (0.02 = 2 % of its requests); quality limits are per score name
    (``quality_limits``), else ``quality_limit``. ``alpha`` is the family-wise false-alarm rate
    of a gate run; ``confidence`` the level of the intervals; ``resamples`` the permutations
    (sign flips) and bootstrap resamples; ``seed`` makes a run reproducible. ``pair_by``:
    ``"auto"`` (pair by input id when every request carries one), ``"id"``, ``"input"`` (a hash
    of the root's input text) or ``"off"``."""

    max_cost_increase: float | None = 0.20
    max_latency_p95_increase: float | None = 0.20
    max_token_increase: float | None = 0.50  # the anomaly detector's token-spike factor (×1.5)
    max_error_rate: float | None = 0.02
    quality_limit: QualityLimit | None = QualityLimit(0.10)
    quality_limits: Mapping[str, QualityLimit | None] = field(default_factory=dict)
    min_samples: int = 30  # requests per side (inputs when paired)
    min_scores: int = 10  # scores of a name on each side before it is tested
    require_quality: bool = False  # no comparable scores → insufficient data (exit 2) instead of n/a
    alpha: float = 0.01
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0
    pair_by: str = "auto"

    def limit_for(self, score: str) -> QualityLimit | None:
        return self.quality_limits.get(score, self.quality_limit)


@dataclass
class GateRow:
    """One criterion: each side's statistic, the change (on the limit's scale: ``relative``,
    ``absolute`` or ``points``) with its interval, the family-wise p-value, the limit and the
    result. ``direction`` is ``worse`` / ``better`` / ``same``; ``note`` says why a row is n/a."""

    criterion: str
    baseline: float | None
    candidate: float | None
    change: float | None
    limit: str
    status: str  # pass / FAIL / n/a / insufficient
    unit: str = ""
    change_kind: str = ""
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None  # family-wise (adjusted)
    p_raw: float | None = None  # this criterion's test alone
    direction: str | None = None
    significant: bool | None = None
    limit_value: float | None = None
    n_baseline: int | None = None
    n_candidate: int | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: finite_or_none(v) for k, v in asdict(self).items()}


@dataclass
class GateResult:
    by: str
    baseline: str
    candidate: str
    baseline_requests: int
    candidate_requests: int
    rows: list[GateRow] = field(default_factory=list)
    paired_by: str | None = None  # the metadata key, or "input" (text hash); None: unpaired
    pairs: int | None = None
    unmatched: tuple[int, int] = (0, 0)  # requests of each side left out when paired
    alpha: float = 0.01
    confidence: float = 0.95
    resamples: int = 0
    seed: int = 0
    cost_unknown: str = ""  # why cost was not compared ("" = it was)
    unpriced_models: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed under the table

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
        return {0: "PASS", 1: "FAIL", 2: "INSUFFICIENT DATA"}[self.exit_code]

    @property
    def summary(self) -> str:
        """The verdict with why, in one line."""
        rows = {r.criterion: r for r in self.rows}
        tokens = rows.get("tokens per request")
        if self.exit_code == 2:
            reasons = [f"{r.criterion}: {r.note}" for r in self.insufficient if r.note]
            return f"INSUFFICIENT DATA: {'; '.join(reasons)}"
        spend = ""
        if self.cost_unknown and tokens is not None:
            models = ", ".join(f"'{m}'" for m in self.unpriced_models)
            spend = (
                f"; cost unknown (unpriced model {models}), so tokens per request decided "
                f"({amount_text(tokens.change, tokens.change_kind) or 'n/a'}, {tokens.status})"
            )
        alpha = f"(family-wise alpha {self.alpha:g})"
        if self.exit_code == 1:
            failed = ", ".join(r.criterion for r in self.regressions)
            return f"FAIL: significantly worse and not shown within the limit: {failed} {alpha}{spend}"
        text = f"PASS: no criterion significantly worse beyond its limit {alpha}"
        within = [r for r in self.rows if r.status == PASS and r.significant]
        if within:
            kind = [r.change_kind for r in within]
            text += "; worse but within the limit: " + ", ".join(
                f"{r.criterion} ({amount_text(r.change, k)}, CI to {amount_text(worst_bound(r), k)})"
                for r, k in zip(within, kind, strict=True)
            )
        return text + spend

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "baseline_requests": self.baseline_requests,
            "candidate_requests": self.candidate_requests,
            "paired": self.paired_by is not None,
            "paired_by": self.paired_by,
            "pairs": self.pairs,
            "unmatched": {"baseline": self.unmatched[0], "candidate": self.unmatched[1]},
            "alpha": self.alpha,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "cost_unknown": self.cost_unknown or None,
            "unpriced_models": list(self.unpriced_models),
            "notes": list(self.notes),
            "verdict": self.verdict,
            "summary": self.summary,
            "exit_code": self.exit_code,
            "criteria": [r.as_dict() for r in self.rows],
        }

    def format_table(self) -> str:
        """The gate as a text table (what ``llmobs gate`` prints)."""
        how = (
            f"paired on {self.pairs} inputs by {self.paired_by}" if self.paired_by is not None else "unpaired"
        )
        head = (
            f"release gate ({self.by}, {how}): candidate {self.candidate} ({self.candidate_requests} "
            f"requests) vs baseline {self.baseline} ({self.baseline_requests} requests)"
        )
        ci = f"{self.confidence * 100:g}% CI"
        table = [("criterion", "baseline", "candidate", "change", ci, "p", "limit", "result")]
        for r in self.rows:
            table.append(
                (
                    r.criterion,
                    value_text(r.baseline, r.unit),
                    value_text(r.candidate, r.unit),
                    change_text(r),
                    interval_text(r),
                    p_text(r.p_value),
                    r.limit,
                    r.status,
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = [head, ""]
        for row in table:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        notes = self.notes + [f"{r.criterion}: {r.note}" for r in self.rows if r.note]
        if notes:
            lines += ["", *notes]
        lines += ["", f"result: {self.summary}"]
        return "\n".join(lines)


def parse_fraction(text: str) -> float:
    """``"20%"`` → 0.2; ``"0.2"`` → 0.2; ``"-0.2"`` → -0.2."""
    value = text.strip()
    if value.endswith("%"):
        return float(value[:-1]) / 100
    return float(value)


def parse_quality_limit(text: str) -> tuple[str | None, QualityLimit | None]:
    """``"faithfulness=-10%"`` → ("faithfulness", 10 % relative); ``"hallucination=0.05"`` →
    (…, 0.05 absolute); ``"10%"`` → (None, …): the default of every score; ``"NAME=off"``."""
    name, sep, value = text.partition("=")
    if not sep:
        name, value = "", text
    try:
        return (name.strip() or None), QualityLimit.parse(value)
    except ValueError:
        raise GateInputError(
            f"bad quality limit {text!r}: expected NAME=VALUE or VALUE, e.g. faithfulness=-10% "
            "(relative to the baseline's mean), hallucination=0.05 (absolute) or NAME=off"
        ) from None
