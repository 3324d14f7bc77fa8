"""The ``llmobs`` command line."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .sinks.schema import DATABASE_URL_ENV, DEFAULT_DATABASE_URL, make_engine, resolve_database_url

if TYPE_CHECKING:
    from .dashboards import Thresholds


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"SQLAlchemy URL of the store (default: ${DATABASE_URL_ENV} or {DEFAULT_DATABASE_URL})",
    )


def _report(args: argparse.Namespace) -> int:
    from .analysis.report import format_table, summarize

    engine = make_engine(resolve_database_url(args.database_url))
    try:
        rows = summarize(engine, by=args.by, since=args.since)
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
        print(f"llmobs trace needs pandas: pip install 'llmobs-callbacks[analysis]' ({exc})", file=sys.stderr)
        return 2
    with TraceStore(resolve_database_url(args.database_url)) as store:
        try:
            tree = store.trace(args.trace_id)
        except KeyError as exc:
            print(f"llmobs trace: {exc.args[0]}", file=sys.stderr)
            return 1
    print(tree)
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from .demo import run_demo
    except ImportError as exc:
        print(
            f"llmobs demo needs langchain-core: pip install 'llmobs-callbacks[langchain]' ({exc})",
            file=sys.stderr,
        )
        return 2
    from .obs import LLMObs

    url = resolve_database_url(args.database_url)
    with LLMObs(url, service="demo-support-bot", environment="demo") as obs:
        failures = run_demo(obs, traces=args.traces)
        obs.flush()
        stats = obs.stats()
    print(f"traced {args.traces} demo requests into {url} ({failures} failed tool calls, by design)")
    dropped = sum(stats["spans_dropped"].values())
    if dropped or stats["handler_errors"]:
        print(f"warning: dropped={stats['spans_dropped']} handler_errors={stats['handler_errors']}")
    print()
    args.by, args.since, args.format = "prompt_version", None, "table"
    return _report(args)


def _add_thresholds(parser: argparse.ArgumentParser) -> None:
    from .dashboards import Thresholds

    d = Thresholds()
    g = parser.add_argument_group("thresholds")
    g.add_argument("--p99-latency", type=float, default=d.p99_latency_s, help="seconds (default %(default)s)")
    g.add_argument("--error-rate", type=float, default=d.error_rate, help="fraction (default %(default)s)")
    g.add_argument(
        "--hourly-cost-budget", type=float, default=d.hourly_cost_budget_usd, help="USD (default %(default)s)"
    )
    g.add_argument(
        "--cost-spike-factor",
        type=float,
        default=d.cost_spike_factor,
        help="hourly cost vs. its 24 h average (default %(default)s)",
    )
    g.add_argument(
        "--token-increase",
        type=float,
        default=d.token_increase,
        help="tokens per request over the 24 h baseline, 0.5 = +50%% (default %(default)s)",
    )
    g.add_argument(
        "--branch-shift",
        type=float,
        default=d.branch_shift,
        help="change of a branch's share, 0.2 = 20 points (default %(default)s)",
    )
    g.add_argument(
        "--branch-min-decisions",
        type=int,
        default=d.branch_min_decisions,
        help="decisions per hour before a shift counts (default %(default)s)",
    )
    g.add_argument(
        "--tool-failure-rate", type=float, default=d.tool_failure_rate, help="fraction (default %(default)s)"
    )
    g.add_argument(
        "--hallucination-rate",
        type=float,
        default=d.hallucination_rate,
        help="fraction (default %(default)s)",
    )
    g.add_argument(
        "--min-faithfulness", type=float, default=d.min_faithfulness, help="1-5 scale (default %(default)s)"
    )
    g.add_argument(
        "--for", dest="pending", default=d.pending, help="alert pending duration (default %(default)s)"
    )
    g.add_argument(
        "--selector",
        default=d.selector,
        help="extra label matchers for every metric, e.g. 'job=\"support-bot\"'",
    )


def _thresholds(args: argparse.Namespace) -> Thresholds:
    from .dashboards import Thresholds

    return Thresholds(
        p99_latency_s=args.p99_latency,
        error_rate=args.error_rate,
        hourly_cost_budget_usd=args.hourly_cost_budget,
        cost_spike_factor=args.cost_spike_factor,
        token_increase=args.token_increase,
        branch_shift=args.branch_shift,
        branch_min_decisions=args.branch_min_decisions,
        tool_failure_rate=args.tool_failure_rate,
        hallucination_rate=args.hallucination_rate,
        min_faithfulness=args.min_faithfulness,
        pending=args.pending,
        selector=args.selector,
    )


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
        from .analysis.report import parse_since
        from .sinks.prometheus import PrometheusExporter
        from .sinks.store_metrics import StoreMetricsFeed

        url = resolve_database_url(args.database_url)
        engine = make_engine(url)
        exporter = PrometheusExporter(registry, label_limit=args.label_limit)
        feed = StoreMetricsFeed(engine, exporter, since=parse_since(args.since), overlap_s=args.overlap)
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

    from .analysis.report import parse_since
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
            since=parse_since(args.since),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmobs", description="In-process LLM observability.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="trace a small demo app into the store, then print a report")
    _add_db(demo)
    demo.add_argument("--traces", type=int, default=40, help="demo requests to run (default 40)")
    demo.set_defaults(func=_demo)

    report = sub.add_parser("report", help="summary per prompt version, model or root run")
    _add_db(report)
    report.add_argument("--since", default=None, help="time window: 24h, 7d, or an ISO timestamp")
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
        "spans). Check them with `promtool check rules FILE`. The rules read Prometheus, not the "
        "store: --database-url is accepted for uniformity and not used.",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
