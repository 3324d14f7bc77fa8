"""``llmobs judge``: score stored traces with an LLM judge (backfill, or a new rubric).

Exit codes: 0 when at least one evaluation succeeded (or there was nothing to judge); 1 when
every evaluation failed (the model raised, or none of its answers could be parsed); 2 for a
mistake in the command (a missing store, a bad option). Failed evaluations are listed by reason.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .errors import UserError
from .output import progress_bar
from .stores import DatabaseUrl, require_existing, require_extra, store_url, translated

if TYPE_CHECKING:
    from ..judge.evaluator import Evaluation

FAILED = ("error", "invalid")  # Evaluation.status of an evaluation that gave no scores
REASON_CHARS = 300


def judge(
    database_url: DatabaseUrl = None,
    since: Annotated[str, typer.Option(metavar="TIME", help="time window: 24h, 7d or an ISO time")] = "24h",
    sample: Annotated[float, typer.Option(help="share of traces to judge")] = 1.0,
    prompt_version: Annotated[
        str | None, typer.Option(metavar="VERSION", help="only traces of this prompt version")
    ] = None,
    metrics: Annotated[
        str, typer.Option(metavar="NAMES", help="comma-separated metric names")
    ] = "faithfulness,relevance,completeness,hallucination",
    model: Annotated[str, typer.Option(metavar="MODEL", help="judge model")] = "gpt-4o-mini",
    base_url: Annotated[
        str | None, typer.Option(metavar="URL", help="OpenAI-compatible API base URL ($OPENAI_BASE_URL)")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(metavar="KEY", help="API key (default $OPENAI_API_KEY)")
    ] = None,
    budget: Annotated[float | None, typer.Option(help="stop judging after this many USD")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="parallel judge calls")] = 4,
    max_retries: Annotated[int, typer.Option(min=0, help="retries per judge call")] = 2,
    timeout: Annotated[float, typer.Option(help="seconds per judge call")] = 60.0,
    force: Annotated[
        bool, typer.Option("--force", help="judge traces that already have judge scores")
    ] = False,
    rules_only: Annotated[bool, typer.Option("--rules-only", help="store rule scores only (no LLM)")] = False,
) -> int:
    """Judge finished traces stored in the store (question = root input, answer = root output,
    context = the trace's retrieved documents) with an OpenAI-compatible chat model through
    langchain-openai (--model, --base-url, --api-key or $OPENAI_API_KEY / $OPENAI_BASE_URL).
    Sampling is by trace id, as in the live judge; traces that already have judge scores for the
    metrics are skipped (resumable). Scores go to the scores table, the judge's calls are stored
    as kind='judge' spans. Exits 1 when every evaluation failed; their reasons are listed."""
    from ..analysis.times import parse_time
    from ..judge import Judge
    from ..judge.backfill import stored_tasks, summary_table
    from ..obs import LLMObs

    url = store_url(database_url)
    require_existing(url)
    try:
        since_time = parse_time(since)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if not 0.0 <= sample <= 1.0:
        raise UserError(f"--sample {sample:g}: expected a share between 0 and 1")
    llm = None if rules_only else judge_model(model, base_url, api_key, max_retries, timeout)
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    try:
        evaluator = Judge(llm, sample_rate=0.0, metrics=names, budget_usd_per_day=budget, rules=rules_only)
    except (ValueError, KeyError) as exc:  # an unknown metric name, a bad budget
        raise UserError(f"--metrics / --budget: {exc}") from exc
    names = (
        [m.name for m in evaluator.rubric.metrics]
        if llm is not None
        else ["empty_answer", "grounded", "refusal"]
    )
    try:
        obs = LLMObs(url, prometheus_registry=None, judge=evaluator)
    except Exception as exc:
        cause = exc.__cause__ if type(exc).__name__ == "ConfigurationError" and exc.__cause__ else exc
        raise translated(cause, url) from exc
    with obs:
        tasks, skipped = stored_tasks(
            obs.sql.engine,
            since=since_time,
            sample=sample,
            prompt_version=prompt_version,
            metric_names=[] if llm is None else names,
            force=force,
        )
        print(f"{len(tasks)} trace(s) to judge, {skipped} already judged (skipped)", file=sys.stderr)
        results: list[Evaluation] = []
        with (
            progress_bar("judging", "traces", disabled=not tasks) as advance,
            ThreadPoolExecutor(max_workers=concurrency) as pool,
        ):
            for evaluation in pool.map(evaluator.evaluate, tasks):
                results.append(evaluation)
                if advance is not None:
                    advance(len(results), len(tasks))
        obs.flush(timeout=60.0)
    print(summary_table(results, names) if results else "nothing to judge")
    failed = [ev for ev in results if ev.status in FAILED]
    for line in failure_lines(failed, len(results)):
        print(line, file=sys.stderr)
    return 1 if results and len(failed) == len(results) else 0


def judge_model(
    model: str, base_url: str | None, api_key: str | None, max_retries: int, timeout: float
) -> Any:
    require_extra("langchain-openai", ("langchain_openai",), "langchain-openai")
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model,
        base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-set",
        temperature=0,
        max_retries=max_retries,
        timeout=timeout,
    )


def failure_reason(evaluation: Evaluation) -> str:
    """What went wrong, on one line: the exception (``Type: message``) or why the answer was
    not understood."""
    reason = " ".join((evaluation.reason or "no reason recorded").split())
    if evaluation.status == "invalid":
        reason = f"unparseable answer: {reason}"
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS] + "…"


def failure_lines(failed: Sequence[Evaluation], total: int) -> list[str]:
    """``7 of 7 evaluations failed:`` and one ``N × reason`` line per distinct reason, most first."""
    if not failed:
        return []
    counts = Counter(failure_reason(ev) for ev in failed)
    lines = [f"{len(failed)} of {total} evaluation(s) failed:"]
    lines += [f"  {n} × {reason}" for reason, n in counts.most_common()]
    if any("AuthenticationError" in reason for reason in counts):
        lines.append("  (an API key is needed: --api-key or $OPENAI_API_KEY)")
    return lines


def register(app: typer.Typer) -> None:
    app.command("judge", short_help="score stored traces with an LLM judge")(judge)
