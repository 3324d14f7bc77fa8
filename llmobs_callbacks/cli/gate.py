"""``llmobs gate``: the release gate, a candidate version against a baseline (exit 0 / 1 / 2)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer

from .errors import UserError
from .stores import DatabaseUrl, require_extra, trace_store


class GateBy(str, Enum):
    prompt_version = "prompt_version"
    model = "model"


class PairBy(str, Enum):
    auto = "auto"
    id = "id"
    input = "input"
    off = "off"


def gate(
    baseline: Annotated[str, typer.Option(metavar="VERSION", help="the version to compare against, e.g. v1")],
    candidate: Annotated[str, typer.Option(metavar="VERSION", help="the version to release, e.g. v2")],
    database_url: DatabaseUrl = None,
    by: Annotated[GateBy, typer.Option(help="what a version is")] = GateBy.prompt_version,
    since: Annotated[
        str | None, typer.Option(metavar="TIME", help="only requests since: 24h, 7d or an ISO time")
    ] = None,
    until: Annotated[
        str | None, typer.Option(metavar="TIME", help="only requests before this ISO time")
    ] = None,
    max_cost_increase: Annotated[str, typer.Option(metavar="LIMIT", help="cost per request")] = "20%",
    max_latency_p95_increase: Annotated[
        str, typer.Option(metavar="LIMIT", help="p95 request latency")
    ] = "20%",
    max_token_increase: Annotated[str, typer.Option(metavar="LIMIT", help="tokens per request")] = "50%",
    max_error_rate: Annotated[
        str,
        typer.Option(
            metavar="LIMIT",
            help="the candidate's error rate; fails only when also significantly above the baseline's",
        ),
    ] = "2%",
    quality_limit: Annotated[
        list[str] | None,
        typer.Option(
            "--quality-limit",
            metavar="[NAME=]LIMIT",
            help="how much worse a score may get: faithfulness=-10% (of the baseline's mean), "
            "hallucination=0.05 (absolute, on the score's scale), NAME=off; without NAME= the default "
            "of every score (default 10%). Repeatable",
        ),
    ] = None,
    min_quality_delta: Annotated[
        str | None,
        typer.Option(metavar="VALUE", help="old form of --quality-limit VALUE (absolute, every score)"),
    ] = None,
    min_samples: Annotated[int, typer.Option(help="requests per side, inputs when paired")] = 30,
    min_scores: Annotated[int, typer.Option(help="scores of a name per side to test it")] = 10,
    require_quality: Annotated[
        bool, typer.Option("--require-quality", help="exit 2 when there are no scores to compare")
    ] = False,
    pair_by: Annotated[
        PairBy,
        typer.Option(
            help="compare per input when both versions answered the same inputs: 'id' by the root's "
            "metadata input_id / example_id / dataset_item_id, 'input' by a hash of the root's input "
            "text, 'auto' by id when every request carries one"
        ),
    ] = PairBy.auto,
    alpha: Annotated[float, typer.Option(help="family-wise false-alarm rate of a run")] = 0.01,
    resamples: Annotated[int, typer.Option(help="permutations and bootstrap resamples")] = 2000,
    seed: Annotated[int, typer.Option(help="seed of the resampling")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> int:
    """Release gate: compare the requests of --candidate with those of --baseline (prompt
    versions, or models with --by model): cost per request, p95 latency, tokens per request,
    error rate and each quality score. A criterion fails when the candidate is significantly worse
    (one-sided test, family-wise --alpha over all criteria) and the confidence interval of its
    change reaches beyond the limit. Exits 0 when every criterion passes, 1 on a regression, 2 when
    either side has fewer than --min-samples requests, a version has no requests, or spend cannot
    be checked. Limits take '20%' or 0.2; 'off' disables one."""
    require_extra("pandas, numpy and scipy", ("pandas", "numpy", "scipy"), "analysis")
    from ..analysis.gate import (
        GateCriteria,
        GateInputError,
        QualityLimit,
        parse_fraction,
        parse_quality_limit,
        run_gate,
    )

    def limit(flag: str, text: str | None) -> float | None:
        if text is None or text.strip().lower() in ("off", "none"):
            return None
        try:
            return parse_fraction(text)
        except ValueError:
            raise GateInputError(
                f"{flag} {text!r}: expected a fraction (0.2), a percentage (20%) or off"
            ) from None

    try:
        default_quality: QualityLimit | None = QualityLimit(0.10)
        if min_quality_delta is not None:  # the old form: an absolute limit for every score
            delta = limit("--min-quality-delta", min_quality_delta)
            default_quality = None if delta is None else QualityLimit(abs(delta), relative=False)
        per_metric: dict[str, QualityLimit | None] = {}
        for text in quality_limit or []:
            name, value = parse_quality_limit(text)
            if name is None:
                default_quality = value
            else:
                per_metric[name] = value
        criteria = GateCriteria(
            max_cost_increase=limit("--max-cost-increase", max_cost_increase),
            max_latency_p95_increase=limit("--max-latency-p95-increase", max_latency_p95_increase),
            max_error_rate=limit("--max-error-rate", max_error_rate),
            max_token_increase=limit("--max-token-increase", max_token_increase),
            quality_limit=default_quality,
            quality_limits=per_metric,
            min_samples=min_samples,
            min_scores=min_scores,
            require_quality=require_quality,
            alpha=alpha,
            resamples=resamples,
            seed=seed,
            pair_by=pair_by.value,
        )
        with trace_store(database_url) as store:
            result = run_gate(store, baseline, candidate, criteria, by=by.value, since=since, until=until)
    except ValueError as exc:  # GateInputError (a version with no requests, a bad limit), a bad --since
        raise UserError(str(exc)) from exc
    print(json.dumps(result.as_dict(), indent=2) if json_output else result.format_table())
    return result.exit_code


def register(app: typer.Typer) -> None:
    app.command("gate", short_help="release gate: a candidate version vs a baseline")(gate)
