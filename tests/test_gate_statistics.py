"""The release gate's statistics (``analysis/statistics.py``) on arrays: estimators against
scipy's, the tests' false-alarm rate under "no difference" and their exactness, intervals'
coverage, and the resampling shortcuts against resamples built the slow way."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from llmobs_callbacks.analysis import statistics as st


def test_harrell_davis_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    for n in (5, 30, 257):
        x = rng.lognormal(7, 0.6, n)
        for q in (0.5, 0.95):
            assert st.hd_quantile(x, q) == pytest.approx(float(stats.mstats.hdquantiles(x, [q])[0]), rel=1e-9)
    assert np.isnan(st.hd_quantile(np.array([np.nan]), 0.95))


def test_average_ranks_match_scipy_with_ties_and_missing_values() -> None:
    x = np.array([[3.0, 1.0], [1.0, np.nan], [3.0, 1.0], [2.0, 5.0], [np.nan, 0.0]])
    expected = stats.rankdata(x, axis=0, nan_policy="omit")
    np.testing.assert_array_equal(st.average_ranks(x), expected)


def _null_sample(rng: np.random.Generator, n: int) -> np.ndarray:
    """Requests of one version: cost (gamma), tokens (its driver), latency (lognormal), error."""
    tokens = rng.gamma(3, 400, n)
    cost = tokens * 2e-6 * rng.uniform(0.9, 1.1, n)
    latency = rng.lognormal(7.3, 0.6, n)
    errors = (rng.random(n) < 0.03).astype(float)
    return np.column_stack([cost, tokens, latency, errors])


def test_permutation_test_false_alarms_stay_at_alpha_family_wise() -> None:
    """400 seeded pairs of samples from one distribution, 30 vs 30, four correlated criteria:
    the family-wise adjusted p-values reject (p < 0.05) at about 5 % of the runs, not ~4 × 5 %."""
    runs, alpha = 400, 0.05
    family = raw_any = 0
    for r in range(runs):
        rng = np.random.default_rng([9, r])
        tests = st.permutation_test(_null_sample(rng, 30), _null_sample(rng, 30), 999, rng)
        assert np.all(tests.adjusted >= tests.raw - 1e-12)  # adjusting never lowers a p-value
        family += bool(np.nanmin(tests.adjusted) < alpha)
        raw_any += bool(np.nanmin(tests.raw) < alpha)
    # Binomial(400, 0.05): mean 20, sd 4.4; without the adjustment ≈ 3 independent tests' worth
    assert 8 <= family <= 32, family
    assert raw_any > family * 1.5, (raw_any, family)


def test_permutation_p_value_of_a_zero_one_column_is_fishers_exact() -> None:
    base = np.zeros((40, 1))
    base[:1] = 1.0  # 1 error in 40
    cand = np.zeros((40, 1))
    cand[:7] = 1.0  # 7 errors in 40
    fisher = stats.fisher_exact([[7, 33], [1, 39]], alternative="greater").pvalue
    tests = st.permutation_test(base, cand, 20_000, np.random.default_rng(3))
    assert tests.raw[0] == pytest.approx(fisher, abs=0.004)  # Monte-Carlo error at 20 000 resamples


def test_tests_are_seeded_and_one_sided() -> None:
    rng = np.random.default_rng(4)
    base, cand = _null_sample(rng, 50), _null_sample(rng, 50)
    cand[:, 2] *= 1.8  # slower
    a = st.permutation_test(base, cand, 999, np.random.default_rng(7))
    b = st.permutation_test(base, cand, 999, np.random.default_rng(7))
    np.testing.assert_array_equal(a.adjusted, b.adjusted)
    assert a.raw[2] == pytest.approx(1 / 1000)  # never reached by a relabelling
    # family-wise, the smallest p-value possible is about (columns) / (resamples + 1)
    assert a.raw[2] <= a.adjusted[2] <= 4 / 1000
    faster = st.permutation_test(cand, base, 999, np.random.default_rng(7))  # the other way round
    assert faster.raw[2] > 0.99


def test_sign_flip_test_of_paired_differences() -> None:
    rng = np.random.default_rng(5)
    diff = np.column_stack([rng.uniform(0.1, 1, 25), np.zeros(25), rng.normal(0, 1, 25)])
    diff[3, 2] = np.nan  # a pair without that value
    tests = st.sign_flip_test(diff, 1999, rng)
    assert tests.raw[0] == pytest.approx(1 / 2000)  # every input worse: as extreme as it gets
    assert tests.raw[1] == 1.0  # no difference at all: never worse
    wilcoxon = stats.wilcoxon(diff[~np.isnan(diff[:, 2]), 2], alternative="greater").pvalue
    assert tests.raw[2] == pytest.approx(wilcoxon, abs=0.03)


def test_rank_scores_pick_exponential_scores_for_gamma_like_data() -> None:
    rng = np.random.default_rng(6)
    gamma_like, log_symmetric = rng.gamma(1.5, 1.0, 500), rng.lognormal(0, 0.5, 500)
    assert st.log_skewness(gamma_like) < -0.3 < st.log_skewness(log_symmetric)
    scores = st.rank_scores(np.column_stack([gamma_like, log_symmetric]))
    assert scores[:, 0].min() > 0  # Savage scores are positive
    assert scores[:, 1].mean() == pytest.approx(0.0, abs=1e-9)  # normal scores are centred


def test_resampled_estimators_equal_the_estimators_of_materialised_resamples() -> None:
    """The counts shortcut (a weighted mean; Harrell–Davis weights from cumulative counts) gives
    what the estimators give on the resample written out, with and without missing values."""
    rng = np.random.default_rng(7)
    values = np.column_stack([rng.lognormal(7, 0.5, 60), rng.gamma(2, 1.0, 60)])
    values[[4, 17, 33], 1] = np.nan
    estimators = [("quantile", 0.95), st.MEAN, ("quantile", 0.9)]
    values = np.column_stack([values, values[:, 1]])
    counts = st._counts(60, 25, rng)
    fast = st._Resampler(values, estimators)(counts)
    for b in range(25):
        rows = np.repeat(np.arange(60), counts[b].astype(int))
        slow = [st.estimate(values[rows, j], estimators[j]) for j in range(3)]
        np.testing.assert_allclose(fast[b], slow, rtol=1e-9)


def test_bootstrap_interval_covers_the_true_change() -> None:
    """95 % percentile intervals of a mean's relative change cover the true +30 % in about 95 %
    of 200 seeded runs (gamma costs, 100 vs 100); paired intervals of correlated inputs are
    narrower than unpaired ones."""
    covered, widths = 0, []
    for r in range(200):
        rng = np.random.default_rng([11, r])
        base = rng.gamma(3, 1.0, (100, 1))
        cand = rng.gamma(3, 1.3, (100, 1))
        (change,) = st.bootstrap_changes(
            base, cand, [st.MEAN], [True], confidence=0.95, resamples=999, rng=rng
        )
        covered += change.low <= 0.3 <= change.high
    assert 180 <= covered <= 197, covered
    rng = np.random.default_rng(12)
    size = rng.lognormal(0, 1, (40, 1))
    base, cand = size * rng.uniform(0.95, 1.05, (40, 1)), 1.3 * size * rng.uniform(0.95, 1.05, (40, 1))
    for paired in (False, True):
        (change,) = st.bootstrap_changes(
            base, cand, [st.MEAN], [True], confidence=0.95, resamples=999, rng=rng, paired=paired
        )
        widths.append(change.high - change.low)
    assert widths[1] < widths[0] / 5
