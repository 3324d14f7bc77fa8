"""``prompt_drift``: a declared prompt version whose template changed without a new version.

``prompt_versions`` lists every template seen under each (prompt_name, prompt_version), keyed by
its hash, with its first and last sighting. A template edited in place under the same declared
version shows up as a hash first seen clearly later than the version's first template
(``RELEASE_GAP``); from then on every comparison "by version" mixes two prompts, so it is raised.

Not drift: templates that the version's requests use together (a chain with two prompts,
LlamaIndex's ``text_qa`` and ``refine``), however late the second first appears. A late template
is drift only if some older template of the version is absent from the first requests that used
the new one (``CO_USE_SAMPLE`` of them, read from ``spans.template_hash``): it replaced that one.

Read once per detection run (:func:`load`), checked for each ``now`` (:func:`detect`); a drift is
reported from the moment the new template appeared until it is established (the anomaly
detector's ``settle_at``), like a new prompt version's metric anomalies.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..sinks.tables import PromptVersionRow
from .queries import SPANS
from .times import parse_time

if TYPE_CHECKING:  # pragma: no cover
    from .anomalies import Anomaly
    from .reader import StoreReader

# Templates first seen this soon after the version's first one belong to its release.
RELEASE_GAP = timedelta(minutes=10)
# Requests of a late template inspected for the older templates they still use with it, taken
# from its first hour.
CO_USE_SAMPLE = 50
CO_USE_HORIZON = timedelta(hours=1)
_SHORT = 8  # hash prefix shown in explanations

PROMPTS = PromptVersionRow.__table__


@dataclass(frozen=True)
class Template:
    """One ``prompt_versions`` row with a template."""

    prompt_name: str
    prompt_version: str
    template_hash: str
    template: str | None
    first_seen: datetime
    last_seen: datetime


@dataclass
class PromptTemplates:
    """What :func:`detect` reads: the templates of versions that have more than one (oldest
    first), and for each late template the hashes its first requests used (itself included)."""

    by_version: dict[tuple[str, str], list[Template]] = field(default_factory=dict)
    used_with: dict[tuple[str, str, str], frozenset[str]] = field(default_factory=dict)


def load(store: StoreReader, start: datetime, end: datetime) -> PromptTemplates:
    """The templates of every version that got a template first seen in ``[start, end)`` besides
    its first, and what the requests of each late one used with it."""
    p = PROMPTS.c
    start, end = start.astimezone(timezone.utc), end.astimezone(timezone.utc)
    templated = p.template_hash != ""
    versions = (
        sa.select(p.prompt_name, p.prompt_version)
        .where(templated)
        .group_by(p.prompt_name, p.prompt_version)
        .having(sa.func.count() > 1, sa.func.max(p.first_seen) >= start)
        .subquery("versions")
    )
    query = (
        sa.select(p.prompt_name, p.prompt_version, p.template_hash, p.template, p.first_seen, p.last_seen)
        .join(
            versions,
            sa.and_(p.prompt_name == versions.c.prompt_name, p.prompt_version == versions.c.prompt_version),
        )
        .where(templated, p.first_seen < end)
    )
    out = PromptTemplates()
    with store.engine.connect() as conn:
        for row in conn.execute(query):
            template = Template(
                row.prompt_name,
                row.prompt_version,
                row.template_hash,
                row.template,
                _utc(row.first_seen),
                _utc(row.last_seen),
            )
            out.by_version.setdefault((template.prompt_name, template.prompt_version), []).append(template)
        for templates in out.by_version.values():
            templates.sort(key=lambda t: (t.first_seen, t.template_hash))
            first = templates[0].first_seen
            for t in templates[1:]:
                if t.first_seen >= start and t.first_seen - first > RELEASE_GAP:
                    key = (t.prompt_name, t.prompt_version, t.template_hash)
                    out.used_with[key] = _used_with(conn, t)
    return out


def _used_with(conn: sa.Connection, t: Template) -> frozenset[str]:
    """The version's template hashes in the first requests that used ``t``."""
    s = SPANS.c
    same_version = (s.prompt_name == t.prompt_name, s.prompt_version == t.prompt_version)
    first_requests = (
        sa.select(s.trace_id)
        .where(
            *same_version,
            s.template_hash == t.template_hash,
            s.start_time >= t.first_seen - timedelta(seconds=1),
            s.start_time < t.first_seen + CO_USE_HORIZON,
        )
        .group_by(s.trace_id)
        .order_by(sa.func.min(s.start_time))
        .limit(CO_USE_SAMPLE)
    )
    query = (
        sa.select(s.template_hash)
        .distinct()
        .where(s.trace_id.in_(first_requests), *same_version, s.template_hash.is_not(None))
    )
    return frozenset(conn.execute(query).scalars())


def detect(
    templates: PromptTemplates, now: datetime, since: datetime, make: Callable[..., Anomaly]
) -> list[Anomaly]:
    """A ``prompt_drift`` anomaly (built by ``make``) for each template that replaced an older one
    of its version and appeared in ``[since, now)``."""
    found = []
    for (name, version), all_templates in sorted(templates.by_version.items()):
        seen = [t for t in all_templates if t.first_seen < now]
        if len(seen) < 2:
            continue
        release = seen[0].first_seen
        for t in seen[1:]:
            if t.first_seen < since or t.first_seen - release <= RELEASE_GAP:
                continue
            used_with = templates.used_with.get((name, version, t.template_hash), frozenset())
            replaced = [o for o in seen if o.first_seen < t.first_seen and o.template_hash not in used_with]
            if replaced:
                found.append(_anomaly(make, _closest(replaced, t), t, now))
    return found


def _closest(candidates: list[Template], new: Template) -> Template:
    """The template ``new`` most likely edits: the most similar text, else the latest one."""
    if new.template is not None and all(c.template is not None for c in candidates):
        return max(
            candidates,
            key=lambda c: (difflib.SequenceMatcher(None, c.template, new.template).ratio(), c.first_seen),
        )
    return max(candidates, key=lambda c: (c.first_seen, c.template_hash))


def _anomaly(make: Callable[..., Anomaly], old: Template, new: Template, now: datetime) -> Anomaly:
    details: dict[str, Any] = {
        "prompt_name": new.prompt_name,
        "prompt_version": new.prompt_version,
        "old_template_hash": old.template_hash,
        "new_template_hash": new.template_hash,
        "old_first_seen": old.first_seen,
        "old_last_seen": old.last_seen,
        "changed_at": new.first_seen,
    }
    change = f"template {old.template_hash[:_SHORT]}… → {new.template_hash[:_SHORT]}…"
    if old.template is not None and new.template is not None:
        added, removed = _diff_size(old.template, new.template)
        details.update(lines_added=added, lines_removed=removed)
        change += f", +{added}/−{removed} lines"
    return make(
        type="prompt_drift",
        severity="warning",
        # the prompt and the new template: what makes two drifts different anomalies
        metric=f"template {new.prompt_name}@{new.template_hash[:12]}",
        current=None,
        baseline=None,
        change=None,
        change_unit="x",
        explanation=f"{new.prompt_name} {new.prompt_version} changed its template at "
        f"{new.first_seen:%Y-%m-%d %H:%M} without a new version ({change})",
        detector="rule",
        prompt_version=new.prompt_version,
        window_start=new.first_seen,
        window_end=now,
        details=details,
    )


def _diff_size(old: str, new: str) -> tuple[int, int]:
    """(lines added, lines removed) from ``old`` to ``new``."""
    added = removed = 0
    for line in difflib.ndiff(old.splitlines(), new.splitlines()):
        if line.startswith("+ "):
            added += 1
        elif line.startswith("- "):
            removed += 1
    return added, removed


def _utc(value: datetime | str) -> datetime:
    converted = parse_time(value)
    assert converted is not None
    return converted
