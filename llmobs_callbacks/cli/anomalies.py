"""``llmobs anomalies``: the last --window against the --baseline before it (for people and cron)."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
from collections.abc import Sequence
from enum import Enum
from typing import Annotated, Any

import typer
from rich.text import Text

from .errors import UserError, os_error
from .output import console
from .report import IncludeInternal
from .stores import DatabaseUrl, require_extra, trace_store


class Severity(str, Enum):
    info = "info"
    warning = "warning"
    critical = "critical"


def threshold_overrides(pairs: Sequence[str]) -> dict[str, float]:
    """``--set NAME=VALUE`` pairs as ``AnomalyThresholds`` fields."""
    from ..analysis.anomalies import AnomalyThresholds

    known = AnomalyThresholds.names()
    out: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        try:
            if name not in known:
                raise ValueError
            out[name] = float(value)
        except ValueError:
            raise UserError(f"--set {pair!r}: expected NAME=NUMBER, NAME one of {', '.join(known)}") from None
    return out


def anomalies(
    database_url: DatabaseUrl = None,
    now: Annotated[
        str | None, typer.Option(metavar="TIME", help="end of the window: an ISO time (default: now)")
    ] = None,
    window: Annotated[str, typer.Option(metavar="DURATION", help="the current window")] = "1h",
    baseline: Annotated[str, typer.Option(metavar="DURATION", help="the baseline before it")] = "24h",
    json_output: Annotated[bool, typer.Option("--json", help="print the anomalies as JSON")] = False,
    include_internal: IncludeInternal = False,
    fail_on_anomaly: Annotated[
        bool, typer.Option("--fail-on-anomaly", help="exit 1 on an anomaly at or above --min-severity")
    ] = False,
    min_severity: Annotated[
        Severity, typer.Option(help="what --fail-on-anomaly and --webhook count")
    ] = Severity.warning,
    type: Annotated[
        list[str] | None, typer.Option("--type", metavar="TYPE", help="only this type (repeatable)")
    ] = None,
    set: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=VALUE",
            help="change a threshold of AnomalyThresholds, e.g. --set token_spike_factor=2 (repeatable)",
        ),
    ] = None,
    webhook: Annotated[
        str | None, typer.Option(metavar="URL", help="POST anomalies to this URL (Slack-compatible)")
    ] = None,
    state: Annotated[
        str | None, typer.Option(metavar="FILE", help="JSON file de-duplicating webhook posts across runs")
    ] = None,
    repeat_after: Annotated[
        str, typer.Option(metavar="DURATION", help="post an ongoing anomaly again after this long")
    ] = "6h",
) -> int:
    """Detect anomalies: token, cost and latency spikes, error rates, tool failures, empty
    retrievals, branch shifts, quality drops and new prompt versions, per prompt version and
    model. For cron: --fail-on-anomaly exits 1 when an anomaly at or above --min-severity is
    found; --webhook posts them (Slack-compatible JSON), --state FILE remembers what was sent so
    each anomaly is posted once (again after --repeat-after)."""
    require_extra("pandas and scipy", ("pandas", "scipy"), "analysis")
    from dataclasses import replace

    from ..analysis.anomalies import SEVERITIES, AnomalyThresholds, format_anomalies

    thresholds = replace(AnomalyThresholds(), **threshold_overrides(set or []))  # type: ignore[arg-type]
    with trace_store(database_url) as store:
        try:
            found = store.anomalies(
                now=now,
                window=window,
                baseline=baseline,
                thresholds=thresholds,
                types=type or None,
                include_internal=include_internal,
            )
        except ValueError as exc:  # a bad --window, --now or --type
            raise UserError(str(exc)) from exc
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    alerting = [a for a in found if rank[a.severity] >= rank[min_severity.value]]
    if json_output:
        print(json.dumps([a.as_dict() for a in found], indent=2))
    else:
        console().print(Text(format_anomalies(found)))
    if webhook:
        send_anomalies(webhook, state, repeat_after, now, alerting)
    return 1 if fail_on_anomaly and alerting else 0


def send_anomalies(
    webhook: str, state: str | None, repeat_after: str, now: str | None, found: list[Any]
) -> None:
    """Post new anomalies to --webhook; --state FILE keeps what was sent between cron runs (saved
    after the post, so a failed post is tried again by the next run)."""
    from ..alerts import Deduplicator, WebhookNotifier, anomaly_alert
    from ..analysis.times import now_or, parse_duration

    try:
        at = now_or(now)
        dedup = Deduplicator.load(state, parse_duration(repeat_after)) if state else None
    except ValueError as exc:  # a bad --repeat-after, or a state file that is not JSON
        raise UserError(f"{exc}" if not state else f"--state {state} / --repeat-after: {exc}") from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"--state {state}: not a state file this command wrote ({exc!r})") from exc
    except OSError as exc:
        raise os_error(f"read the state file {state}", exc) from exc
    if dedup is not None:
        alerts, _ = dedup.filter(found, at)
    else:
        alerts = [anomaly_alert(a, at) for a in found]
    if alerts:
        where = webhook_host(webhook)  # a webhook's path is often its secret: never printed
        try:
            WebhookNotifier(webhook).send(alerts)
        except ValueError as exc:  # not an http(s) URL
            raise UserError(f"--webhook: not a URL ({exc})") from exc
        except urllib.error.HTTPError as exc:
            raise UserError(f"the webhook at {where} answered HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise UserError(f"cannot post to the webhook at {where}: {exc.reason}") from exc
        except OSError as exc:
            raise UserError(f"cannot post to the webhook at {where}: {exc}") from exc
    if dedup is not None and state:
        try:
            dedup.save(state)
        except OSError as exc:
            raise os_error(f"write the state file {state}", exc) from exc
    print(f"sent {len(alerts)} alert(s) to the webhook", file=sys.stderr)


def webhook_host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" if parts.hostname else "the given URL"


def register(app: typer.Typer) -> None:
    app.command("anomalies", short_help="spikes, error rates, drifts: the last hour vs before")(anomalies)
