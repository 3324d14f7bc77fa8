"""The reads behind the prompt versions page (templates, their traffic, a side-by-side diff) and the
gate form's known versions. No function here writes."""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa

from ..analysis.queries import (
    SCORES,
    SPANS,
    current_score,
    requests_query,
    user_facing,
)
from ..analysis.store import TraceStore
from .data import as_datetime
from .overview_data import NONE, quantile_of, read_rows


@dataclass
class Template:
    template_hash: str
    template: str | None
    first_seen: datetime | None
    last_seen: datetime | None


@dataclass
class PromptVersion:
    name: str
    version: str
    templates: list[Template] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    cost_usd: float | None = None
    p95_ms: float | None = None
    quality: dict[str, float] = field(default_factory=dict)  # score name → mean

    @property
    def first_seen(self) -> datetime | None:
        times = [t.first_seen for t in self.templates if t.first_seen is not None]
        return min(times) if times else None

    @property
    def last_seen(self) -> datetime | None:
        times = [t.last_seen for t in self.templates if t.last_seen is not None]
        return max(times) if times else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def cost_per_request(self) -> float | None:
        return None if self.cost_usd is None or not self.requests else self.cost_usd / self.requests

    @property
    def text(self) -> str:
        """Every template of the version, oldest first (a drifted version has several)."""
        parts = []
        for t in sorted(
            self.templates, key=lambda t: t.first_seen or datetime.min.replace(tzinfo=timezone.utc)
        ):
            if t.template is None:
                continue
            if len(self.templates) > 1:
                parts.append(f"# template {t.template_hash[:12] or '(declared only)'}")
            parts.append(t.template)
        return "\n".join(parts)


def prompt_versions(store: TraceStore) -> dict[str, list[PromptVersion]]:
    """Each prompt name → its versions (from ``prompt_versions`` and the requests): templates,
    first/last seen, requests, errors, cost, p95 latency and score means."""
    pv = sa.table(
        "prompt_versions",
        sa.column("prompt_name"),
        sa.column("prompt_version"),
        sa.column("template_hash"),
        sa.column("template"),
        sa.column("first_seen"),
        sa.column("last_seen"),
    )
    found: dict[tuple[str, str], PromptVersion] = {}
    for r in read_rows(store, sa.select(pv).order_by(pv.c.prompt_name, pv.c.prompt_version, pv.c.first_seen)):
        item = found.setdefault(
            (r.prompt_name, r.prompt_version), PromptVersion(r.prompt_name, r.prompt_version)
        )
        item.templates.append(
            Template(r.template_hash, r.template, as_datetime(r.first_seen), as_datetime(r.last_seen))
        )
    # One pass over the requests that have a version (narrow columns, Arrow), grouped by pandas.
    req = requests_query().order_by(None).subquery("req")
    frame = store._frame(
        sa.select(
            req.c.trace_id,
            sa.func.coalesce(req.c.prompt_name, NONE).label("prompt_name"),
            req.c.prompt_version,
            sa.case((req.c.status == "error", 1), else_=0).label("error"),
            req.c.latency_ms,
            req.c.cost_usd,
            req.c.start_time,
        ).where(req.c.prompt_version.is_not(None)),
        ("start_time",),
    )
    if not frame.empty:
        frame["latency_ms"] = frame["latency_ms"].astype("float64")
        frame["cost_usd"] = frame["cost_usd"].astype("float64")
        frame["error"] = frame["error"].astype("int64")
        frame["trace_id"] = frame["trace_id"].astype(str)
        for (name, version), g in frame.groupby(["prompt_name", "prompt_version"]):
            key = (str(name), str(version))
            item = found.setdefault(key, PromptVersion(*key))
            item.requests, item.errors = len(g), int(g["error"].sum())
            item.cost_usd = float(g["cost_usd"].sum()) if g["cost_usd"].notna().any() else None
            item.p95_ms = quantile_of(g["latency_ms"].dropna(), 0.95)
            if not item.templates:  # a version declared in metadata only
                first, last = as_datetime(g["start_time"].min()), as_datetime(g["start_time"].max())
                item.templates.append(Template("", None, first, last))
        c = SCORES.c
        scores = store._frame(
            sa.select(c.trace_id, c.name, c.value).where(c.value.is_not(None), current_score())
        )
        if not scores.empty:
            scores["trace_id"] = scores["trace_id"].astype(str)
            scores["value"] = scores["value"].astype("float64")
            joined = scores.merge(frame[["trace_id", "prompt_name", "prompt_version"]], on="trace_id")
            means = joined.groupby(["prompt_name", "prompt_version", "name"])["value"].mean()
            for (name, version, score), mean in means.items():
                key = (str(name), str(version))
                if key in found:
                    found[key].quality[str(score)] = float(mean)
    out: dict[str, list[PromptVersion]] = defaultdict(list)
    for (name, _), item in sorted(found.items()):
        out[name].append(item)
    return dict(out)


@dataclass
class DiffLine:
    tag: str  # equal / replace / delete / insert
    left_no: int | None
    left: str | None
    right_no: int | None
    right: str | None


def side_by_side(left: str, right: str) -> list[DiffLine]:
    """Two texts line by line (difflib): equal lines side by side, changed ones paired, deleted
    ones only left, inserted ones only right. The templates escape the text."""
    a, b = left.splitlines(), right.splitlines()
    out: list[DiffLine] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            out += [
                DiffLine("equal", i + 1, a[i], j + 1, b[j])
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            ]
            continue
        n = max(i2 - i1, j2 - j1)
        for k in range(n):
            i, j = i1 + k, j1 + k
            out.append(
                DiffLine(
                    tag if (i < i2 and j < j2) else ("delete" if i < i2 else "insert"),
                    i + 1 if i < i2 else None,
                    a[i] if i < i2 else None,
                    j + 1 if j < j2 else None,
                    b[j] if j < j2 else None,
                )
            )
    return out


def known_versions(store: TraceStore, exact: bool = False) -> list[str]:
    """Prompt versions the gate can compare. By default the ``prompt_versions`` catalog (every
    version the handler saw, declared or with a template: a few rows), else, for a store written
    without it, the versions on roots and LLM calls; ``exact=True``: the versions of requests
    (``requests_query``: a pass over every request)."""
    if exact:
        req = requests_query().order_by(None).subquery("req")
        query = sa.select(req.c.prompt_version).where(req.c.prompt_version.is_not(None)).distinct()
        return sorted(str(r.prompt_version) for r in read_rows(store, query))
    catalog = sa.table("prompt_versions", sa.column("prompt_version"))
    listed = {str(r.prompt_version) for r in read_rows(store, sa.select(catalog.c.prompt_version).distinct())}
    if listed:
        return sorted(listed)
    s = SPANS.c
    roots = sa.select(s.prompt_version).where(
        s.parent_span_id.is_(None), user_facing(s.internal), s.prompt_version.is_not(None)
    )
    calls = sa.select(s.prompt_version).where(
        s.kind == sa.literal_column("'llm'"), s.prompt_version.is_not(None)
    )
    return sorted({str(r.prompt_version) for r in read_rows(store, sa.union(roots, calls))})
