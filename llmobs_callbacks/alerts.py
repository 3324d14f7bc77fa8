"""Alert delivery: notifiers, de-duplication and the in-process anomaly checker.

``obs.alerts(notify=[WebhookNotifier(url), LoggingNotifier(), my_function])`` returns the
:class:`AlertManager` of an ``LLMObs``; ``manager.check()`` runs the anomaly detectors on the
store and sends what is new. ``LLMObs(anomaly_check_every="5m")`` runs that check on a daemon
thread; ``llmobs anomalies`` is the same check for cron. Budget alerts (``budget.py``) go through
the same notifiers.

Delivery never runs on the caller's or the span processor's thread: alerts are queued to one
delivery thread; a failing notifier is logged and counted (``manager.stats()``), never raised.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .analysis.anomalies import SEVERITIES, Anomaly, AnomalyThresholds
from .analysis.times import parse_duration

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Engine

    from .budget import BudgetEvent

logger = logging.getLogger("llmobs_callbacks.alerts")


@dataclass
class Alert:
    """One notification: an anomaly (new, escalated or repeated), a resolved anomaly, or a
    budget threshold crossed. ``text`` is a one-line summary."""

    kind: str  # "anomaly", "resolved" or "budget"
    severity: str  # info / warning / critical
    title: str
    text: str
    at: datetime
    fingerprint: str
    anomaly: Anomaly | None = None
    budget: BudgetEvent | None = None
    repeat: bool = False  # the same anomaly sent again after ``repeat_after``

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "text": self.text,
            "at": self.at.isoformat(),
            "fingerprint": self.fingerprint,
            "repeat": self.repeat,
        }
        if self.anomaly is not None:
            out["anomaly"] = self.anomaly.as_dict()
        if self.budget is not None:
            out["budget"] = self.budget.as_dict()
        return out


_ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def slack_payload(alerts: Sequence[Alert], *, details: bool = True, source: str = "llmobs") -> dict[str, Any]:
    """A Slack-compatible incoming-webhook body: ``text`` (mrkdwn, one line per alert); with
    ``details`` also ``llmobs``: every alert as structured data, for non-Slack receivers."""
    lines = [f"*{source}*: {len(alerts)} alert(s)"] if len(alerts) > 1 else []
    for a in alerts:
        prefix = "resolved" if a.kind == "resolved" else a.severity.upper()
        lines.append(f"{_ICONS.get(a.severity, '')} *{prefix}* {a.title}: {a.text}".strip())
    body: dict[str, Any] = {"text": "\n".join(lines)}
    if details:
        body["llmobs"] = {"source": source, "alerts": [a.as_dict() for a in alerts]}
    return body


@runtime_checkable
class Notifier(Protocol):
    """Anything with ``send(alerts)``; plain callables are wrapped in :class:`CallableNotifier`."""

    def send(self, alerts: Sequence[Alert]) -> None: ...


class WebhookNotifier:
    """POST a Slack-compatible JSON body (see :func:`slack_payload`) to ``url``: one request per
    batch of alerts, retried ``retries`` times with backoff on network errors and 5xx/429."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        headers: dict[str, str] | None = None,
        details: bool = True,
        source: str = "llmobs",
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.details = details
        self.source = source

    def send(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        body = json.dumps(slack_payload(alerts, details=self.details, source=self.source)).encode()
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                if (exc.code < 500 and exc.code != 429) or attempt == self.retries:
                    raise
            except (urllib.error.URLError, OSError):
                if attempt == self.retries:
                    raise
            time.sleep(self.backoff_s * (2**attempt))

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url!r})"


class LoggingNotifier:
    """Log each alert on ``logger`` (default ``llmobs_callbacks.alerts``): critical alerts at
    ERROR, warnings at WARNING, info and resolved at INFO."""

    LEVELS: ClassVar[dict[str, int]] = {
        "critical": logging.ERROR,
        "warning": logging.WARNING,
        "info": logging.INFO,
    }

    def __init__(self, logger_: logging.Logger | None = None) -> None:
        self.logger = logger_ or logger

    def send(self, alerts: Sequence[Alert]) -> None:
        for a in alerts:
            level = logging.INFO if a.kind == "resolved" else self.LEVELS.get(a.severity, logging.WARNING)
            self.logger.log(level, "llmobs %s %s: %s", a.kind, a.title, a.text)


class CallableNotifier:
    """Call ``fn(alert)`` for each alert."""

    def __init__(self, fn: Callable[[Alert], Any]) -> None:
        self.fn = fn

    def send(self, alerts: Sequence[Alert]) -> None:
        for a in alerts:
            self.fn(a)


def as_notifier(value: Notifier | Callable[[Alert], Any]) -> Notifier:
    if isinstance(value, Notifier):
        return value
    if callable(value):
        return CallableNotifier(value)
    raise TypeError(f"not a notifier: {value!r} (use an object with send(alerts) or a callable)")


# -- de-duplication ---------------------------------------------------------------------------------


@dataclass
class _Active:
    severity: str
    first_at: datetime
    last_sent: datetime
    anomaly: Anomaly | None
    explanation: str = ""


@dataclass
class Deduplicator:
    """Which anomalies to send: new ones, ones whose severity rose, and still-active ones once
    ``repeat_after`` has passed since they were last sent (``None``: never repeat). Anomalies
    that are no longer found are forgotten (and reported as resolved when asked)."""

    repeat_after: timedelta | None = timedelta(hours=6)
    active: dict[str, _Active] = field(default_factory=dict)

    def filter(self, anomalies: Iterable[Anomaly], now: datetime) -> tuple[list[Alert], list[Alert]]:
        """(alerts to send, resolved alerts) for the anomalies of one check at ``now``."""
        rank = {s: i for i, s in enumerate(SEVERITIES)}
        send: list[Alert] = []
        seen = set()
        for a in anomalies:
            key = a.fingerprint
            seen.add(key)
            state = self.active.get(key)
            repeat = False
            if state is not None:
                escalated = rank[a.severity] > rank[state.severity]
                due = self.repeat_after is not None and now - state.last_sent >= self.repeat_after
                if not (escalated or due):
                    state.anomaly = a
                    continue
                repeat = not escalated
            send.append(anomaly_alert(a, now, repeat=repeat))
            first = state.first_at if state is not None else now
            self.active[key] = _Active(a.severity, first, now, a)
        resolved = []
        for key in [k for k in self.active if k not in seen]:
            state = self.active.pop(key)
            a = state.anomaly
            title = _title(a) if a is not None else key.split("|", 1)[0]
            explanation = a.explanation if a is not None else state.explanation
            resolved.append(
                Alert("resolved", state.severity, title, f"no longer detected ({explanation})", now, key, a)
            )
        return send, resolved

    def save(self, path: str) -> None:
        """Write the active anomalies (fingerprint, severity, times) to a JSON file."""
        state = {
            key: {
                "severity": a.severity,
                "first_at": a.first_at.isoformat(),
                "last_sent": a.last_sent.isoformat(),
                "explanation": a.anomaly.explanation if a.anomaly is not None else "",
            }
            for key, a in self.active.items()
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2)

    @classmethod
    def load(cls, path: str, repeat_after: timedelta | None) -> Deduplicator:
        """A de-duplicator with the state ``save`` wrote (empty when the file does not exist)."""
        dedup = cls(repeat_after)
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return dedup
        for key, row in state.items():
            dedup.active[key] = _Active(
                row["severity"],
                datetime.fromisoformat(row["first_at"]),
                datetime.fromisoformat(row["last_sent"]),
                None,
                row.get("explanation", ""),
            )
        return dedup


def _title(a: Anomaly) -> str:
    return f"{a.type} {a.group}".strip()


def anomaly_alert(a: Anomaly, at: datetime, repeat: bool = False) -> Alert:
    return Alert("anomaly", a.severity, _title(a), a.explanation, at, a.fingerprint, a, repeat=repeat)


# -- delivery --------------------------------------------------------------------------------------


class _Dispatcher:
    """One daemon thread delivering queued alert batches to the notifiers."""

    def __init__(self, manager: AlertManager) -> None:
        self._manager = manager
        self._queue: queue.Queue[list[Alert] | None] = queue.Queue(maxsize=1000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, alerts: list[Alert]) -> bool:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llmobs-alerts", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(alerts)
            return True
        except queue.Full:
            return False

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                self._manager.deliver(batch)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float) -> bool:
        with self._lock:
            thread = self._thread
        if thread is None:
            return True
        ok = self.flush(timeout)
        self._queue.put(None)
        thread.join(timeout)
        return ok


class AlertManager:
    """Runs the anomaly detectors on a store and sends what is new to the notifiers.

    >>> manager = obs.alerts(notify=[WebhookNotifier("https://hooks.slack.com/services/…")])
    >>> manager.check()          # detect now; returns the anomalies found  # doctest: +SKIP
    """

    def __init__(
        self,
        store: str | Engine,
        notify: Iterable[Notifier | Callable[[Alert], Any]] | None = None,
        *,
        window: str | timedelta = "1h",
        baseline: str | timedelta = "24h",
        thresholds: AnomalyThresholds | None = None,
        repeat_after: str | timedelta | None = "6h",
        min_severity: str = "warning",
        notify_resolved: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store_source = store
        self._store: Any = None
        self.notifiers: list[Notifier] = [as_notifier(n) for n in (notify or [LoggingNotifier()])]
        self.budget_callbacks: list[Callable[[BudgetEvent], Any]] = []  # LLMObs(on_budget=...)
        self.configure(
            window=window,
            baseline=baseline,
            thresholds=thresholds,
            repeat_after=repeat_after,
            min_severity=min_severity,
            notify_resolved=notify_resolved,
        )
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.dedup = Deduplicator(self.repeat_after)
        self._dispatcher = _Dispatcher(self)
        self._lock = threading.Lock()
        self._stats = {"checks": 0, "check_errors": 0, "alerts_sent": 0, "notify_errors": 0, "dropped": 0}
        self._stop = threading.Event()
        self._checker: threading.Thread | None = None
        self.last_anomalies: list[Anomaly] = []

    def configure(
        self,
        *,
        window: str | timedelta | None = None,
        baseline: str | timedelta | None = None,
        thresholds: AnomalyThresholds | None = None,
        repeat_after: str | timedelta | bool | None = False,
        min_severity: str | None = None,
        notify_resolved: bool | None = None,
    ) -> None:
        """Change settings (``False`` / ``None`` keep the current value, except ``repeat_after=None``,
        which means "never repeat")."""
        if window is not None:
            self.window = parse_duration(window)
        if baseline is not None:
            self.baseline = parse_duration(baseline)
        if thresholds is not None or not hasattr(self, "thresholds"):
            self.thresholds = thresholds or AnomalyThresholds()
        if repeat_after is not False:
            self.repeat_after = None if repeat_after is None else parse_duration(repeat_after)  # type: ignore[arg-type]
            if hasattr(self, "dedup"):
                self.dedup.repeat_after = self.repeat_after
        if min_severity is not None:
            if min_severity not in SEVERITIES:
                raise ValueError(f"min_severity must be one of {SEVERITIES}")
            self.min_severity = min_severity
        if notify_resolved is not None:
            self.notify_resolved = notify_resolved

    # -- store --

    def _trace_store(self) -> Any:
        if self._store is None:
            from .analysis.store import TraceStore

            self._store = TraceStore(self._store_source)
        return self._store

    # -- checks --

    def check(self, now: datetime | None = None) -> list[Anomaly]:
        """Detect anomalies at ``now`` (default: the clock's time), queue alerts for what is new
        (de-duplicated, at or above ``min_severity``), and return every anomaly found."""
        from .analysis.anomalies import detect_anomalies

        moment = now or self.clock()
        anomalies = detect_anomalies(
            self._trace_store(),
            now=moment,
            window=self.window,
            baseline=self.baseline,
            thresholds=self.thresholds,
        )
        rank = {s: i for i, s in enumerate(SEVERITIES)}
        wanted = [a for a in anomalies if rank[a.severity] >= rank[self.min_severity]]
        with self._lock:
            self._stats["checks"] += 1
            send, resolved = self.dedup.filter(wanted, moment)
            self.last_anomalies = anomalies
        if self.notify_resolved:
            send += resolved
        if send:
            self.submit(send)
        return anomalies

    def submit(self, alerts: list[Alert]) -> None:
        """Queue alerts for delivery on the delivery thread (never blocks)."""
        if not self._dispatcher.submit(alerts):
            with self._lock:
                self._stats["dropped"] += len(alerts)
            logger.warning("llmobs: alert queue full, %d alert(s) dropped", len(alerts))

    def budget_alert(self, event: BudgetEvent) -> None:
        """Send a budget threshold crossing (called by the budget tracker)."""
        severity = "critical" if event.threshold >= 1.0 else "warning"
        alert = Alert(
            "budget",
            severity,
            f"budget {event.period}",
            event.explanation,
            event.at,
            f"budget|{event.period}|{event.threshold:g}|{event.period_start.isoformat()}",
            budget=event,
        )
        self.submit([alert])

    def deliver(self, alerts: Sequence[Alert]) -> None:
        """Send to every notifier now, on this thread; errors are logged and counted."""
        for alert in alerts:
            if alert.budget is None:
                continue
            for callback in list(self.budget_callbacks):
                try:
                    callback(alert.budget)
                except Exception as exc:  # noqa: BLE001 - the user's callback must not stop delivery
                    with self._lock:
                        self._stats["notify_errors"] += 1
                    logger.warning("llmobs: on_budget callback failed: %s: %s", type(exc).__name__, exc)
        for notifier in list(self.notifiers):
            try:
                notifier.send(alerts)
                with self._lock:
                    self._stats["alerts_sent"] += len(alerts)
            except Exception as exc:  # noqa: BLE001 - one broken notifier must not stop the others
                with self._lock:
                    self._stats["notify_errors"] += 1
                logger.warning("llmobs: notifier %r failed: %s: %s", notifier, type(exc).__name__, exc)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert has been delivered (or failed)."""
        return self._dispatcher.flush(timeout)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    # -- background checker --

    def start(self, every: str | timedelta | float) -> None:
        """Run ``check()`` every ``every`` (``"5m"``, a timedelta or seconds) on a daemon thread."""
        interval = every if isinstance(every, (int, float)) else parse_duration(every).total_seconds()
        if interval <= 0:
            raise ValueError("the check interval must be positive")
        with self._lock:
            if self._checker is not None:
                return
            self._stop.clear()
            self._checker = threading.Thread(
                target=self._loop, args=(float(interval),), name="llmobs-anomaly-checker", daemon=True
            )
            self._checker.start()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not kill the checker
                with self._lock:
                    self._stats["check_errors"] += 1
                logger.warning("llmobs: anomaly check failed: %s: %s", type(exc).__name__, exc)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the checker, deliver what is queued, release the store."""
        self._stop.set()
        with self._lock:
            checker, self._checker = self._checker, None
        if checker is not None:
            checker.join(timeout)
        ok = self._dispatcher.close(timeout)
        if self._store is not None:
            self._store.close()
            self._store = None
        return ok
