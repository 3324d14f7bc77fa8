"""Statistics of the release gate (``gate/``) on numpy arrays: seeded resampling tests of "the
candidate is worse", bootstrap intervals of a change, and the Harrell–Davis quantile.

Significance is a whole-distribution test per criterion: a permutation test of rank scores
(normal scores, or exponential scores for gamma-like data: ``rank_scores``) for two independent
samples, a sign-flip test of Wilcoxon's signed ranks for paired samples. Both are exact under
"no difference" up to Monte-Carlo error, at any sample size and for any shape (the case a gate
meets with every good release). The criteria of one gate run are tested on the *same*
resamples, and Westfall–Young's step-down minP adjustment turns their p-values into family-wise
ones: the false-alarm rate of the whole gate stays at ``alpha`` while correlated criteria (cost
and tokens) do not pay for each other as they would with Bonferroni.

Intervals are bootstrap percentile intervals of each criterion's own statistic (a mean, the
Harrell–Davis p95), resampled by request (by input when paired).

Columns are oriented so that larger is worse (a higher-is-better score is negated by the caller);
NaN marks a missing value (a request without that score). Everything is seeded
(``numpy.random.default_rng``): the same data and seed give the same p-values and intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Estimator = tuple[Literal["mean"], None] | tuple[Literal["quantile"], float]
MEAN: Estimator = ("mean", None)
_CHUNK_CELLS = 4_000_000  # resamples × observations per vectorised block (≈ 32 MB of float64)


def _special():
    from scipy import special

    return special


# -- quantiles -------------------------------------------------------------------------------------


def hd_cumulative_weights(n: int, q: float) -> np.ndarray:
    """``W[k]`` for ``k = 0..n``: the Harrell–Davis weight of the ``k`` smallest of ``n`` values
    (the Beta((n+1)q, (n+1)(1−q)) CDF at k/n); order statistic ``k`` weighs ``W[k] − W[k−1]``."""
    a, b = (n + 1) * q, (n + 1) * (1 - q)
    return _special().betainc(a, b, np.arange(n + 1) / n)


def hd_quantile(values: np.ndarray, q: float) -> float:
    """Harrell–Davis estimate of the ``q`` quantile: a Beta-weighted mean of all order statistics
    (NaN ignored; NaN for no values)."""
    x = np.sort(np.asarray(values, dtype="float64"))
    x = x[~np.isnan(x)]
    if not len(x):
        return float("nan")
    if len(x) == 1:
        return float(x[0])
    return float(np.diff(hd_cumulative_weights(len(x), q)) @ x)


def estimate(values: np.ndarray, estimator: Estimator) -> float:
    """The statistic of one sample (NaN ignored): its mean or its Harrell–Davis quantile."""
    x = np.asarray(values, dtype="float64")
    x = x[~np.isnan(x)]
    if not len(x):
        return float("nan")
    return float(x.mean()) if estimator[0] == "mean" else hd_quantile(x, float(estimator[1]))  # type: ignore[arg-type]


# -- tests -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tests:
    """One-sided p-values per column ("the candidate is worse"): ``raw`` each on its own,
    ``adjusted`` family-wise over the columns tested together (NaN: a column with no data)."""

    raw: np.ndarray
    adjusted: np.ndarray
    resamples: int


def rank_scores(values: np.ndarray) -> np.ndarray:
    """Scores of each column's values for the permutation test (NaN stays NaN; ties share their
    mean rank r among the column's n values): van der Waerden's normal scores Φ⁻¹(r / (n + 1)),
    near-optimal for log-symmetric data such as latencies; or Savage's exponential scores
    −log(1 − r / (n + 1)), near-optimal for gamma-like data such as costs, when the column's
    values are all positive and their logarithms skewed to the left (skewness < −0.3). The choice
    reads the pooled sample only, which relabelling does not change: the test stays exact."""
    x = np.asarray(values, dtype="float64")
    u = average_ranks(x) / ((~np.isnan(x)).sum(axis=0) + 1)
    out = _special().ndtri(u)
    for j in range(x.shape[1]):
        column = x[:, j][~np.isnan(x[:, j])]
        if len(column) > 2 and (column > 0).all() and log_skewness(column) < -0.3:
            out[:, j] = -np.log1p(-u[:, j])
    return out


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks (1-based) within each column of a 2-D array, ties sharing their mean rank; NaN
    stays NaN and is not counted."""
    out = np.full(values.shape, np.nan)
    for j in range(values.shape[1]):
        present = ~np.isnan(values[:, j])
        _, inverse, counts = np.unique(values[present, j], return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        out[present, j] = ((ends - counts + 1 + ends) / 2)[inverse]
    return out


def log_skewness(values: np.ndarray) -> float:
    """Sample skewness of log(values) (0 for a lognormal; about −1.1 for an exponential,
    −0.8 for a gamma of shape 2, −0.5 of shape 5)."""
    logs = np.log(values)
    spread = logs.std()
    return float(((logs - logs.mean()) ** 3).mean() / spread**3) if spread > 0 else 0.0


def permutation_test(base: np.ndarray, cand: np.ndarray, resamples: int, rng: np.random.Generator) -> Tests:
    """Two independent samples (rows: requests, columns: criteria, larger = worse): the
    difference of mean rank scores (``rank_scores``; candidate − baseline) against
    ``resamples`` random relabellings of the pooled requests, the same for every column."""
    pooled = np.vstack([base, cand])
    n = len(pooled)
    scores = rank_scores(pooled)
    present = ~np.isnan(scores)
    design = np.hstack([np.where(present, scores, 0.0), present.astype("float64")])
    total = design.sum(axis=0)
    m = scores.shape[1]
    labels = np.zeros(n)
    labels[len(base) :] = 1.0

    def statistic(sums: np.ndarray) -> np.ndarray:
        s_c, k_c = sums[:, :m], sums[:, m:]
        s_b, k_b = total[:m] - s_c, total[m:] - k_c
        with np.errstate(invalid="ignore", divide="ignore"):
            t = _tidy(s_c / k_c - s_b / k_b)
        return np.where((k_c > 0) & (k_b > 0), t, -np.inf)  # an empty side is never extreme

    observed = statistic((labels @ design)[None, :])
    null = [observed]
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, step):
        block = rng.permuted(np.tile(labels, (min(step, resamples - start), 1)), axis=1)
        null.append(statistic(block @ design))
    valid = present[: len(base)].any(axis=0) & present[len(base) :].any(axis=0)
    return _minp(np.vstack(null), valid)


def sign_flip_test(diff: np.ndarray, resamples: int, rng: np.random.Generator) -> Tests:
    """Paired samples (rows: inputs, columns: criteria; ``diff`` = candidate − baseline, larger
    = worse, NaN where either is missing): Wilcoxon's signed-rank sum against ``resamples``
    random sign flips of the inputs, the same flips for every column."""
    d = np.asarray(diff, dtype="float64")
    ranks = average_ranks(np.abs(d))
    signed = np.where(np.isnan(d), 0.0, np.sign(np.nan_to_num(d)) * np.nan_to_num(ranks))
    n = len(d)
    null = [_tidy(signed.sum(axis=0)[None, :])]
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, step):
        flips = rng.integers(0, 2, size=(min(step, resamples - start), n)) * 2.0 - 1.0
        null.append(_tidy(flips @ signed))
    valid = (~np.isnan(d)).any(axis=0)
    return _minp(np.vstack(null), valid)


def _tidy(statistics: np.ndarray) -> np.ndarray:
    """Rounded to 9 decimals, so resamples whose statistic is equal (the same count of errors,
    the same signs) compare equal despite the summation order of a matrix product."""
    return np.round(statistics, 9)


def _minp(stats_: np.ndarray, valid: np.ndarray) -> Tests:
    """Row 0 observed, rows 1.. the resampled statistics (larger = more extreme). Each value's
    p-value within its column (the observed counted among the resamples, so p ≥ 1/(B+1)), then
    Westfall–Young step-down minP over the valid columns."""
    total, m = stats_.shape
    p_all = np.full((total, m), np.nan)
    for j in np.flatnonzero(valid):
        column = stats_[:, j]
        # p of value v = share of the column ≥ v: 1 − (rank of the first value ≥ v) / total
        ordered = np.sort(column)
        p_all[:, j] = (total - np.searchsorted(ordered, column, side="left")) / total
    raw = p_all[0].copy()
    adjusted = np.full(m, np.nan)
    cols = [j for j in np.argsort(raw) if valid[j]]  # ascending observed p
    if cols:
        successive = np.empty((total, len(cols)))
        running = np.full(total, np.inf)
        for i in range(len(cols) - 1, -1, -1):  # minimum over this column and the larger-p ones
            running = np.minimum(running, p_all[:, cols[i]])
            successive[:, i] = running
        previous = 0.0
        for i, j in enumerate(cols):
            previous = max(previous, float(np.mean(successive[:, i] <= raw[j])))
            adjusted[j] = previous
    return Tests(raw=raw, adjusted=adjusted, resamples=total - 1)


# -- intervals -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A criterion's statistic on each side and its change, with a bootstrap interval."""

    baseline: float
    candidate: float
    change: float  # relative (candidate / baseline − 1) or absolute (candidate − baseline)
    low: float
    high: float


def bootstrap_changes(
    base: np.ndarray,
    cand: np.ndarray,
    estimators: list[Estimator],
    relative: list[bool],
    *,
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
    paired: bool = False,
) -> list[Change]:
    """Per column: the estimator on each side, the change and its percentile interval over
    ``resamples`` bootstrap resamples: each side resampled by request, or both sides by the same
    inputs when ``paired`` (rows aligned)."""
    resample_b, resample_c = _Resampler(base, estimators), _Resampler(cand, estimators)
    boot_b = np.empty((resamples, base.shape[1]))
    boot_c = np.empty((resamples, cand.shape[1]))
    step = max(1, _CHUNK_CELLS // max(len(base), len(cand), 1))
    for start in range(0, resamples, step):
        size = min(step, resamples - start)
        counts_b = _counts(len(base), size, rng)
        counts_c = counts_b if paired else _counts(len(cand), size, rng)
        boot_b[start : start + size] = resample_b(counts_b)
        boot_c[start : start + size] = resample_c(counts_c)
    tail = (1 - confidence) / 2
    out = []
    for j, estimator in enumerate(estimators):
        b, k = estimate(base[:, j], estimator), estimate(cand[:, j], estimator)
        change = float(_change(np.array(b), np.array(k), relative[j]))
        draws = _change(boot_b[:, j], boot_c[:, j], relative[j])
        draws = draws[~np.isnan(draws)]
        low = high = float("nan")
        if len(draws) and not np.isnan(change):
            low, high = (float(v) for v in np.quantile(draws, [tail, 1 - tail]))
        out.append(Change(b, k, change, low, high))
    return out


def _counts(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` bootstrap resamples of ``n`` rows as counts (how often each row is drawn)."""
    draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype("float64")


class _Resampler:
    """The estimators of one sample's columns on bootstrap resamples given as counts, without
    materialising a resample: a mean is a weighted mean (one matrix product for all columns);
    the Harrell–Davis quantile weighs each order statistic by the Beta CDF between the
    cumulative counts below and up to it."""

    def __init__(self, values: np.ndarray, estimators: list[Estimator]) -> None:
        self.present = ~np.isnan(values)
        self.design = np.hstack([np.where(self.present, values, 0.0), self.present.astype("float64")])
        self.m = values.shape[1]
        self.quantiles = []  # (column, q, row order of its values, sorted values, weight table)
        for j, (kind, q) in enumerate(estimators):
            if kind == "quantile":
                rows = np.flatnonzero(self.present[:, j])
                order = rows[np.argsort(values[rows, j], kind="stable")]
                table = hd_cumulative_weights(len(rows), float(q)) if len(rows) else np.zeros(1)  # type: ignore[arg-type]
                self.quantiles.append((j, float(q), order, values[order, j], table))  # type: ignore[arg-type]

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        sums = counts @ self.design
        with np.errstate(invalid="ignore", divide="ignore"):
            out = sums[:, : self.m] / sums[:, self.m :]
        for j, q, order, x, table in self.quantiles:
            cum = np.cumsum(counts[:, order], axis=1)
            size = cum[:, -1:] if len(order) else np.zeros((len(counts), 1))
            if len(order) == len(counts[0]):  # every resample has n values: one table of weights
                w = table[cum.astype("int64")]
            else:  # missing values: each resample has its own size
                with np.errstate(invalid="ignore", divide="ignore"):
                    w = _special().betainc((size + 1) * q, (size + 1) * (1 - q), cum / size)
            out[:, j] = np.where(size[:, 0] > 0, np.diff(w, axis=1, prepend=0.0) @ x, np.nan)
        return out


def _change(b: np.ndarray, k: np.ndarray, relative: bool) -> np.ndarray:
    """candidate − baseline, or candidate / baseline − 1 (a zero baseline: 0 when the candidate
    is zero too, else ±inf)."""
    b, k = np.asarray(b, dtype="float64"), np.asarray(k, dtype="float64")
    if not relative:
        return k - b
    safe = np.where(b != 0, b, 1.0)
    with np.errstate(invalid="ignore"):
        return np.where(b != 0, k / safe - 1, np.where(k == 0, 0.0, np.inf * np.sign(k)))
