"""``llmobs serve-metrics`` (Prometheus ``/metrics`` from the store) and ``llmobs ui`` (the web UI)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Annotated

import typer

from .errors import UserError, first_line, mask_url, os_error
from .stores import DatabaseUrl, reader_engine, store_url

UI_EXTRA = "the web UI needs the ui extra: pip install 'llmobs-callbacks[ui]'"


def serve_metrics(
    database_url: DatabaseUrl = None,
    port: Annotated[int, typer.Option(help="port (0 = any free port)")] = 9464,
    addr: Annotated[str, typer.Option(metavar="ADDRESS", help="address to bind")] = "127.0.0.1",
    interval: Annotated[float, typer.Option(help="seconds between store polls")] = 5.0,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="TIME", help="also count spans stored since: 24h, 7d or an ISO time (default: now)"
        ),
    ] = None,
    overlap: Annotated[
        float,
        typer.Option(help="seconds a span may take from its start to being stored and still be counted"),
    ] = 600.0,
    label_limit: Annotated[int, typer.Option(help="distinct values per label")] = 100,
    multiprocess_dir: Annotated[
        str | None,
        typer.Option(metavar="DIR", help="serve prometheus-client multiprocess files from this directory"),
    ] = None,
) -> int:
    """Serve /metrics for apps that cannot: the llmobs_* metrics of the spans stored in the store
    from now on (or --since), polled every --interval seconds; or, with --multiprocess-dir, the
    aggregated files of prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR of your
    workers). Do not also export the same app's metrics in-process, or every call is counted twice."""
    from prometheus_client import CollectorRegistry

    from ..sinks.prometheus import MetricsServer

    if interval <= 0:
        raise UserError(f"--interval {interval:g}: expected a positive number of seconds")
    registry = CollectorRegistry()
    feed = None
    engine = None
    if multiprocess_dir:
        from pathlib import Path

        from prometheus_client import multiprocess

        if not Path(multiprocess_dir).is_dir():
            raise UserError(f"--multiprocess-dir {multiprocess_dir}: no such directory")
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
        source = f"the prometheus-client multiprocess files in {multiprocess_dir}"
    else:
        from ..analysis.times import parse_time
        from ..sinks.prometheus import PrometheusExporter
        from ..sinks.store_metrics import StoreMetricsFeed

        try:
            start = parse_time(since)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        url = store_url(database_url)
        engine = reader_engine(database_url)
        exporter = PrometheusExporter(registry, label_limit=label_limit)
        feed = StoreMetricsFeed(engine, exporter, since=start, overlap_s=overlap)
        feed.poll()
        source = f"spans stored in {mask_url(url)}"
    try:
        server = MetricsServer(registry, port=port, addr=addr)
    except OSError as exc:
        raise os_error(f"serve on {addr}:{port}", exc) from exc
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"serving {server.url} from {source}", flush=True)
    try:
        while not stop.wait(interval):
            if feed is not None:
                try:
                    feed.poll()
                except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop the endpoint
                    print(
                        f"llmobs serve-metrics: polling the store failed: {first_line(exc)}", file=sys.stderr
                    )
    finally:
        server.close()
        if engine is not None:
            engine.dispose()
    return 0


def ui(
    database_url: DatabaseUrl = None,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="address to bind (any other than 127.0.0.1 needs --token)")
    ] = ("127.0.0.1"),
    port: Annotated[int, typer.Option(help="port")] = 8790,
    token: Annotated[
        str | None, typer.Option(metavar="TOKEN", help="a token every request must carry")
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="open the UI in a browser")] = False,
) -> int:
    """Serve the web UI on the store: traces, sessions, prompts, anomalies, the gate."""
    try:
        from ..ui import serve
    except ImportError as exc:
        raise UserError(UI_EXTRA) from exc
    url = store_url(database_url)
    reader_engine(database_url).dispose()  # the store is there and readable: else one line now
    try:
        serve(url, host=host, port=port, token=token, open_browser=open_browser)
    except ValueError as exc:  # a host that needs a token, a bad token, a port in use
        raise UserError(str(exc)) from exc
    except OSError as exc:
        raise os_error(f"serve on {host}:{port}", exc) from exc
    except KeyboardInterrupt:
        return 0
    return 0


def register(app: typer.Typer) -> None:
    app.command("serve-metrics", short_help="serve Prometheus /metrics from the store")(serve_metrics)
    app.command("ui", short_help="the web UI on the store")(ui)
