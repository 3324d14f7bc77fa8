"""``llmobs judge``: score stored traces after the fact (backfill, or a new rubric)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..model import STATUS_ERROR, SpanKind
from ..sinks.tables import RetrievedDocumentRow, ScoreRow, SpanRow
from .evaluator import Evaluation, JudgeTask, _plain
from .sampler import sample_fraction

_S, _D, _SC = SpanRow.__table__.c, RetrievedDocumentRow.__table__.c, ScoreRow.__table__.c


def stored_tasks(
    engine: Engine,
    *,
    since: datetime | None = None,
    sample: float = 1.0,
    prompt_version: str | None = None,
    metric_names: Sequence[str] = (),
    force: bool = False,
) -> tuple[list[JudgeTask], int]:
    """Finished root traces to judge (sampled by trace id), and how many were skipped because
    they already have judge scores for these metrics (resumable; ``force`` re-judges)."""
    query = sa.select(_S.trace_id, _S.span_id, _S.input, _S.output, _S.prompt_version, _S.status).where(
        _S.parent_span_id.is_(None), _S.kind != SpanKind.JUDGE, _S.end_time.is_not(None)
    )
    if since is not None:
        query = query.where(_S.start_time >= since)
    if prompt_version is not None:
        query = query.where(_S.prompt_version == prompt_version)
    query = query.order_by(_S.start_time, _S.trace_id)
    tasks: list[JudgeTask] = []
    skipped = 0
    with engine.connect() as conn:
        roots = [r for r in conn.execute(query) if sample_fraction(r.trace_id) < sample]
        for i in range(0, len(roots), 500):
            chunk = roots[i : i + 500]
            ids = [r.trace_id for r in chunk]
            judged: set[str] = set()
            if not force and metric_names:
                rows = conn.execute(
                    sa.select(_SC.trace_id, _SC.name)
                    .where(_SC.source == "judge", _SC.trace_id.in_(ids), _SC.name.in_(list(metric_names)))
                    .distinct()
                )
                names: dict[str, set[str]] = defaultdict(set)
                for trace_id, name in rows:
                    names[trace_id].add(name)
                judged = {t for t, n in names.items() if n >= set(metric_names)}
            docs: dict[str, list[str]] = defaultdict(list)
            doc_query = (
                sa.select(_D.trace_id, _D.content)
                .where(_D.trace_id.in_(ids))
                .order_by(_D.trace_id, _D.span_id, _D.rank)
            )
            for trace_id, content in conn.execute(doc_query):
                if content:
                    docs[trace_id].append(content)
            for r in chunk:
                if r.trace_id in judged:
                    skipped += 1
                    continue
                tasks.append(
                    JudgeTask(
                        trace_id=r.trace_id,
                        question=_plain(r.input),
                        answer=_plain(r.output),
                        context=docs.get(r.trace_id, []),
                        prompt_version=r.prompt_version,
                        root_span_id=r.span_id,
                        is_error=r.status == STATUS_ERROR,
                    )
                )
    return tasks, skipped


def summary_table(results: Sequence[Evaluation], metric_names: Sequence[str]) -> str:
    """One line per prompt version: evaluations by status, mean score per metric, cost."""
    groups: dict[str, list[Evaluation]] = defaultdict(list)
    for ev in results:
        groups[ev.prompt_version or "(none)"].append(ev)
    header = ["prompt_version", "judged", "ok", "invalid", "error", "budget", *metric_names, "cost_usd"]
    lines = [header]
    for version in sorted(groups):
        evs = groups[version]
        by_status = defaultdict(int)
        for ev in evs:
            by_status[ev.status] += 1
        row = [
            version,
            str(len(evs)),
            *(str(by_status[s]) for s in ("ok", "invalid", "error", "budget_exhausted")),
        ]
        for name in metric_names:
            values = [s.value for ev in evs for s in ev.scores if s.name == name]
            row.append(f"{sum(values) / len(values):.2f}" if values else "-")
        cost = sum(ev.cost_usd or 0.0 for ev in evs)
        row.append(f"{cost:.6f}")
        lines.append(row)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)
