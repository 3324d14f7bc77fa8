"""The ``llmobs`` command line."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from .sinks.schema import DATABASE_URL_ENV, DEFAULT_DATABASE_URL, make_engine, resolve_database_url

if TYPE_CHECKING:
    from .dashboards import Thresholds
    from .demo import ReplayResult


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"SQLAlchemy URL of the store (default: ${DATABASE_URL_ENV} or {DEFAULT_DATABASE_URL})",
    )


def _add_include_internal(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--include-internal",
        action="store_true",
        help="also count internal traces (the judge's evaluations, index building) as requests",
    )


def _report(args: argparse.Namespace) -> int:
    from .analysis.report import format_table, summarize

    engine = make_engine(resolve_database_url(args.database_url))
    try:
        rows = summarize(
            engine, by=args.by, since=args.since, until=args.until, include_internal=args.include_internal
        )
    except ValueError as exc:  # a bad --since / --until
        print(f"llmobs report: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if args.format == "json":
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    elif args.format == "csv":
        out = io.StringIO()
        if rows:
            writer = csv.DictWriter(out, fieldnames=list(rows[0].as_dict()))
            writer.writeheader()
            writer.writerows(r.as_dict() for r in rows)
        print(out.getvalue(), end="")
    else:
        print(format_table(rows, args.by) if rows else "no traces in the store for this window")
    return 0


def _trace(args: argparse.Namespace) -> int:
    try:
        from .analysis.store import TraceStore
    except ImportError as exc:
        return _missing("trace", "pandas", "'llmobs-callbacks[analysis]'", exc)
    with TraceStore(resolve_database_url(args.database_url)) as store:
        try:
            tree = store.trace(args.trace_id)
        except KeyError as exc:
            print(f"llmobs trace: {exc.args[0]}", file=sys.stderr)
            return 1
    print(tree)
    return 0


def _missing(command: str, what: str, install: str, exc: ImportError) -> int:
    """An optional dependency of ``llmobs <command>`` is not installed: say which, exit 2."""
    print(f"llmobs {command} needs {what}: pip install {install} ({exc})", file=sys.stderr)
    return 2


def _demo(args: argparse.Namespace) -> int:
    try:
        from .demo import Scenario, simulate
    except ImportError as exc:
        return _missing("demo", "langchain-core and langgraph", "'llmobs-callbacks[demo]'", exc)
    rate = args.requests_per_hour if args.traces is None else args.traces / args.hours
    scenario = Scenario(
        hours=args.hours,
        requests_per_hour=rate,
        switch_at_hour=None if args.switch_at_hour < 0 else args.switch_at_hour,
        v2_regresses=not args.control,
        seed=args.seed,
    )
    url = resolve_database_url(args.database_url)
    with _ProgressBar(args.no_progress) as progress:
        result = simulate(url, scenario, progress=progress)
    fmt = "%Y-%m-%d %H:%M"
    print(
        f"replayed {result.requests} demo requests over a simulated {scenario.hours:g} h "
        f"({result.start:{fmt}} → {result.end:{fmt}} UTC) into {url}"
    )
    if result.switch is not None:
        print(
            f"prompt v1 until {result.switch:%H:%M}, then v2 "
            f"({'twice the context' if scenario.v2_regresses else 'control: behaves like v1'}); "
            f"{result.failures} failed order lookups (by design)"
        )
    print()
    args.by, args.since, args.until, args.format = "prompt_version", result.start.isoformat(), None, "table"
    args.include_internal = False
    _report(args)
    if "v1" in result.by_version and "v2" in result.by_version:
        _print_comparison(url, result)
    _print_anomalies(url, result)
    return 0


def _print_anomalies(url: str, result: ReplayResult) -> None:
    """What ``llmobs anomalies`` says an hour after v2 shipped, and at the end of the day."""
    try:
        from .analysis.anomalies import format_anomalies
        from .analysis.store import TraceStore
    except ImportError:
        print("(anomalies: pip install 'llmobs-callbacks[analysis]')")
        return
    moments = [("at the end of the day", result.end)]
    if result.switch is not None and result.switch + timedelta(hours=1) < result.end:
        moments.insert(0, ("an hour after v2 shipped", result.switch + timedelta(hours=1)))
    with TraceStore(url) as store:
        for label, now in moments:
            print(f"\nanomalies {label} (llmobs anomalies --now {now:%Y-%m-%dT%H:%M}Z)")
            print(format_anomalies(store.anomalies(now=now), now=now))


class _ProgressBar:
    """``progress(done, total)`` drawn with tqdm on stderr (nothing when tqdm is missing)."""

    def __init__(self, disabled: bool) -> None:
        self._disabled = disabled
        self._bar = None

    def __enter__(self):
        if self._disabled:
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None

        def update(done: int, total: int) -> None:
            if self._bar is None:
                self._bar = tqdm(total=total, desc="replaying a day", unit="req", file=sys.stderr)
            self._bar.update(done - self._bar.n)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


COMPARED = [
    ("requests", "requests", "{:.0f}"),
    ("error_rate", "error rate", "{:.1%}"),
    ("input_tokens_per_request", "input tokens / request", "{:.0f}"),
    ("output_tokens_per_request", "output tokens / request", "{:.0f}"),
    ("cost_per_request", "cost / request (USD)", "{:.6f}"),
    ("p95_latency_ms", "p95 latency (ms)", "{:.0f}"),
    ("p95_ttft_ms", "p95 time to first token (ms)", "{:.0f}"),
    ("branch_human_review", "human-review share", "{:.1%}"),
]


def _print_comparison(url: str, result: ReplayResult) -> None:
    try:
        from .analysis.store import TraceStore
    except ImportError:
        print("(v1 → v2 comparison: pip install 'llmobs-callbacks[analysis]')")
        return
    with TraceStore(url) as store:
        table = store.compare("v1", "v2", since=result.start)
    print("\nv1 → v2")
    print(f"{'metric':<30}{'v1':>12}{'v2':>12}{'change':>10}")
    for key, label, fmt in COMPARED:
        if key not in table.index:
            continue
        row = table.loc[key]
        cells = ["—" if row[v] != row[v] else fmt.format(row[v]) for v in ("v1", "v2")]
        change = "" if row["relative"] != row["relative"] else f"{row['relative']:+.0%}"
        print(f"{label:<30}{cells[0]:>12}{cells[1]:>12}{change:>10}")


# (Thresholds field, flag, help): the flags of export-grafana / export-alerts.
THRESHOLD_FLAGS = [
    ("p99_latency_s", "--p99-latency", "seconds"),
    ("error_rate", "--error-rate", "fraction"),
    ("hourly_cost_budget_usd", "--hourly-cost-budget", "USD"),
    ("cost_spike_factor", "--cost-spike-factor", "hourly cost vs. its 24 h average"),
    ("token_increase", "--token-increase", "tokens per request over the 24 h baseline, 0.5 = +50%%"),
    ("branch_shift", "--branch-shift", "change of a branch's share, 0.2 = 20 points"),
    ("branch_min_decisions", "--branch-min-decisions", "decisions per hour before a shift counts"),
    ("tool_failure_rate", "--tool-failure-rate", "fraction"),
    ("hallucination_rate", "--hallucination-rate", "fraction"),
    ("min_faithfulness", "--min-faithfulness", "1-5 scale"),
    ("min_requests", "--min-requests", "events in a rate rule's window and group before it counts"),
    ("pending", "--for", "alert pending duration"),
    ("selector", "--selector", "extra label matchers for every metric, e.g. 'job=\"support-bot\"'"),
]


def _add_thresholds(parser: argparse.ArgumentParser) -> None:
    from .dashboards import Thresholds

    defaults = Thresholds()
    group = parser.add_argument_group("thresholds")
    for name, flag, help_text in THRESHOLD_FLAGS:
        default = getattr(defaults, name)
        group.add_argument(
            flag, dest=name, type=type(default), default=default, help=f"{help_text} (default %(default)r)"
        )


def _thresholds(args: argparse.Namespace) -> Thresholds:
    from .dashboards import Thresholds

    return Thresholds(**{name: getattr(args, name) for name, _, _ in THRESHOLD_FLAGS})


def _write(text: str, output: str, what: str) -> None:
    if output == "-":
        sys.stdout.write(text)
        return
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {what} to {output}", file=sys.stderr)


def _export_grafana(args: argparse.Namespace) -> int:
    from .dashboards import dashboard_json

    _write(dashboard_json(_thresholds(args), title=args.title), args.output, "the Grafana dashboard")
    return 0


def _export_alerts(args: argparse.Namespace) -> int:
    from .dashboards import alerts_yaml

    _write(alerts_yaml(_thresholds(args)), args.output, "the Prometheus alerting rules")
    return 0


def _serve_metrics(args: argparse.Namespace) -> int:
    import signal
    import threading

    from prometheus_client import CollectorRegistry

    from .sinks.prometheus import MetricsServer

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    registry = CollectorRegistry()
    feed = None
    if args.multiprocess_dir:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=args.multiprocess_dir)
        source = f"the prometheus-client multiprocess files in {args.multiprocess_dir}"
    else:
        from .analysis.times import parse_time
        from .sinks.prometheus import PrometheusExporter
        from .sinks.store_metrics import StoreMetricsFeed

        url = resolve_database_url(args.database_url)
        engine = make_engine(url)
        exporter = PrometheusExporter(registry, label_limit=args.label_limit)
        feed = StoreMetricsFeed(engine, exporter, since=parse_time(args.since), overlap_s=args.overlap)
        feed.poll()
        source = f"spans stored in {engine.url.render_as_string(hide_password=True)}"
    server = MetricsServer(registry, port=args.port, addr=args.addr)
    print(f"serving {server.url} from {source}", flush=True)
    try:
        while not stop.wait(args.interval):
            if feed is not None:
                try:
                    feed.poll()
                except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop the endpoint
                    print(f"llmobs serve-metrics: polling the store failed: {exc}", file=sys.stderr)
    finally:
        server.close()
    return 0


def _judge_llm(args: argparse.Namespace) -> object:
    import os

    if args.rules_only:
        return None
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise SystemExit(
            f"llmobs judge needs langchain-openai: pip install langchain-openai ({exc})"
        ) from exc
    return ChatOpenAI(
        model=args.model,
        base_url=args.base_url or os.environ.get("OPENAI_BASE_URL") or None,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY") or "not-set",
        temperature=0,
        max_retries=args.max_retries,
        timeout=args.timeout,
    )


def _judge(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from .analysis.times import parse_time
    from .judge import Judge
    from .judge.backfill import stored_tasks, summary_table
    from .obs import LLMObs

    llm = _judge_llm(args)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    judge = Judge(
        llm, sample_rate=0.0, metrics=metrics, budget_usd_per_day=args.budget, rules=args.rules_only
    )
    names = (
        [m.name for m in judge.rubric.metrics] if llm is not None else ["empty_answer", "grounded", "refusal"]
    )
    url = resolve_database_url(args.database_url)
    with LLMObs(url, prometheus_registry=None, judge=judge) as obs:
        tasks, skipped = stored_tasks(
            obs.sql.engine,
            since=parse_time(args.since),
            sample=args.sample,
            prompt_version=args.prompt_version,
            metric_names=[] if llm is None else names,
            force=args.force,
        )
        print(f"{len(tasks)} trace(s) to judge, {skipped} already judged (skipped)", file=sys.stderr)
        results = []
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(tasks), desc="judging", unit="trace", file=sys.stderr, disable=not tasks)
        except ImportError:  # pragma: no cover - tqdm is optional
            bar = None
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for i, evaluation in enumerate(pool.map(judge.evaluate, tasks), 1):
                results.append(evaluation)
                if bar is not None:
                    bar.update(1)
                else:  # pragma: no cover
                    print(f"\rjudged {i}/{len(tasks)}", end="", file=sys.stderr, flush=True)
        if bar is not None:
            bar.close()
        obs.flush(timeout=60.0)
    print(summary_table(results, names) if results else "nothing to judge")
    return 0


def _threshold_overrides(pairs: Sequence[str]) -> dict[str, float]:
    from .analysis.anomalies import AnomalyThresholds

    known = AnomalyThresholds.names()
    out: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if name not in known or not value:
            raise SystemExit(f"llmobs anomalies: --set {pair!r}: expected NAME=VALUE, NAME one of {known}")
        out[name] = float(value)
    return out


def _anomalies(args: argparse.Namespace) -> int:
    try:
        from .analysis.anomalies import SEVERITIES, AnomalyThresholds, format_anomalies
        from .analysis.store import TraceStore
    except ImportError as exc:
        return _missing("anomalies", "pandas and scipy", "'llmobs-callbacks[analysis]'", exc)
    from dataclasses import replace

    thresholds = replace(AnomalyThresholds(), **_threshold_overrides(args.set))  # type: ignore[arg-type]
    with TraceStore(resolve_database_url(args.database_url)) as store:
        try:
            anomalies = store.anomalies(
                now=args.now,
                window=args.window,
                baseline=args.baseline,
                thresholds=thresholds,
                types=args.type,
                include_internal=args.include_internal,
            )
        except ValueError as exc:  # a bad --window, --now or --type
            print(f"llmobs anomalies: {exc}", file=sys.stderr)
            return 2
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    alerting = [a for a in anomalies if rank[a.severity] >= rank[args.min_severity]]
    if args.json:
        print(json.dumps([a.as_dict() for a in anomalies], indent=2))
    else:
        print(format_anomalies(anomalies))
    if args.webhook:
        _send_anomalies(args, alerting)
    return 1 if args.fail_on_anomaly and alerting else 0


def _send_anomalies(args: argparse.Namespace, anomalies: list) -> None:
    """Post new anomalies to --webhook; --state FILE keeps what was sent between cron runs."""
    from .alerts import Deduplicator, WebhookNotifier, anomaly_alert
    from .analysis.times import now_or, parse_duration

    now = now_or(args.now)
    if args.state:
        dedup = Deduplicator.load(args.state, parse_duration(args.repeat_after))
        alerts, _ = dedup.filter(anomalies, now)
        dedup.save(args.state)
    else:
        alerts = [anomaly_alert(a, now) for a in anomalies]
    if alerts:
        WebhookNotifier(args.webhook).send(alerts)
    print(f"sent {len(alerts)} alert(s) to the webhook", file=sys.stderr)


def _gate(args: argparse.Namespace) -> int:
    try:
        from .analysis.gate import (
            GateCriteria,
            GateInputError,
            QualityLimit,
            parse_fraction,
            parse_quality_limit,
            run_gate,
        )
        from .analysis.store import TraceStore
    except ImportError as exc:
        return _missing("gate", "pandas, numpy and scipy", "'llmobs-callbacks[analysis]'", exc)

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
        if args.min_quality_delta is not None:  # the old form: an absolute limit for every score
            delta = limit("--min-quality-delta", args.min_quality_delta)
            default_quality = None if delta is None else QualityLimit(abs(delta), relative=False)
        per_metric: dict[str, QualityLimit | None] = {}
        for text in args.quality_limit:
            name, value = parse_quality_limit(text)
            if name is None:
                default_quality = value
            else:
                per_metric[name] = value
        criteria = GateCriteria(
            max_cost_increase=limit("--max-cost-increase", args.max_cost_increase),
            max_latency_p95_increase=limit("--max-latency-p95-increase", args.max_latency_p95_increase),
            max_error_rate=limit("--max-error-rate", args.max_error_rate),
            max_token_increase=limit("--max-token-increase", args.max_token_increase),
            quality_limit=default_quality,
            quality_limits=per_metric,
            min_samples=args.min_samples,
            min_scores=args.min_scores,
            require_quality=args.require_quality,
            alpha=args.alpha,
            resamples=args.resamples,
            seed=args.seed,
            pair_by=args.pair_by,
        )
        with TraceStore(resolve_database_url(args.database_url)) as store:
            result = run_gate(
                store, args.baseline, args.candidate, criteria, by=args.by, since=args.since, until=args.until
            )
    except ValueError as exc:  # GateInputError (a version with no requests, a bad limit), a bad --since
        print(f"llmobs gate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.format_table())
    return result.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmobs", description="In-process LLM observability.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="replay a simulated day of a support bot (prompt v1, then a costly v2) into the store, "
        "then print the report and the v1 → v2 comparison",
    )
    _add_db(demo)
    demo.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    demo.add_argument("--requests-per-hour", type=float, default=40.0, help="mean arrival rate (default 40)")
    demo.add_argument(
        "--traces", type=int, default=None, help="total requests instead of a rate (spread over --hours)"
    )
    demo.add_argument(
        "--switch-at-hour", type=float, default=20.0, help="hour at which prompt v2 ships; -1 for never"
    )
    demo.add_argument("--control", action="store_true", help="v2 behaves like v1 (a control run)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    report = sub.add_parser("report", help="summary per prompt version, model or root run")
    _add_db(report)
    report.add_argument("--since", default=None, help="time window: 24h, 7d, or an ISO timestamp")
    report.add_argument("--until", default=None, help="end of the window: an ISO timestamp (default: now)")
    _add_include_internal(report)
    report.add_argument("--by", choices=["prompt_version", "model", "root"], default="prompt_version")
    report.add_argument("--format", choices=["table", "json", "csv"], default="table")
    report.set_defaults(func=_report)

    trace = sub.add_parser("trace", help="print one trace as an indented tree of its spans")
    _add_db(trace)
    trace.add_argument("trace_id", help="the trace's id (its root run's run_id)")
    trace.set_defaults(func=_trace)

    grafana = sub.add_parser(
        "export-grafana",
        help="write a Grafana dashboard (JSON) for the Prometheus metrics",
        description="Write a Grafana dashboard over the llmobs_* Prometheus metrics (import it in "
        "Grafana: Dashboards > New > Import; pick your Prometheus data source). The dashboard reads "
        "Prometheus, not the store: --database-url is accepted for uniformity and not used.",
    )
    _add_db(grafana)
    grafana.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    grafana.add_argument("--title", default="LLM observability (llmobs)", help="dashboard title")
    _add_thresholds(grafana)
    grafana.set_defaults(func=_export_grafana)

    alerts = sub.add_parser(
        "export-alerts",
        help="write Prometheus alerting rules (YAML) for the metrics",
        description="Write Prometheus alerting rules (p99 latency, error rate, cost budget and spikes, "
        "tokens per request, branch mix, tool failures, hallucination rate, faithfulness, dropped "
        "spans, store availability and write failures). Check them with `promtool check rules FILE`. "
        "The rules read Prometheus, not the store: --database-url is accepted for uniformity and not used.",
    )
    _add_db(alerts)
    alerts.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    _add_thresholds(alerts)
    alerts.set_defaults(func=_export_alerts)

    judge = sub.add_parser(
        "judge",
        help="score stored traces with an LLM judge (backfill, or a new rubric)",
        description="Judge finished traces stored in --database-url (question = root input, answer = "
        "root output, context = the trace's retrieved documents) with an OpenAI-compatible chat model "
        "through langchain-openai (--model, --base-url, --api-key or $OPENAI_API_KEY / $OPENAI_BASE_URL). "
        "Sampling is by trace id, as in the live judge; traces that already have judge scores for the "
        "metrics are skipped (resumable). Scores go to the scores table, the judge's calls are stored "
        "as kind='judge' spans.",
    )
    _add_db(judge)
    judge.add_argument("--since", default="24h", help="time window: 24h, 7d or an ISO time (default 24h)")
    judge.add_argument("--sample", type=float, default=1.0, help="share of traces to judge (default 1.0)")
    judge.add_argument("--prompt-version", default=None, help="only traces of this prompt version")
    judge.add_argument(
        "--metrics",
        default="faithfulness,relevance,completeness,hallucination",
        help="comma-separated metric names (default %(default)s)",
    )
    judge.add_argument("--model", default="gpt-4o-mini", help="judge model (default %(default)s)")
    judge.add_argument("--base-url", default=None, help="OpenAI-compatible API base URL ($OPENAI_BASE_URL)")
    judge.add_argument("--api-key", default=None, help="API key (default $OPENAI_API_KEY)")
    judge.add_argument("--budget", type=float, default=None, help="stop judging after this many USD")
    judge.add_argument("--concurrency", type=int, default=4, help="parallel judge calls (default 4)")
    judge.add_argument("--max-retries", type=int, default=2, help="retries per judge call (default 2)")
    judge.add_argument("--timeout", type=float, default=60.0, help="seconds per judge call (default 60)")
    judge.add_argument("--force", action="store_true", help="judge traces that already have judge scores")
    judge.add_argument("--rules-only", action="store_true", help="store rule scores only (no LLM)")
    judge.set_defaults(func=_judge)

    serve = sub.add_parser(
        "serve-metrics",
        help="serve Prometheus metrics computed from the spans in the store",
        description="Serve /metrics for apps that cannot: the llmobs_* metrics of the spans stored in "
        "--database-url from now on (or --since), polled every --interval seconds; or, with "
        "--multiprocess-dir, the aggregated files of prometheus-client's multiprocess mode "
        "(PROMETHEUS_MULTIPROC_DIR of your workers). Do not also export the same app's metrics "
        "in-process, or every call is counted twice.",
    )
    _add_db(serve)
    serve.add_argument("--port", type=int, default=9464, help="port (default %(default)s; 0 = any free port)")
    serve.add_argument("--addr", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument("--interval", type=float, default=5.0, help="seconds between store polls (default 5)")
    serve.add_argument(
        "--since", default=None, help="also count spans stored since: 24h, 7d or an ISO time (default: now)"
    )
    serve.add_argument(
        "--overlap",
        type=float,
        default=600.0,
        help="seconds a span may take from its start to being stored and still be counted (default 600)",
    )
    serve.add_argument("--label-limit", type=int, default=100, help="distinct values per label (default 100)")
    serve.add_argument(
        "--multiprocess-dir",
        default=None,
        help="serve prometheus-client multiprocess files from this directory",
    )
    serve.set_defaults(func=_serve_metrics)

    anomalies = sub.add_parser(
        "anomalies",
        help="detect anomalies: the last --window against the --baseline before it",
        description="Compare the last --window of the store (before --now) with the --baseline before "
        "it: token, cost and latency spikes, error rates, tool failures, empty retrievals, branch "
        "shifts, quality drops and new prompt versions, per prompt version and model. For cron: "
        "--fail-on-anomaly exits 1 when an anomaly at or above --min-severity is found; --webhook "
        "posts them (Slack-compatible JSON), --state FILE remembers what was sent so each anomaly "
        "is posted once (again after --repeat-after).",
    )
    _add_db(anomalies)
    anomalies.add_argument("--now", default=None, help="end of the window: ISO time (default: now)")
    anomalies.add_argument("--window", default="1h", help="current window (default %(default)s)")
    anomalies.add_argument("--baseline", default="24h", help="baseline before it (default %(default)s)")
    anomalies.add_argument("--json", action="store_true", help="print the anomalies as JSON")
    _add_include_internal(anomalies)
    anomalies.add_argument(
        "--fail-on-anomaly", action="store_true", help="exit 1 on an anomaly at or above --min-severity"
    )
    anomalies.add_argument(
        "--min-severity",
        choices=["info", "warning", "critical"],
        default="warning",
        help="what --fail-on-anomaly and --webhook count (default %(default)s)",
    )
    anomalies.add_argument("--type", action="append", default=None, help="only this type (repeatable)")
    anomalies.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a threshold of AnomalyThresholds, e.g. --set token_spike_factor=2 (repeatable)",
    )
    anomalies.add_argument("--webhook", default=None, help="POST anomalies to this URL (Slack-compatible)")
    anomalies.add_argument("--state", default=None, help="JSON file de-duplicating webhook posts across runs")
    anomalies.add_argument(
        "--repeat-after", default="6h", help="post an ongoing anomaly again after this long (default 6h)"
    )
    anomalies.set_defaults(func=_anomalies)

    gate = sub.add_parser(
        "gate",
        help="release gate: compare a candidate prompt (or model) version with a baseline",
        description="Compare the requests of --candidate with those of --baseline (prompt versions, or "
        "models with --by model) in the store: cost per request, p95 latency, tokens per request, error "
        "rate and each quality score. A criterion fails when the candidate is significantly worse "
        "(one-sided test, family-wise --alpha over all criteria) and the confidence interval of its "
        "change reaches beyond the limit. Prints a table; exits 0 when every criterion passes, 1 on a "
        "regression, 2 when either side has fewer than --min-samples requests, a version has no "
        "requests, or spend cannot be checked. Limits take '20%' or 0.2; 'off' disables one.",
    )
    _add_db(gate)
    gate.add_argument("--baseline", required=True, help="the version to compare against, e.g. v1")
    gate.add_argument("--candidate", required=True, help="the version to release, e.g. v2")
    gate.add_argument("--by", choices=["prompt_version", "model"], default="prompt_version")
    gate.add_argument("--since", default=None, help="only requests since: 24h, 7d or an ISO time")
    gate.add_argument("--until", default=None, help="only requests before this ISO time")
    gate.add_argument("--max-cost-increase", default="20%", help="cost per request (default %(default)s)")
    gate.add_argument(
        "--max-latency-p95-increase", default="20%", help="p95 request latency (default %(default)s)"
    )
    gate.add_argument("--max-token-increase", default="50%", help="tokens per request (default %(default)s)")
    gate.add_argument(
        "--max-error-rate",
        default="2%",
        help="the candidate's error rate; fails only when also significantly above the baseline's "
        "(default %(default)s)",
    )
    gate.add_argument(
        "--quality-limit",
        action="append",
        default=[],
        metavar="[NAME=]LIMIT",
        help="how much worse a score may get: faithfulness=-10%% (of the baseline's mean), "
        "hallucination=0.05 (absolute, on the score's scale), NAME=off; without NAME= the default "
        "of every score (default 10%%). Repeatable",
    )
    gate.add_argument(
        "--min-quality-delta", default=None, help="old form of --quality-limit VALUE (absolute, every score)"
    )
    gate.add_argument(
        "--min-samples",
        type=int,
        default=30,
        help="requests per side, inputs when paired (default %(default)s)",
    )
    gate.add_argument(
        "--min-scores",
        type=int,
        default=10,
        help="scores of a name per side to test it (default %(default)s)",
    )
    gate.add_argument(
        "--require-quality", action="store_true", help="exit 2 when there are no scores to compare"
    )
    gate.add_argument(
        "--pair-by",
        choices=["auto", "id", "input", "off"],
        default="auto",
        help="compare per input when both versions answered the same inputs: 'id' by the root's metadata "
        "input_id / example_id / dataset_item_id, 'input' by a hash of the root's input text, 'auto' "
        "(default) by id when every request carries one",
    )
    gate.add_argument(
        "--alpha",
        type=float,
        default=0.01,
        help="family-wise false-alarm rate of a run (default %(default)s)",
    )
    gate.add_argument(
        "--resamples",
        type=int,
        default=2000,
        help="permutations and bootstrap resamples (default %(default)s)",
    )
    gate.add_argument("--seed", type=int, default=0, help="seed of the resampling (default %(default)s)")
    gate.add_argument("--json", action="store_true", help="print the result as JSON")
    gate.set_defaults(func=_gate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
