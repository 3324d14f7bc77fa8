"""``run_gate``: each criterion tested on the two sides' requests (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..queries import LOWER_IS_BETTER

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..reader import StoreReader


from .data import pair_requests, read_sides
from .formatting import percent_text
from .model import (
    FAIL,
    GROUPINGS,
    INSUFFICIENT,
    NOT_APPLICABLE,
    PAIRINGS,
    PASS,
    GateCriteria,
    GateInputError,
    GateResult,
    GateRow,
)


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
    base, cand = read_sides(store, by, baseline, candidate, since, until, pair_by=c.pair_by)
    result = GateResult(
        by, baseline, candidate, len(base), len(cand), alpha=c.alpha, confidence=c.confidence, seed=c.seed
    )
    unpriced = _unpriced(base, "baseline") + _unpriced(cand, "candidate")  # of requests, before pairing
    base, cand = pair_requests(base, cand, c, result)
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
    from .. import statistics as st

    tested: list[_Criterion] = []

    def increase(name: str, column: str, limit: float | None, unit: str, estimator: Any) -> None:
        if limit is None:
            return
        row = GateRow(
            name, None, None, None, f"<= +{percent_text(limit)}", PASS, unit, "relative", limit_value=limit
        )
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
                f"<= +{percent_text(c.max_cost_increase)}",
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
            "error rate",
            None,
            None,
            None,
            f"<= {percent_text(limit)}",
            PASS,
            "%",
            "points",
            limit_value=limit,
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

    from .. import statistics as st

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
    from .. import statistics as st

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
