"""The one parser of times and durations that users type: ``24h``, ``7d``, ``30m``, ISO text.

Every reader (``TraceStore``, ``llmobs report``, anomalies, the gate, alerts, the CLI) goes through
these two functions, so a bound means the same everywhere and a typo gets the same message.
Times are aware UTC datetimes; a naive datetime or ISO text without an offset means UTC.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_EXAMPLES = "e.g. 30m, 24h, 7d or an ISO time such as 2026-01-15T10:00"


def parse_duration(value: str | timedelta) -> timedelta:
    """``"90s"``, ``"30m"``, ``"1h"``, ``"7d"``, ``"2w"`` (or a timedelta) → a positive timedelta;
    anything else raises ``ValueError`` with a one-line message."""
    if isinstance(value, timedelta):
        duration = value
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30m, 1h, 24h, 7d)")
        duration = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    if duration <= timedelta(0):
        raise ValueError(f"a duration must be positive: {value!r}")
    return duration


def parse_time(value: str | datetime | date | None, now: datetime | None = None) -> datetime | None:
    """A time bound → an aware UTC datetime; None stays None.

    ``"24h"`` / ``"7d"`` / ``"30m"`` mean that long before ``now`` (default: the current time),
    ``"now"`` is ``now``; ISO text (``2026-01-15``, ``2026-01-15T10:00:00+02:00``), a datetime
    or a date (midnight UTC) is taken as given. Anything else raises ``ValueError``:
    ``not a time: 'yesterday' (e.g. 30m, 24h, 7d or an ISO time such as 2026-01-15T10:00)``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        reference = now or datetime.now(timezone.utc)
        if text.lower() == "now":
            return _utc(reference)
        if _DURATION.match(text):
            return _utc(reference) - parse_duration(text)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            raise ValueError(f"not a time: {value!r} ({_EXAMPLES})") from None
        return _utc(parsed)
    if isinstance(value, datetime):  # also a pandas Timestamp (a datetime subclass)
        return _utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    raise ValueError(f"not a time: {value!r} ({_EXAMPLES})")


def now_or(value: str | datetime | date | None) -> datetime:
    """``parse_time(value)``, or the current time for None."""
    parsed = parse_time(value)
    return parsed if parsed is not None else datetime.now(timezone.utc)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
