"""Anomalies and their numbers as text: the one-line explanations and ``format_anomalies``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .model import Anomaly

if TYPE_CHECKING:  # pragma: no cover
    pass


def format_anomalies(anomalies: Sequence[Anomaly], *, now: datetime | None = None) -> str:
    """Anomalies as text, one line each (most severe first), for terminals and chat messages."""
    if not anomalies:
        return "no anomalies" + (f" at {now:%Y-%m-%d %H:%M} UTC" if now else "")
    lines = []
    for a in anomalies:
        lines.append(f"{a.severity.upper():8} {a.type:18} {a.explanation}")
    return "\n".join(lines)


def fmt_num(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "$":
        return f"${value:.4g}"
    if unit == "ms":
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"
    if unit == "%":
        return f"{value * 100:.1f}%"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def fmt_p(p: float | None) -> str:
    return "" if p is None else f"p={p:.1g}"


def group_prefix(group: dict[str, Any]) -> str:
    pv, model = group.get("prompt_version"), group.get("model")
    if pv is None and model is None:
        return ""
    who = f"prompt version {pv}" if pv else "requests without a prompt version"
    return f"{who} on {model}: " if model else f"{who}: "


def fmt_window(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
