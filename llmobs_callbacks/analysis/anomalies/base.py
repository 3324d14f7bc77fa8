"""The detectors' shared state and helpers: a group's current and reference sample, buckets, severities."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .data import Data
from .formatting import fmt_window
from .model import MISSING_GROUP, Anomaly, AnomalyThresholds

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass
class Sample:
    """A group's current rows and the reference rows it is compared with."""

    current: pd.DataFrame
    reference: pd.DataFrame
    since: datetime  # start of the current sample (window start, or the new version's first request)
    new: bool
    reference_label: str  # "its baseline" / "v1" …


class DetectorBase:
    """What every detector shares: the loaded data, the thresholds, the current window and the
    helpers that sample a group and build an :class:`Anomaly`."""

    def __init__(self, data: Data, thresholds: AnomalyThresholds) -> None:
        self.data = data
        self.t = thresholds
        # Comparisons that had enough data to be made, by type (how much a quiet result means).
        self.evaluated: Counter[str] = Counter()

    def _in(self, frame: pd.DataFrame, column: str, start: datetime, end: datetime) -> pd.DataFrame:
        return frame[(frame[column] >= start) & (frame[column] < end)]

    def _sample(
        self, rows: pd.DataFrame, others: pd.DataFrame, time_column: str, same: pd.Series | None
    ) -> Sample | None:
        """Current and reference rows of one group (``rows``: the group's rows in the lookback;
        ``others``: everyone else's; ``same``: a mask of ``others`` to prefer, e.g. same model)."""
        current_window = rows[rows[time_column] >= self.window_start]
        if current_window.empty:
            return None
        first = rows[time_column].min()
        if first < self.settle_at:
            reference = rows[rows[time_column] < self.window_start]
            return Sample(current_window, reference, self.window_start, False, "its baseline")
        base = others[others[time_column] < self.window_start]
        reference = base
        if same is not None:
            preferred = base[same.reindex(base.index, fill_value=False)]
            if len(preferred) >= self.t.min_requests:
                reference = preferred
        versions = sorted({v or "(none)" for v in reference["pv"]}) if "pv" in reference else []
        label = ", ".join(versions[:3]) + ("…" if len(versions) > 3 else "") if versions else "the baseline"
        return Sample(rows, reference, first.to_pydatetime(), True, label)

    def _describe(self, s: Sample, what: str) -> str:
        if s.new:
            return f"{what} since it appeared at {s.since:%Y-%m-%d %H:%M} ({len(s.current)} requests)"
        return f"{what} in the last {fmt_window(self.window)} ({len(s.current)} requests)"

    def _buckets(self, frame: pd.DataFrame, column: str, time_column: str = "start_time") -> Any:
        """Rows of the baseline grouped by window-sized buckets (aligned on the window's start)."""
        size = self.window.total_seconds()
        offset = (frame[time_column] - self.window_start).dt.total_seconds()
        index = (offset // size).astype("int64")
        return frame.groupby(index)[column]

    def _anomaly(self, **kwargs: Any) -> Anomaly:
        kwargs.setdefault("window_end", self.now)
        for key in ("prompt_version", "model"):
            if kwargs.get(key) == MISSING_GROUP:
                kwargs[key] = None
        return Anomaly(**kwargs)


def severity_of(rule: bool, stat: bool) -> str:
    return "critical" if rule and stat else "warning"


def detector_label(rule: bool, stat: bool) -> str:
    return "rule+statistical" if rule and stat else ("rule" if rule else "statistical")
