"""A gate row's numbers as text: values, changes, intervals, p-values (the report and the UI)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..queries import LOWER_IS_BETTER

if TYPE_CHECKING:  # pragma: no cover
    pass


if TYPE_CHECKING:  # pragma: no cover
    from .model import GateRow


def finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def value_text(value: float | None, unit: str) -> str:
    if is_missing(value):
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


def amount_text(value: float | None, kind: str) -> str:
    if is_missing(value):
        return ""
    assert value is not None
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    if kind == "relative":
        return f"{value * 100:+.1f}%"
    if kind == "points":
        return f"{value * 100:+.2f} pts"
    return f"{value:+.3f}"


def change_text(r: GateRow) -> str:
    text = amount_text(r.change, r.change_kind)
    if text and r.criterion.startswith("quality") and r.direction in ("worse", "better"):
        text += f" ({r.direction})"
    return text


def interval_text(r: GateRow) -> str:
    if is_missing(r.ci_low) or is_missing(r.ci_high):
        return ""
    low, high = amount_text(r.ci_low, r.change_kind), amount_text(r.ci_high, r.change_kind)
    return f"[{low}, {high}]"


def p_text(p: float | None) -> str:
    if is_missing(p):
        return ""
    assert p is not None
    if p < 0.001:
        return "<0.001"
    # two significant digits, rounded down: a p-value just under alpha never reads as alpha
    decimals = max(1, 1 - math.floor(math.log10(p)))
    return f"{math.floor(p * 10**decimals) / 10**decimals:.{decimals}f}"


def worst_bound(r: GateRow) -> float | None:
    """The end of the interval on the worse side (the high end, the low end for a score where
    higher is better)."""
    higher_is_worse = not r.criterion.startswith("quality: ") or r.criterion[9:] in LOWER_IS_BETTER
    return r.ci_high if higher_is_worse else r.ci_low


def percent_text(value: float) -> str:
    return f"{value * 100:g}%"
