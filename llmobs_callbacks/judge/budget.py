"""A daily (UTC) spending limit for the judge's own LLM calls."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone


class DailyBudget:
    """Sums the cost of judge calls per UTC day; ``exhausted()`` once the limit is reached.

    ``limit_usd=None`` means no limit. Calls whose cost is unknown (unpriced model) add 0.
    """

    def __init__(self, limit_usd: float | None, clock: object = time.time) -> None:
        if limit_usd is not None and limit_usd < 0:
            raise ValueError("budget_usd_per_day must be >= 0")
        self.limit_usd = limit_usd
        self._clock = clock
        self._lock = threading.Lock()
        self._day: str | None = None
        self._spent = 0.0

    def _today(self) -> str:
        return datetime.fromtimestamp(self._clock(), tz=timezone.utc).date().isoformat()  # type: ignore[operator]

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:
            self._day, self._spent = today, 0.0

    def add(self, cost_usd: float | None) -> None:
        with self._lock:
            self._roll()
            if cost_usd:
                self._spent += cost_usd

    def spent_today(self) -> float:
        with self._lock:
            self._roll()
            return self._spent

    def exhausted(self) -> bool:
        if self.limit_usd is None:
            return False
        return self.spent_today() >= self.limit_usd
