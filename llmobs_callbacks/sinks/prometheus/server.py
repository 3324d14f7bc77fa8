"""Serving ``/metrics``: the exposition registry (multiprocess-aware) and a small HTTP server."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from .metrics import multiprocess_mode


def exposition_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """What to serve on ``/metrics``: ``registry``, or in multiprocess mode (when ``registry`` is
    the global one) a registry aggregating every process's files in ``$PROMETHEUS_MULTIPROC_DIR``."""
    registry = REGISTRY if registry is None else registry
    if multiprocess_mode() and registry is REGISTRY:
        from prometheus_client import multiprocess

        aggregated = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregated)
        return aggregated
    return registry


class MetricsServer:
    """A ``/metrics`` HTTP endpoint on a daemon thread (prometheus-client's WSGI server).

    It answers in OpenMetrics (with exemplars) when the scraper asks for it, as Prometheus does.
    """

    def __init__(self, registry: CollectorRegistry | None = None, port: int = 9464, addr: str = "127.0.0.1"):
        from prometheus_client import start_http_server

        self.registry = exposition_registry(registry)
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        self.addr = addr
        self.port: int = self._server.server_port
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(
    registry: CollectorRegistry | None = None, port: int = 9464, addr: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``registry`` on ``http://addr:port/metrics`` (port 0: any free port, see ``.port``)."""
    return MetricsServer(registry, port, addr)
