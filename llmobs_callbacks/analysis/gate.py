"""Release gate: does a candidate prompt (or model) version regress against a baseline?

``run_gate(store, baseline="v1", candidate="v2")`` tests each criterion of :class:`GateCriteria`
on the requests of both versions and returns a :class:`GateResult` whose ``exit_code`` is 0
(pass), 1 (a regression) or 2 (too little data, or nothing to check spend with). ``llmobs gate``
prints its table and exits with it, so a CI job fails like a failing test.

A criterion is a test, not a comparison of two numbers. It fails when the candidate is
**significantly worse** than the baseline and its change is **not shown to be within the limit**:

- significance: a one-sided whole-distribution test per criterion (``statistics.py``: a
  permutation test of rank scores; a sign-flip test of signed ranks when paired), its p-value
  adjusted family-wise over every criterion of the run (Westfall–Young step-down minP), so a gate
  run raises a false alarm with probability at most ``alpha`` (0.01) when nothing changed;
- the limit: the upper end of the change's bootstrap interval (95 %) is beyond the limit. A
  candidate that is worse but whose whole interval lies within the limit passes; so does one
  that is not significantly worse, however noisy its point estimate.

The error rate's limit is on the candidate's own rate: it fails when that rate is above the limit
and significantly above the baseline's (the permutation test of a 0/1 column is Fisher's exact
test). Quality limits are per score, on the score's own scale, relative to the baseline's mean by
default; a score's change is candidate − baseline as it is, with its direction (``worse`` /
``better``: lower is better for ``LOWER_IS_BETTER`` names).

A request is a user-facing root trace (internal work such as judge runs left out): its cost is
the sum over its LLM calls (unknown when a call reported tokens but got no price), tokens
input + output, latency the root's, an error when the root failed, quality the mean of each
score name given to it. When either side's cost is unknown the cost row says which models are
unpriced and tokens per request decides (the verdict says so).

Paired mode: when both versions answered the same inputs (an eval set), requests are matched by
an input id in the root run's metadata (``input_id``, ``example_id``, ``dataset_item_id``) or, on
request, by a hash of the root's input text, and compared per input.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .queries import LOWER_IS_BETTER, root_inputs_query

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .reader import StoreReader

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
        return f"{sign}{_pct(self.value)}" if self.relative else f"{sign}{self.value:g}"


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
        return {k: _finite(v) for k, v in asdict(self).items()}


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
                f"({_amount(tokens.change, tokens.change_kind) or 'n/a'}, {tokens.status})"
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
                f"{r.criterion} ({_amount(r.change, k)}, CI to {_amount(_worst(r), k)})"
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
                    _value(r.baseline, r.unit),
                    _value(r.candidate, r.unit),
                    _change_text(r),
                    _interval(r),
                    _p(r.p_value),
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


# -- formatting ------------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _value(value: float | None, unit: str) -> str:
    if _missing(value):
        return "-"
    assert value is not None
    if unit == "$":
        return f"${value:.6f}"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "%":
        return f"{value * 100:.2f}%"
    if unit == "n":
        return f"{value:.0f}"
    if unit == "tokens":
        return f"{value:.1f}"
    return f"{value:.3f}"


def _amount(value: float | None, kind: str) -> str:
    if _missing(value):
        return ""
    assert value is not None
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    if kind == "relative":
        return f"{value * 100:+.1f}%"
    if kind == "points":
        return f"{value * 100:+.2f} pts"
    return f"{value:+.3f}"


def _change_text(r: GateRow) -> str:
    text = _amount(r.change, r.change_kind)
    if text and r.criterion.startswith("quality") and r.direction in ("worse", "better"):
        text += f" ({r.direction})"
    return text


def _interval(r: GateRow) -> str:
    if _missing(r.ci_low) or _missing(r.ci_high):
        return ""
    low, high = _amount(r.ci_low, r.change_kind), _amount(r.ci_high, r.change_kind)
    return f"[{low}, {high}]"


def _p(p: float | None) -> str:
    if _missing(p):
        return ""
    assert p is not None
    if p < 0.001:
        return "<0.001"
    # two significant digits, rounded down: a p-value just under alpha never reads as alpha
    decimals = max(1, 1 - math.floor(math.log10(p)))
    return f"{math.floor(p * 10**decimals) / 10**decimals:.{decimals}f}"


def _worst(r: GateRow) -> float | None:
    """The end of the interval on the worse side (the high end, the low end for a score where
    higher is better)."""
    higher_is_worse = not r.criterion.startswith("quality: ") or r.criterion[9:] in LOWER_IS_BETTER
    return r.ci_high if higher_is_worse else r.ci_low


def _pct(value: float) -> str:
    return f"{value * 100:g}%"


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


# -- the gate --------------------------------------------------------------------------------------


@dataclass
class _Criterion:
    """A tested criterion: per-request values of each side (rows aligned when paired)."""

    row: GateRow
    base: Any  # numpy arrays
    cand: Any
    worse_sign: float  # +1: larger is worse, -1: smaller is worse
    estimator: tuple
    relative: bool
    limit: float  # magnitude of the allowed change in the worse direction (or the error rate)


def run_gate(
    store: StoreReader,
    baseline: str,
    candidate: str,
    criteria: GateCriteria | None = None,
    *,
    by: str = "prompt_version",
    since: Any = None,
    until: Any = None,
) -> GateResult:
    """Compare ``candidate`` with ``baseline`` (values of ``by``: ``prompt_version`` or ``model``)
    over the requests stored between ``since`` and ``until`` (default: all). Raises
    :class:`GateInputError` for a version with no requests ("no requests for prompt_version
    'v3'; known: v1, v2")."""
    c = criteria or GateCriteria()
    if by not in GROUPINGS:
        raise GateInputError(f"by must be one of: {', '.join(GROUPINGS)}")
    if c.pair_by not in PAIRINGS:
        raise GateInputError(f"pair_by must be one of: {', '.join(PAIRINGS)}")
    if not (0 < c.alpha < 1 and 0 < c.confidence < 1 and c.resamples >= 100 and c.min_samples >= 2):
        raise GateInputError(
            f"alpha and confidence must be in (0, 1), resamples at least 100, min_samples at least 2 "
            f"(got alpha={c.alpha:g}, confidence={c.confidence:g}, resamples={c.resamples}, "
            f"min_samples={c.min_samples})"
        )
    base, cand = _sides(store, by, baseline, candidate, since, until, pair_by=c.pair_by)
    result = GateResult(
        by, baseline, candidate, len(base), len(cand), alpha=c.alpha, confidence=c.confidence, seed=c.seed
    )
    unpriced = _unpriced(base, "baseline") + _unpriced(cand, "candidate")  # of requests, before pairing
    base, cand = _pair(base, cand, c, result)
    enough = _requests_row(len(base), len(cand), c, result)
    tested = _spend_and_speed(base, cand, unpriced, c, result) + _quality(base, cand, c, result)
    if not enough:
        for t in tested:
            t.row.status = INSUFFICIENT if t.row.status == PASS else t.row.status
            _describe(t)
    elif tested:
        _test(tested, c, result, paired=result.paired_by is not None)
    return result


def _requests_row(n_base: int, n_cand: int, c: GateCriteria, result: GateResult) -> bool:
    """The ``requests`` row; True when both sides have ``min_samples`` (pairs when paired)."""
    unit = "pairs" if result.paired_by else "requests"
    enough = min(n_base, n_cand) >= c.min_samples
    result.rows.append(
        GateRow(
            "requests",
            float(result.baseline_requests),
            float(result.candidate_requests),
            None,
            f">= {c.min_samples}" + (" pairs" if result.paired_by else ""),
            PASS if enough else INSUFFICIENT,
            "n",
            limit_value=float(c.min_samples),
            n_baseline=n_base,
            n_candidate=n_cand,
            note="" if enough else f"{n_base} and {n_cand} {unit}, fewer than {c.min_samples} on a side",
        )
    )
    return enough


def _column(frame: pd.DataFrame, name: str) -> Any:
    import numpy as np

    return frame[name].to_numpy(dtype="float64") if name in frame else np.full(len(frame), np.nan)


def _spend_and_speed(
    base: pd.DataFrame,
    cand: pd.DataFrame,
    unknown: list[tuple[str, list[str]]],
    c: GateCriteria,
    result: GateResult,
) -> list[_Criterion]:
    """Rows and criteria of cost, p95 latency, tokens and error rate (those switched on). Cost is
    unknown on a side when any of its requests has an unpriced call: its row says which models,
    and tokens per request decides (with tokens off too, spend is unchecked: insufficient)."""
    from . import statistics as st

    tested: list[_Criterion] = []

    def increase(name: str, column: str, limit: float | None, unit: str, estimator: Any) -> None:
        if limit is None:
            return
        row = GateRow(name, None, None, None, f"<= +{_pct(limit)}", PASS, unit, "relative", limit_value=limit)
        result.rows.append(row)
        tested.append(
            _Criterion(row, _column(base, column), _column(cand, column), 1.0, estimator, True, limit)
        )

    if c.max_cost_increase is not None and unknown:
        result.cost_unknown = "; ".join(text for text, _ in unknown)
        result.unpriced_models = sorted({m for _, models in unknown for m in models})
        tokens_on = c.max_token_increase is not None
        decides = (
            "tokens per request decides" if tokens_on else "tokens per request is off: spend is unchecked"
        )
        result.rows.append(
            GateRow(
                "cost per request",
                None,
                None,
                None,
                f"<= +{_pct(c.max_cost_increase)}",
                NOT_APPLICABLE if tokens_on else INSUFFICIENT,
                "$",
                "relative",
                limit_value=c.max_cost_increase,
                note=f"unknown: {result.cost_unknown}; {decides}",
            )
        )
    else:
        increase("cost per request", "cost", c.max_cost_increase, "$", st.MEAN)
    increase("p95 latency", "latency_ms", c.max_latency_p95_increase, "ms", ("quantile", 0.95))
    increase("tokens per request", "tokens", c.max_token_increase, "tokens", st.MEAN)
    if c.max_error_rate is not None:
        limit = c.max_error_rate
        row = GateRow(
            "error rate", None, None, None, f"<= {_pct(limit)}", PASS, "%", "points", limit_value=limit
        )
        result.rows.append(row)
        tested.append(
            _Criterion(row, _column(base, "error"), _column(cand, "error"), 1.0, st.MEAN, False, limit)
        )
    return tested


def _unpriced(frame: pd.DataFrame, side: str) -> list[tuple[str, list[str]]]:
    """Why a side's cost is unknown: its requests with an LLM call that reported tokens but got
    no price, and which models."""
    if "unpriced_calls" not in frame or not len(frame):
        return []
    hit = frame[frame["unpriced_calls"] > 0]
    if not len(hit):
        return []
    models = sorted({str(m) for m in hit["unpriced_model"].dropna()}) or ["(unnamed)"]
    names = ", ".join(f"'{m}'" for m in models)
    return [(f"{side}: {len(hit)} of {len(frame)} requests have calls of unpriced model(s) {names}", models)]


def _quality(base: pd.DataFrame, cand: pd.DataFrame, c: GateCriteria, result: GateResult) -> list[_Criterion]:
    """A row per score name (its limit, its own scale); names with too few scores are n/a (or
    insufficient with ``require_quality``); no scores at all: one ``quality`` row."""
    import numpy as np

    tested: list[_Criterion] = []
    present = _score_names(base) | _score_names(cand)
    names = sorted(n for n in present if c.limit_for(n) is not None)
    unknown = sorted(set(c.quality_limits) - present)
    if unknown:
        result.notes.append(f"quality limits for scores that are not in the store: {', '.join(unknown)}")
    for name in names:
        limit = c.limit_for(name)
        assert limit is not None
        lower = name in LOWER_IS_BETTER
        b, k = _column(base, f"score_{name}"), _column(cand, f"score_{name}")
        row = GateRow(
            f"quality: {name}",
            None,
            None,
            None,
            limit.describe(lower),
            PASS,
            change_kind="relative" if limit.relative else "absolute",
            limit_value=limit.value,
        )
        result.rows.append(row)
        criterion = _Criterion(row, b, k, 1.0 if lower else -1.0, ("mean", None), limit.relative, limit.value)
        nb, nk = int((~np.isnan(b)).sum()), int((~np.isnan(k)).sum())
        if nb < c.min_scores or nk < c.min_scores:
            row.status = INSUFFICIENT if c.require_quality else NOT_APPLICABLE
            row.note = f"{nb} and {nk} scores, fewer than {c.min_scores} on a side"
            _describe(criterion)
            continue
        tested.append(criterion)
    if not names:
        quality_limit = c.quality_limit.describe(False) if c.quality_limit else "off"
        result.rows.append(
            GateRow(
                "quality",
                None,
                None,
                None,
                quality_limit,
                INSUFFICIENT if c.require_quality else NOT_APPLICABLE,
                note="no scores to compare",
            )
        )
    return tested


def _score_names(frame: pd.DataFrame) -> set[str]:
    """Score names with at least one value on this side."""
    return {
        col[len("score_") :] for col in frame.columns if col.startswith("score_") and frame[col].notna().any()
    }


def _test(tested: list[_Criterion], c: GateCriteria, result: GateResult, paired: bool) -> None:
    """Every criterion on the same resamples: family-wise p-values, then the intervals."""
    import numpy as np

    from . import statistics as st

    seeds = np.random.SeedSequence(c.seed).spawn(2)
    worse_b = np.column_stack([t.base * t.worse_sign for t in tested])
    worse_c = np.column_stack([t.cand * t.worse_sign for t in tested])
    # Family-wise, the smallest p-value a Monte-Carlo minP can give is about (criteria) /
    # (resamples + 1): enough resamples that it stays well below alpha with many criteria.
    resamples = max(c.resamples, math.ceil(4 * len(tested) / c.alpha))
    if paired:
        tests = st.sign_flip_test(worse_c - worse_b, resamples, np.random.default_rng(seeds[0]))
    else:
        tests = st.permutation_test(worse_b, worse_c, resamples, np.random.default_rng(seeds[0]))
    result.resamples = tests.resamples
    changes = st.bootstrap_changes(
        np.column_stack([t.base for t in tested]),
        np.column_stack([t.cand for t in tested]),
        [t.estimator for t in tested],  # type: ignore[misc]
        [t.relative for t in tested],
        confidence=c.confidence,
        resamples=c.resamples,
        rng=np.random.default_rng(seeds[1]),
        paired=paired,
    )
    for j, (t, ch) in enumerate(zip(tested, changes, strict=True)):
        row = t.row
        row.baseline, row.candidate, row.change = ch.baseline, ch.candidate, ch.change
        row.ci_low, row.ci_high = ch.low, ch.high
        row.p_value = None if math.isnan(tests.adjusted[j]) else float(tests.adjusted[j])
        row.p_raw = None if math.isnan(tests.raw[j]) else float(tests.raw[j])
        _describe(t)
        row.significant = row.p_value is not None and row.p_value < c.alpha
        if math.isnan(ch.change):
            row.status, row.note = NOT_APPLICABLE, row.note or "no values to compare"
        elif row.significant and _beyond(t, ch):
            row.status = FAIL


def _beyond(t: _Criterion, ch: Any) -> bool:
    """Not shown within the limit: the interval's end on the worse side is beyond it (for the
    error rate: the candidate's rate is above it)."""
    if t.row.criterion == "error rate":
        return ch.candidate > t.limit
    worst = ch.high if t.worse_sign > 0 else -ch.low
    return bool(math.isnan(worst) or worst > t.limit)


def _describe(t: _Criterion) -> None:
    """Sample sizes, direction and (for a relative change of a zero baseline) a note."""
    from . import statistics as st

    row = t.row
    row.n_baseline = int((t.base == t.base).sum())
    row.n_candidate = int((t.cand == t.cand).sum())
    if row.baseline is None:
        row.baseline = st.estimate(t.base, t.estimator)  # type: ignore[arg-type]
        row.candidate = st.estimate(t.cand, t.estimator)  # type: ignore[arg-type]
    b, k = row.baseline, row.candidate
    if b is None or k is None or math.isnan(b) or math.isnan(k):
        row.direction = None
    else:
        worse = (k - b) * t.worse_sign
        row.direction = "worse" if worse > 0 else ("better" if worse < 0 else "same")
        if t.relative and b == 0 and k != 0:
            row.note = row.note or "baseline is 0: a relative change is unbounded"


# -- data ------------------------------------------------------------------------------------------


def _sides(
    store: StoreReader,
    by: str,
    baseline: str,
    candidate: str,
    since: Any,
    until: Any,
    pair_by: str = "off",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The requests of each side (``StoreReader.traces``: one row per user request, internal
    traces left out) with ``latency_ms``, ``error`` (1.0 when the root failed), ``tokens``,
    ``cost`` (sum over its LLM calls, 0 without any), ``unpriced_calls`` / ``unpriced_model``,
    ``score_<name>`` (mean of each current score name) and, for pairing, ``input_id`` (from the
    root's metadata) and ``input_hash`` (of the root's input text; read only for
    ``pair_by="input"``). The one place the gate reads the store."""
    # One read of the window (its LLM calls are aggregated per request in the same query), the
    # two versions picked in pandas: filtering by version in SQL would not narrow that read.
    every = store.traces(since=since, until=until, scores=True)
    values = every[by].astype("string")
    frames = [every[values.eq(v).fillna(False).astype(bool)] for v in (baseline, candidate)]
    missing = [v for v, f in zip((baseline, candidate), frames, strict=True) if not len(f)]
    if missing:
        known = sorted({str(v) for v in every[by].dropna()}) if len(every) else []
        asked = " or ".join(f"'{v}'" for v in dict.fromkeys(missing))
        raise GateInputError(f"no requests for {by} {asked}; known: {', '.join(known) or 'none'}")
    inputs = _root_inputs(store, [f["trace_id"] for f in frames], hashed=pair_by == "input")
    out = []
    for frame in frames:
        frame = frame.join(inputs, on="trace_id").assign(
            tokens=frame["tokens"].astype("float64"),
            error=(frame["status"] == "error").astype("float64"),
            cost=frame["cost_usd"].astype("float64").fillna(0.0),
        )
        out.append(frame.reset_index(drop=True))
    return out[0], out[1]


def _root_inputs(store: StoreReader, trace_ids: list[Any], hashed: bool) -> pd.DataFrame:
    """Per trace: the root's ``input_id`` from its metadata and (``hashed``) the hash of its
    input text. Read by trace id in chunks (bounded parameter lists on SQLite and PostgreSQL)."""
    import pandas as pd

    ids = [str(t) for frame_ids in trace_ids for t in frame_ids]
    roots = []
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 5000):
            roots += conn.execute(root_inputs_query(ids[start : start + 5000], with_input=hashed)).all()
    return pd.DataFrame(
        {
            "trace_id": [str(r[0]) for r in roots],
            "input_id": [_input_id(r[1]) for r in roots],
            "input_hash": [_hash(r[2]) if hashed else None for r in roots],
        }
    ).set_index("trace_id")


def _input_id(attributes: Any) -> str | None:
    if isinstance(attributes, str):  # a driver that hands JSON back as text
        import json

        try:
            attributes = json.loads(attributes)
        except ValueError:
            return None
    if not isinstance(attributes, dict):
        return None
    for key in INPUT_ID_KEYS:
        value = attributes.get(key)
        if value is not None and str(value) != "":
            return f"{key}={value}"
    return None


def _hash(text: Any) -> str | None:
    if text is None:
        return None
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def _pair(base: pd.DataFrame, cand: pd.DataFrame, c: GateCriteria, result: GateResult):
    """Match the sides by input when ``pair_by`` asks (or, ``auto``, when every request carries
    an input id): one row per input on each side (the mean of its requests when an input was
    answered several times), inputs of one side only left out. Unpaired: the sides as they are."""
    if c.pair_by == "off":
        return base, cand
    key = "input_hash" if c.pair_by == "input" else "input_id"
    has_b, has_c = base[key].notna(), cand[key].notna()
    if c.pair_by == "auto" and not (len(base) and len(cand) and has_b.all() and has_c.all()):
        return base, cand
    common = sorted(set(base.loc[has_b, key]) & set(cand.loc[has_c, key]))
    if c.pair_by == "auto" and len(common) < c.min_samples:
        result.notes.append(
            f"unpaired: the requests carry input ids, but only {len(common)} inputs were answered by both"
        )
        return base, cand
    numeric = ["latency_ms", "error", "tokens", "cost", "unpriced_calls", *_score_columns(base, cand)]

    def per_input(frame: pd.DataFrame) -> pd.DataFrame:
        kept = frame[frame[key].isin(common)]
        cols = [col for col in numeric if col in kept]
        grouped = kept.groupby(key)[cols].mean()
        grouped["unpriced_model"] = kept.groupby(key)["unpriced_model"].first()
        return grouped.reindex(common)

    paired_b, paired_c = per_input(base), per_input(cand)
    label = "input text" if key == "input_hash" else _id_keys(base, cand)
    result.paired_by, result.pairs = label, len(common)
    result.unmatched = (
        int((~base[key].isin(common)).sum()),
        int((~cand[key].isin(common)).sum()),
    )
    if any(result.unmatched):
        result.notes.append(
            f"paired on {len(common)} inputs; unmatched requests left out: {result.unmatched[0]} "
            f"of {result.baseline} and {result.unmatched[1]} of {result.candidate}"
        )
    return paired_b.reset_index(drop=True), paired_c.reset_index(drop=True)


def _score_columns(*frames: pd.DataFrame) -> list[str]:
    return sorted({col for f in frames for col in f.columns if col.startswith("score_")})


def _id_keys(*frames: pd.DataFrame) -> str:
    keys = sorted({str(v).split("=", 1)[0] for f in frames for v in f["input_id"].dropna()})
    return "/".join(keys) or "input id"
