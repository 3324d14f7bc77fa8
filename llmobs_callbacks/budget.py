"""Spend budgets: ``LLMObs(budget_usd={"day": 50, "month": 1000})``.

A :class:`BudgetTracker` is an exporter on the span processor's thread: it adds the cost of every
priced span (LLM calls and judge calls) to the current UTC day, ISO week (from Monday) and/or
calendar month, by the span's start time (so simulated clocks and replays work). When it starts
it reads what the store already holds for the current periods, so a restart does not reset the
spend. Crossing 80 % and 100 % of a budget (``alert_at``) raises one :class:`BudgetEvent` per
period and threshold, delivered off the processor thread to the ``LLMObs``'s alert notifiers and
to an optional ``on_budget(event)`` callback.

Prometheus (same registry as the other ``llmobs_*`` metrics):

- ``llmobs_budget_usd{period}`` — the budget (gauge)
- ``llmobs_budget_spend_usd{period}`` — spend so far in the current period (gauge)

e.g. ``llmobs_budget_spend_usd / llmobs_budget_usd > 0.8`` as an alert rule.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily

from .model import SpanRecord
from .sinks import metric_names as names

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry
    from sqlalchemy.engine import Engine

logger = logging.getLogger("llmobs_callbacks.budget")

PERIODS = ("day", "week", "month")


def period_start(period: str, moment: datetime) -> datetime:
    """Start (UTC) of the ``day`` / ``week`` (Monday) / ``month`` containing ``moment``."""
    moment = moment.astimezone(timezone.utc)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period {period!r}; use one of {PERIODS}")


def period_end(period: str, start: datetime) -> datetime:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def validate_budgets(budgets: Mapping[str, float]) -> None:
    """Raise ``ValueError`` for an unknown period or a budget that is not a positive number."""
    unknown = set(budgets) - set(PERIODS)
    if unknown:
        raise ValueError(f"unknown budget periods {sorted(unknown)}; use {', '.join(PERIODS)}")
    for period, value in budgets.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"budget_usd[{period!r}] must be a positive number of USD, not {value!r}")


@dataclass(frozen=True)
class BudgetEvent:
    """A budget threshold crossed: ``spend_usd`` ≥ ``threshold`` × ``budget_usd`` in ``period``."""

    period: str
    period_start: datetime
    budget_usd: float
    spend_usd: float
    threshold: float  # 0.8, 1.0, …
    at: datetime

    @property
    def fraction(self) -> float:
        return self.spend_usd / self.budget_usd if self.budget_usd else float("inf")

    @property
    def explanation(self) -> str:
        verb = "exhausted" if self.threshold >= 1.0 else f"{self.threshold:.0%} used"
        return (
            f"{self.period} budget {verb}: ${self.spend_usd:.2f} of ${self.budget_usd:.2f} "
            f"({self.fraction:.0%}) since {self.period_start:%Y-%m-%d %H:%M} UTC"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "period_start": self.period_start.isoformat(),
            "budget_usd": self.budget_usd,
            "spend_usd": self.spend_usd,
            "fraction": self.fraction,
            "threshold": self.threshold,
            "at": self.at.isoformat(),
        }


class BudgetTracker:
    """Spend per period against budgets; a ``SpanExporter`` (see the module docstring)."""

    def __init__(
        self,
        budgets: Mapping[str, float],
        *,
        alert_at: Sequence[float] = (0.8, 1.0),
        on_event: Callable[[BudgetEvent], None] | None = None,
        registry: CollectorRegistry | None = None,
        engine: Engine | None = None,
        now: datetime | None = None,
    ) -> None:
        """
        Args:
            budgets: USD per period: ``{"day": 50, "week": 300, "month": 1000}``.
            alert_at: fractions of a budget that raise an event, once per period each.
            on_event: called with each ``BudgetEvent`` (LLMObs queues it to its alert thread).
            registry: where the gauges go (None: no gauges).
            engine: the store, read once for the current periods' spend so far (None: start at 0).
            now: the current time for that read (LLMObs passes its clock's).
        """
        validate_budgets(budgets)
        self.budgets = {p: float(v) for p, v in budgets.items()}
        self.alert_at = tuple(sorted(float(a) for a in alert_at))
        self.on_event = on_event
        self._lock = threading.Lock()
        self._start: dict[str, datetime | None] = dict.fromkeys(self.budgets)
        self._spend: dict[str, float] = dict.fromkeys(self.budgets, 0.0)
        self._fired: dict[str, set[float]] = {p: set() for p in self.budgets}
        self.events: list[BudgetEvent] = []
        if engine is not None:
            self._load(engine, now or datetime.now(timezone.utc))
        if registry is not None:
            _collector_for(registry).add(self)

    def _load(self, engine: Engine, now: datetime) -> None:
        """Spend already stored in the current periods (a restarted process continues from it)."""
        from .analysis.queries import spend_query

        try:
            with engine.connect() as conn:
                for period in self.budgets:
                    start = period_start(period, now)
                    total = conn.execute(spend_query(start, now + timedelta(microseconds=1))).scalar_one()
                    self._start[period] = start
                    self._spend[period] = float(total or 0.0)
                    # Thresholds already crossed before this process started are not re-announced.
                    self._fired[period] = {
                        a for a in self.alert_at if self._spend[period] >= a * self.budgets[period]
                    }
        except Exception as exc:  # noqa: BLE001 - no table yet / store down: start from zero
            logger.debug("llmobs: could not read stored spend for budgets: %s", exc)

    # -- SpanExporter --

    def export(self, spans: Sequence[SpanRecord]) -> None:
        events: list[BudgetEvent] = []
        with self._lock:
            for span in spans:
                cost = span.cost_usd
                if not cost or cost < 0:
                    continue
                at = datetime.fromtimestamp(span.start_ns / 1e9, tz=timezone.utc)
                for period, budget in self.budgets.items():
                    start = period_start(period, at)
                    current = self._start[period]
                    if current is None or start > current:  # a new period begins
                        self._start[period], self._spend[period], self._fired[period] = start, 0.0, set()
                    elif start < current:  # a late span of a period already over
                        continue
                    self._spend[period] += cost
                    spend = self._spend[period]
                    for threshold in self.alert_at:
                        if spend >= threshold * budget and threshold not in self._fired[period]:
                            self._fired[period].add(threshold)
                            events.append(BudgetEvent(period, start, budget, spend, threshold, at))
            self.events.extend(events)
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    def shutdown(self) -> None:
        pass

    # -- reading --

    def spend(self, period: str) -> float:
        """Spend (USD) of the current ``period`` so far."""
        with self._lock:
            return self._spend[period]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{period: {"budget_usd", "spend_usd", "fraction", "period_start"}}``."""
        with self._lock:
            return {
                p: {
                    "budget_usd": b,
                    "spend_usd": self._spend[p],
                    "fraction": self._spend[p] / b,
                    "period_start": self._start[p],
                }
                for p, b in self.budgets.items()
            }


class _BudgetCollector:
    """The budget gauges of one registry (one collector per registry, any number of trackers)."""

    def __init__(self) -> None:
        self._trackers: weakref.WeakSet[BudgetTracker] = weakref.WeakSet()

    def add(self, tracker: BudgetTracker) -> None:
        self._trackers.add(tracker)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        budget = GaugeMetricFamily(names.BUDGET, "Spend budget in USD per period.", labels=["period"])
        spend = GaugeMetricFamily(
            names.BUDGET_SPEND, "Spend in USD so far in the current budget period.", labels=["period"]
        )
        seen: set[str] = set()
        for tracker in list(self._trackers):
            for period, row in tracker.snapshot().items():
                if period in seen:  # two trackers on one registry: the first one's
                    continue
                seen.add(period)
                budget.add_metric([period], row["budget_usd"])
                spend.add_metric([period], row["spend_usd"])
        return [budget, spend]


_COLLECTORS_LOCK = threading.Lock()


def _collector_for(registry: CollectorRegistry) -> _BudgetCollector:
    with _COLLECTORS_LOCK:
        collector = getattr(registry, "_llmobs_budget_collector", None)
        if collector is None:
            collector = _BudgetCollector()
            registry.register(collector)
            registry._llmobs_budget_collector = collector  # type: ignore[attr-defined]
        return collector
