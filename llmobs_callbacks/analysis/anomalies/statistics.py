"""The detectors' statistical tests: robust z-scores, Welch, Fisher and binomial tests (scipy)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    pass


def scipy_stats() -> Any:
    try:
        from scipy import stats
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("anomaly detection needs scipy: pip install 'llmobs-callbacks[analysis]'") from exc
    return stats


def welch_greater(x: Any, y: Any) -> float:
    """One-sided Welch t-test p-value that mean(x) > mean(y)."""
    mx, my = float(x.mean()), float(y.mean())
    if float(x.var()) == 0.0 and float(y.var()) == 0.0:
        return 0.0 if mx > my else 1.0
    with warnings.catch_warnings():  # nearly constant samples: scipy warns, the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(scipy_stats().ttest_ind(x, y, equal_var=False, alternative="greater").pvalue)
    return 1.0 if math.isnan(p) else p


def robust_z(value: float, buckets: Sequence[float]) -> tuple[float | None, float | None]:
    """(z, median) of ``value`` against bucket values: (value − median) / (1.4826 · MAD).
    A MAD of zero (identical buckets) is floored at 1 % of the median, so tiny changes of a
    perfectly flat series are not infinitely significant."""
    np = __import__("numpy")
    arr = np.asarray(buckets, dtype="float64")
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return None, None
    median = float(np.median(arr))
    scale = 1.4826 * float(np.median(np.abs(arr - median)))
    scale = max(scale, 0.01 * abs(median), 1e-12)
    return (value - median) / scale, median


def fisher_greater(k: int, n: int, ref_k: int, ref_n: int) -> float:
    return float(
        scipy_stats().fisher_exact([[k, n - k], [ref_k, ref_n - ref_k]], alternative="greater").pvalue
    )


def binom_greater(k: int, n: int, p: float) -> float:
    return float(scipy_stats().binomtest(k, n, p, alternative="greater").pvalue)
