"""The entry points (``detect_anomalies``, ``backtest``) and :class:`Detector`, all detectors over one
loaded :class:`Data`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .. import prompt_drift
from ..times import now_or, parse_duration
from .data import load
from .model import SEVERITIES, TYPES, Anomaly, AnomalyThresholds
from .request_detectors import RequestDetectors
from .shift_detectors import ShiftDetectors

if TYPE_CHECKING:  # pragma: no cover
    from ..reader import StoreReader


def detect_anomalies(
    store: StoreReader,
    now: datetime | str | None = None,
    window: str | timedelta = "1h",
    baseline: str | timedelta = "24h",
    thresholds: AnomalyThresholds | None = None,
    types: Iterable[str] | None = None,
    include_internal: bool = False,
) -> list[Anomaly]:
    """Anomalies of the ``window`` before ``now`` (default: the current time) against the
    ``baseline`` before the window, most severe first. ``types`` keeps only those types;
    ``include_internal`` also counts the judge's and index-building traces as requests."""
    now_ = now_or(now)
    w, b = parse_duration(window), parse_duration(baseline)
    data = load(store, now_ - w - b, now_, include_internal=include_internal)
    return _select(Detector(data, thresholds or AnomalyThresholds()).detect(now_, w, b), types)


def backtest(
    store: StoreReader,
    start: datetime | str,
    end: datetime | str | None = None,
    every: str | timedelta = "1h",
    window: str | timedelta = "1h",
    baseline: str | timedelta = "24h",
    thresholds: AnomalyThresholds | None = None,
    types: Iterable[str] | None = None,
    include_internal: bool = False,
) -> list[tuple[datetime, list[Anomaly]]]:
    """Replay the detector over history: ``[(now, anomalies), ...]`` for each ``now`` from
    ``start`` to ``end`` every ``every`` — how often given thresholds would have paged.
    The store is read once."""
    start_, end_ = now_or(start), now_or(end)
    w, b, step = parse_duration(window), parse_duration(baseline), parse_duration(every)
    data = load(store, start_ - w - b, end_, include_internal=include_internal)
    detector = Detector(data, thresholds or AnomalyThresholds())
    out = []
    moment = start_
    while moment <= end_:
        out.append((moment, _select(detector.detect(moment, w, b), types)))
        moment += step
    return out


def _select(anomalies: list[Anomaly], types: Iterable[str] | None) -> list[Anomaly]:
    if types is None:
        return anomalies
    wanted = set(types)
    unknown = wanted - set(TYPES)
    if unknown:
        raise ValueError(f"unknown anomaly types {sorted(unknown)}; known: {', '.join(TYPES)}")
    return [a for a in anomalies if a.type in wanted]


class Detector(RequestDetectors, ShiftDetectors):
    """All detectors over one loaded :class:`Data`; ``detect(now, window, baseline)`` may be
    called for many ``now`` (backtests)."""

    # -- orchestration --

    def detect(self, now: datetime, window: timedelta, baseline: timedelta) -> list[Anomaly]:
        self.now, self.window = now, window
        self.window_start = now - window
        self.baseline_start = self.window_start - baseline
        self.settle_at = self.baseline_start + baseline * self.t.settle_fraction
        d = self.data
        self.traces = d.traces[
            (d.traces["start_time"] >= self.baseline_start) & (d.traces["start_time"] < now)
        ]
        found: list[Anomaly] = []
        found += self._request_metrics()
        found += self._hourly_cost()
        found += self._rates(
            d.tools,
            "status",
            "tool_failure",
            "failure rate",
            self.t.tool_failure_rate,
            self.t.tool_failure_factor,
        )
        found += self._rates(
            d.retrievals,
            "documents",
            "retrieval_empty",
            "empty retrieval rate",
            self.t.retrieval_empty_rate,
            self.t.retrieval_empty_factor,
        )
        found += self._branches()
        found += self._quality()
        found += self._new_versions()
        found += prompt_drift.detect(d.prompt_templates, now, self.settle_at, self._anomaly)
        return _merge(found)


def _merge(found: list[Anomaly]) -> list[Anomaly]:
    """One anomaly per (type, group): the most severe finding; the others go to ``details``.
    Sorted most severe first, then by type order and group."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    merged: dict[tuple, Anomaly] = {}
    for a in found:
        key = a.key
        kept = merged.get(key)
        if kept is None:
            merged[key] = a
            continue
        if rank[a.severity] > rank[kept.severity]:
            a, kept = kept, a
            merged[key] = kept
        kept.details.setdefault("also", []).append(
            {"metric": a.metric, "current": a.current, "baseline": a.baseline, "explanation": a.explanation}
        )
    order = {t: i for i, t in enumerate(TYPES)}
    return sorted(merged.values(), key=lambda a: (-rank[a.severity], order[a.type], a.fingerprint))
