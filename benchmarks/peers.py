"""Our handler side by side with the handlers users would otherwise pick, in the same run.

    pip install -e ".[bench]"            # the peers, for this benchmark only
    python benchmarks/peers.py [--rounds 7] [--n 60]

Workloads and method are those of ``overhead.py``, whose ``bench_sync`` runs it (4-run chain,
7-run RAG chain, LangGraph agent; interleaved rounds, order shuffled, an untimed warm-up call
and flush before each block, paired per-round differences). Variants:

- no callbacks, a no-op handler, ours (``LLMObs`` on SQLite with Prometheus: the defaults);
- Langfuse's LangChain ``CallbackHandler`` (v3+, OpenTelemetry-based, batch export over HTTP);
- LangSmith's ``LangChainTracer`` with its own ``Client`` (background batch upload over HTTP);
- OpenInference's ``LangChainInstrumentor`` with an OpenTelemetry ``TracerProvider``,
  ``BatchSpanProcessor`` and ``InMemorySpanExporter`` (instrumented only during its blocks:
  it hooks every LangChain callback manager in the process).

Every HTTP exporter points at a loopback server in this process that accepts and discards
everything (127.0.0.1, a free port); nothing leaves the machine and telemetry is off. A peer
that is not installed is skipped with a message (the sink runs in a child process, so
handling the uploads is not billed to anyone). Reported: per-invocation µs added over the
no-op handler in the caller thread's CPU, in total CPU (the process's CPU until the tracer's
exporter has flushed: its background threads included) and in wall time; each peer's added
CPU as a ratio to ours.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
import warnings
from pathlib import Path

# The loopback sink runs in a child process, so parsing the peers' uploads costs this
# process nothing: only what their exporters do is measured.
_SINK_CODE = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

stats = {"requests": 0, "bytes": 0}

class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse their connection

    def _any(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                self.rfile.read(size + 2)
                length += size
                if size == 0:
                    break
        if self.path == "/__stats":
            body = json.dumps(stats).encode()
        else:
            stats["requests"] += 1
            stats["bytes"] += length
            body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = _any

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
server.daemon_threads = True
print(server.server_port, flush=True)
server.serve_forever()
"""


def start_sink() -> str:
    """Start the sink process (stopped at exit); its base URL."""
    proc = subprocess.Popen([sys.executable, "-c", _SINK_CODE], stdout=subprocess.PIPE, text=True)
    atexit.register(proc.terminate)
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}"


def sink_stats() -> dict[str, int]:
    with urllib.request.urlopen(f"{SINK}/__stats", timeout=10) as response:
        return json.loads(response.read())


SINK = start_sink()
# Before any peer is imported: everything to the loopback sink, no tracing switched on by
# environment for the other variants, no telemetry.
os.environ.update(
    {
        "LANGSMITH_ENDPOINT": SINK,
        "LANGCHAIN_ENDPOINT": SINK,
        "LANGSMITH_API_KEY": "bench",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGFUSE_BASE_URL": SINK,
        "LANGFUSE_HOST": SINK,
        "LANGFUSE_PUBLIC_KEY": "pk-lf-bench",
        "LANGFUSE_SECRET_KEY": "sk-lf-bench",
        "OTEL_EXPORTER_OTLP_ENDPOINT": SINK,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "DO_NOT_TRACK": "1",
        "SCARF_NO_ANALYTICS": "true",
    }
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import CHAINS, NoopHandler, Variant, bench_sync, count_runs, paired  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from llmobs_callbacks import LLMObs  # noqa: E402

# OpenInference calls a deprecated langchain-core API on every message; the warning's cost is
# theirs, but printing thousands of them would drown the table. (After the imports:
# langchain-core installs its own filter for its deprecation warnings on import.)
warnings.filterwarnings("ignore", message=r"Calling \.text\(\) as a method is deprecated")


def langfuse_variant() -> Variant | None:
    try:
        from langfuse import Langfuse
        from langfuse.langchain import CallbackHandler
    except ImportError as exc:
        print(f"(Langfuse not installed, skipped: {exc}; pip install -e '.[bench]')")
        return None
    client = Langfuse(public_key="pk-lf-bench", secret_key="sk-lf-bench", base_url=SINK)
    handler = CallbackHandler(public_key="pk-lf-bench")
    return Variant("Langfuse CallbackHandler", {"callbacks": [handler]}, flush=client.flush)


def langsmith_variant() -> Variant | None:
    try:
        from langchain_core.tracers.langchain import LangChainTracer
        from langsmith import Client
    except ImportError as exc:
        print(f"(LangSmith not installed, skipped: {exc}; pip install -e '.[bench]')")
        return None
    client = Client(api_url=SINK, api_key="bench")
    tracer = LangChainTracer(client=client, project_name="bench")

    def flush() -> None:
        tracer.wait_for_futures()
        client.flush()

    return Variant("LangSmith LangChainTracer", {"callbacks": [tracer]}, flush=flush)


def openinference_variant() -> Variant | None:
    try:
        from openinference.instrumentation.langchain import LangChainInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError as exc:
        print(f"(OpenInference not installed, skipped: {exc}; pip install -e '.[bench]')")
        return None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    instrumentor = LangChainInstrumentor()

    def flush() -> None:
        provider.force_flush()
        exporter.clear()  # in-memory: do not let it grow over the run

    return Variant(
        "OpenInference LangChainInstrumentor",
        {},
        flush=flush,
        enter=lambda: instrumentor.instrument(tracer_provider=provider),
        leave=instrumentor.uninstrument,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=60, help="invocations per variant per round")
    args = parser.parse_args()
    tmp_dir = tempfile.TemporaryDirectory(prefix="llmobs-peers-")
    tmp = Path(tmp_dir.name)
    obs = LLMObs(f"sqlite:///{tmp / 'peers.db'}", prometheus_registry=CollectorRegistry())
    variants: dict[str, Variant] = {
        "none": Variant("no callbacks", {}),
        "noop": Variant("no-op handler", {"callbacks": [NoopHandler()]}),
        "ours": Variant("llmobs (SQLite + Prometheus)", {"callbacks": [obs.langchain_handler()]}, obs),
    }
    for key, make in (
        ("langfuse", langfuse_variant),
        ("langsmith", langsmith_variant),
        ("openinference", openinference_variant),
    ):
        variant = make()
        if variant is not None:
            variants[key] = variant
    print(f"\nrounds={args.rounds} n={args.n}; loopback sink {SINK}\n")
    print(
        "| workload | variant | wall µs/inv (median) | added over no-op: caller CPU | total CPU | wall "
        "| ratio to ours: caller CPU | total CPU |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    try:
        for label, (factory, x) in CHAINS.items():
            chain = factory()
            runs = count_runs(chain, x)
            res = bench_sync(chain, x, variants, args.rounds, args.n)
            wall, cpu, total = res.wall, res.cpu, res.total
            ours_cpu = paired(cpu["ours"], cpu["noop"])
            ours_total = paired(total["ours"], total["noop"])
            for key, v in variants.items():
                med = statistics.median(wall[key])
                if key in ("none", "noop"):
                    print(f"| {label} ({runs} runs) | {v.label} | {med:.1f} | — | — | — | — | — |")
                    continue
                added_cpu, added_total = paired(cpu[key], cpu["noop"]), paired(total[key], total["noop"])
                added_wall = paired(wall[key], wall["noop"])
                print(
                    f"| {label} ({runs} runs) | {v.label} | {med:.1f} | {added_cpu:.1f} | {added_total:.1f} "
                    f"| {added_wall:.1f} | {_ratio(added_cpu, ours_cpu)} "
                    f"| {_ratio(added_total, ours_total)} |"
                )
    finally:
        for v in variants.values():
            v.settle()
        obs.shutdown()
        tmp_dir.cleanup()
    stats = sink_stats()
    print(
        f"\nloopback sink received {stats['requests']:,} requests, {stats['bytes'] / 1e6:.1f} MB "
        "(the HTTP exporters really exported); load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )


def _ratio(theirs: float, ours: float) -> str:
    return f"{theirs / ours:.1f}×" if ours > 0 else "n/a (ours ≤ 0: noise)"


if __name__ == "__main__":
    main()
