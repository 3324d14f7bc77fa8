"""The judge's daily (UTC) limits: USD spent and calls made, shared through the store.

Today's spend and calls are read from the store's ``kind='judge'`` spans (those of this LLMObs's
``service`` when it has one, else every judge span in the store), so a restarted process and N
worker processes share one cap. The read happens on a judge worker (``admit``), at most every
``refresh_interval_s``; between reads, and for this process's calls whose span is not stored yet
(queued, spooled during an outage), the calls this process made are added from memory. A cap may
be overshot by what other processes spend between two reads plus the calls already under way,
never undercounted by what this process spent.

A judge model without a price (a self-hosted model, an unknown name) has ``cost_usd`` NULL, so a
USD cap cannot bind: it is then limited by calls (``max_calls``, by default
``DEFAULT_UNPRICED_CALLS_PER_DAY`` when only a USD budget was given), and a warning is logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Engine

logger = logging.getLogger("llmobs_callbacks")

DEFAULT_UNPRICED_CALLS_PER_DAY = 1000
_CHUNK = 500


@dataclass
class _Call:
    day: str
    cost_usd: float


def _day(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).date().isoformat()


class JudgeBudget:
    """Today's judge spend and calls against ``limit_usd`` / ``max_calls`` (None: no limit).

    ``admit()`` (a judge worker, before each call) refreshes from the store when due and
    reserves the call; ``add()`` records what it cost; ``exhausted()`` reads only memory
    (the processor thread asks it for every sampled trace). Without a limit nothing is read
    from the store and the totals are this process's.
    """

    def __init__(
        self,
        limit_usd: float | None = None,
        max_calls: int | None = None,
        *,
        refresh_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit_usd is not None and not limit_usd >= 0:
            raise ValueError("budget_usd_per_day must be >= 0")
        if max_calls is not None and (isinstance(max_calls, bool) or not isinstance(max_calls, int)):
            raise ValueError(f"max_calls_per_day must be a whole number of calls, not {max_calls!r}")
        if max_calls is not None and max_calls < 0:
            raise ValueError("max_calls_per_day must be >= 0")
        if not refresh_interval_s >= 0:
            raise ValueError("budget_refresh_s must be >= 0")
        self.limit_usd = limit_usd
        self.max_calls = max_calls
        self.refresh_interval_s = refresh_interval_s
        self.clock = clock
        self.unpriced = False  # a reply without a price was seen: the call cap applies
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._service: str | None = None
        self._stored = _Day("")  # today's judge spans in the store, at the last read
        self._next_read = 0.0  # monotonic time of the next store read
        self._reading = False
        self._reserved = 0  # admitted calls not yet added
        self._unseen: dict[str, _Call] = {}  # this process's calls whose span is not seen stored
        self._memory = _Day("")  # calls counted from memory only (no store, or no limit)

    @property
    def limited(self) -> bool:
        return self.limit_usd is not None or self.max_calls is not None

    @property
    def call_cap(self) -> int | None:
        """The calls allowed per day: ``max_calls``, or the default for an unpriced model."""
        if self.max_calls is not None:
            return self.max_calls
        if self.limit_usd is not None and self.unpriced:
            return DEFAULT_UNPRICED_CALLS_PER_DAY
        return None

    def bind_store(self, engine: Engine | None, service: str | None) -> None:
        """Read today's judge spans from ``engine`` (those of ``service`` when given)."""
        self._engine, self._service = engine, service

    # -- judge worker ---------------------------------------------------------------------------

    def admit(self) -> bool:
        """Reserve one judge call; False when today's budget is spent (refreshing it first
        from the store when the last read is older than ``refresh_interval_s``)."""
        if not self.limited:
            return True
        self.refresh()
        with self._lock:
            if self._exhausted_locked():
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        """An admitted call that was not made."""
        with self._lock:
            self._reserved = max(0, self._reserved - 1)

    def add(self, cost_usd: float | None, *, span_id: str | None = None) -> None:
        """A judge call made (``cost_usd`` None: unknown), ending its ``admit`` reservation.
        ``span_id`` is its judge span: counted from memory until that span is seen stored."""
        call = _Call(_day(self.clock()), cost_usd if cost_usd and cost_usd > 0 else 0.0)
        with self._lock:
            self._reserved = max(0, self._reserved - 1)
            if span_id is not None and self._engine is not None and self.limited:
                self._unseen[span_id] = call
            else:
                if self._memory.day != call.day:
                    self._memory = _Day(call.day)
                self._memory.usd += call.cost_usd
                self._memory.calls += 1

    def refresh(self, force: bool = False) -> None:
        """Read today's stored judge spend and calls, when due (never raises)."""
        engine = self._engine
        if engine is None or not self.limited:
            return
        with self._lock:
            if self._reading or (not force and time.monotonic() < self._next_read):
                return
            self._reading = True
            ids = list(self._unseen)
        now_s = self.clock()
        try:
            seen, usd, calls = self._read(engine, ids, now_s)
        except Exception as exc:  # noqa: BLE001 - the store is down: keep counting from memory
            logger.debug("llmobs judge: could not read today's judge spend: %s", exc)
            seen = None
        with self._lock:
            self._reading = False
            self._next_read = time.monotonic() + self.refresh_interval_s
            today = _day(now_s)
            # Calls never seen stored (a span dropped on the way) are forgotten after a day.
            stale = (datetime.fromisoformat(today) - timedelta(days=1)).date().isoformat()
            for span_id in [k for k, c in self._unseen.items() if c.day < stale]:
                del self._unseen[span_id]
            if seen is None:
                return
            for span_id in seen:
                self._unseen.pop(span_id, None)
            self._stored = _Day(today, usd, calls)

    def _read(self, engine: Engine, ids: list[str], now_s: float) -> tuple[set[str], float, int]:
        import sqlalchemy as sa

        from ..model import SpanKind
        from ..sinks.tables import SpanRow

        c = SpanRow.__table__.c
        start = datetime.fromisoformat(_day(now_s)).replace(tzinfo=timezone.utc)  # today's midnight (UTC)
        scope = [c.kind == SpanKind.JUDGE]
        if self._service is not None:
            scope.append(c.service == self._service)
        seen: set[str] = set()
        with engine.connect() as conn:
            # Which of our calls are stored first, then the sum: a span stored in between is
            # counted twice (harmless), never missed.
            for i in range(0, len(ids), _CHUNK):
                query = sa.select(c.span_id).where(c.span_id.in_(ids[i : i + _CHUNK]), *scope)
                seen.update(conn.execute(query).scalars())
            usd, calls = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(c.cost_usd), 0.0), sa.func.count()).where(
                    *scope, c.start_time >= start, c.start_time < start + timedelta(days=1)
                )
            ).one()
        return seen, float(usd or 0.0), int(calls or 0)

    # -- reading (memory only) ------------------------------------------------------------------

    def exhausted(self) -> bool:
        if not self.limited:
            return False
        with self._lock:
            return self._exhausted_locked()

    def spent_today(self) -> float:
        with self._lock:
            return self._totals_locked()[0]

    def calls_today(self) -> int:
        with self._lock:
            return self._totals_locked()[1]

    def _exhausted_locked(self) -> bool:
        usd, calls = self._totals_locked()
        if self.limit_usd is not None and usd >= self.limit_usd:
            return True
        cap = self.call_cap
        return cap is not None and calls >= cap

    def _totals_locked(self) -> tuple[float, int]:
        today = _day(self.clock())
        usd, calls = 0.0, self._reserved
        for day in (self._stored, self._memory):
            if day.day == today:
                usd, calls = usd + day.usd, calls + day.calls
        # Calls not seen stored count whatever their day: one started just before midnight may
        # be stored under today's date (overcounted at worst, until the next read).
        for call in self._unseen.values():
            usd, calls = usd + call.cost_usd, calls + 1
        return usd, calls


@dataclass
class _Day:
    day: str
    usd: float = 0.0
    calls: int = 0


# The name before the budget was shared through the store (``DailyBudget(limit_usd, clock=...)``).
DailyBudget = JudgeBudget
