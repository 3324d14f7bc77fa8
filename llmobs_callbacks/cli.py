"""The ``llmobs`` command line."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence

from .sinks.schema import DATABASE_URL_ENV, DEFAULT_DATABASE_URL, make_engine, resolve_database_url


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
