"""LLMObs: wires recorder → processor → exporters from one configuration."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry

from .diagnostics import Diagnostics
from .enrich import SpanPreparer
from .pricing import ModelPriceOverride, Pricer
from .processor import BatchSpanProcessor, SpanExporter, SynchronousSpanProcessor, register_atexit_shutdown
from .recorder import Recorder
from .scores import (
    PendingScore,
    ScoreWriter,
    feedback_rating,
    feedback_row,
    in_flight,
    monotonic_deadline,
    remaining,
)
from .sinks.prometheus import MetricsServer, PrometheusExporter
from .sinks.schema import resolve_database_url
from .sinks.sql import SQLExporter

if TYPE_CHECKING:
    from .integrations.langchain import LangChainCallbackHandler
    from .integrations.llama_index import LlamaIndexInstrumentation
    from .integrations.llama_index_legacy import LlamaIndexCallbackHandler
    from .judge import Judge

# Context declared with ``LLMObs.context(...)``: (metadata, tags), read by the LlamaIndex
# adapters for every span started inside the block (asyncio tasks inherit it).
_DECLARED_CONTEXT: ContextVar[tuple[dict[str, Any], list[str]] | None] = ContextVar(
    "llmobs_declared_context", default=None
)


def current_context() -> tuple[dict[str, Any], list[str]] | None:
    """The context declared by the innermost ``LLMObs.context`` block, or None."""
    return _DECLARED_CONTEXT.get()


def restore_context(metadata: dict[str, Any], tags: list[str]) -> None:
    """Re-declare a captured context in the current one (a workflow's step task)."""
    _DECLARED_CONTEXT.set((metadata, tags))


def _langchain_module() -> Any:
    try:
        from .integrations import langchain
    except ImportError as exc:
        raise ImportError(
            "the LangChain integration needs langchain-core: pip install 'llmobs-callbacks[langchain]'"
        ) from exc
    return langchain


def _llama_index_module(legacy: bool = False) -> Any:
    try:
        if legacy:
            from .integrations import llama_index_legacy as module
        else:
            from .integrations import llama_index as module
    except ImportError as exc:
        raise ImportError(
            "the LlamaIndex integration needs llama-index-core: pip install 'llmobs-callbacks[llama-index]'"
        ) from exc
    return module


class LangChainInstrumentation:
    """Handle returned by ``instrument_langchain``; ``close()`` switches it off."""

    def __init__(self, obs: LLMObs) -> None:
        self._obs = obs

    def close(self) -> None:
        _langchain_module().unbind_global(self._obs.recorder)


class LLMObs:
    """In-process LLM observability: one object per application (or per store).

    >>> obs = LLMObs()                      # $LLMOBS_DATABASE_URL or sqlite:///llmobs.db
    >>> chain.invoke(x, config={"callbacks": [obs.langchain_handler()]})  # doctest: +SKIP
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        service: str | None = None,
        environment: str | None = None,
        synchronous: bool = False,
        price_overrides: Mapping[str, ModelPriceOverride | Mapping[str, float]] | None = None,
        max_content_chars: int = 16_000,
        capture_content: bool = True,
        max_queue_size: int = 20_000,
        max_batch_size: int = 512,
        flush_interval_s: float = 0.5,
        open_span_ttl_s: float = 3600.0,
        exporters: list[SpanExporter] | None = None,
        clock: Callable[[], int] | None = None,
        prometheus_registry: CollectorRegistry | Literal[False] | None = REGISTRY,
        prometheus_label_limit: int | Mapping[str, int] = 100,
        judge: Judge | None = None,
    ) -> None:
        """
        Args:
            database_url: SQLAlchemy URL of the store; ``None`` reads ``$LLMOBS_DATABASE_URL``
                and falls back to ``sqlite:///llmobs.db``. PostgreSQL: ``postgresql+psycopg://…``.
            service, environment: stored on every span (default ``$LLMOBS_SERVICE`` /
                ``$LLMOBS_ENVIRONMENT``).
            synchronous: write on the calling thread (scripts, serverless) instead of a
                background thread.
            price_overrides: ``{"model": {"input": .., "output": .., "cached_input": ..,
                "cache_write": ..}}`` in USD per million tokens; wins over genai-prices.
            max_content_chars: inputs, outputs and document texts are truncated to this.
            capture_content: ``False`` stores no prompt/response/document text at all.
            max_queue_size: finished spans waiting for the writer; beyond it spans are dropped
                and counted (``stats()["spans_dropped"]["queue_full"]``), never blocking.
            open_span_ttl_s: runs still open after this long are closed as errors and stored.
            exporters: further exporters that receive every prepared batch.
            clock: epoch nanoseconds for span timestamps (default ``time.time_ns``); for replays
                and simulations that must not wait in real time.
            prometheus_registry: where the ``llmobs_*`` Prometheus metrics go (default:
                prometheus-client's global registry); ``None`` or ``False`` turns them off.
                Metrics are updated on the processor thread, never on the caller's.
            prometheus_label_limit: distinct values kept per label (or ``{label: cap, "*":
                default}``); further values become ``__other__``. The first LLMObs of a
                registry decides.
            judge: a ``Judge`` (sampled LLM-as-judge and rule scores of finished traces, on
                its own worker threads); scores go to the ``scores`` table and Prometheus.
        """
        self.database_url = resolve_database_url(database_url)
        self.service = service or os.environ.get("LLMOBS_SERVICE")
        self.environment = environment or os.environ.get("LLMOBS_ENVIRONMENT")
        self.diagnostics = Diagnostics()
        self.sql = SQLExporter(self.database_url, service=self.service, environment=self.environment)
        pricer = Pricer(price_overrides)
        preparer = SpanPreparer(
            pricer,
            self.diagnostics,
            max_content_chars=max_content_chars,
            capture_content=capture_content,
        )
        self.metrics: PrometheusExporter | None = None
        if prometheus_registry is not None and prometheus_registry is not False:
            self.metrics = PrometheusExporter(
                None if prometheus_registry is True else prometheus_registry,
                label_limit=prometheus_label_limit,
                diagnostics=self.diagnostics,
            )
        self._metrics_servers: list[MetricsServer] = []
        all_exporters: list[SpanExporter] = [self.sql, *(exporters or [])]
        self.judge = judge
        if judge is not None:
            all_exporters.append(judge)
        if self.metrics is not None:
            all_exporters.append(self.metrics)
        if synchronous:
            self.processor: BatchSpanProcessor | SynchronousSpanProcessor = SynchronousSpanProcessor(
                preparer, all_exporters, self.diagnostics
            )
        else:
            self.processor = BatchSpanProcessor(
                preparer,
                all_exporters,
                self.diagnostics,
                max_queue_size=max_queue_size,
                max_batch_size=max_batch_size,
                schedule_delay_s=flush_interval_s,
            )
        self.recorder = Recorder(
            self.processor,
            self.diagnostics,
            open_span_ttl_s=open_span_ttl_s,
            **({"clock": clock} if clock is not None else {}),
        )
        self.processor.add_housekeeping(self.recorder.evict_expired, interval_s=min(60.0, open_span_ttl_s))
        self.scores = ScoreWriter(self.sql, self.metrics, self.diagnostics)
        if judge is not None:
            judge.bind(
                recorder=self.recorder,
                scores=self.scores,
                metrics=self.metrics,
                pricer=pricer,
                diagnostics=self.diagnostics,
            )
        self._handler: LangChainCallbackHandler | None = None
        self._llama_index: LlamaIndexInstrumentation | None = None
        self._llama_index_handler: LlamaIndexCallbackHandler | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._cancel_atexit = register_atexit_shutdown(self._atexit)

    # -- LangChain --------------------------------------------------------------------------

    def langchain_handler(self) -> LangChainCallbackHandler:
        """A LangChain callback handler recording into this store (the same one every call)."""
        with self._lock:
            if self._handler is None:
                LangChainCallbackHandler = _langchain_module().LangChainCallbackHandler
                self._handler = LangChainCallbackHandler(self.recorder, self.diagnostics)
            return self._handler

    def instrument_langchain(self) -> LangChainInstrumentation:
        """Record every LangChain run in the process, with no ``callbacks`` in any config.

        A handler also passed explicitly is not recorded twice (runs are keyed by run_id).
        """
        _langchain_module().global_handler().bind(self.recorder, self.diagnostics)
        return LangChainInstrumentation(self)

    # -- LlamaIndex -------------------------------------------------------------------------

    def instrument_llama_index(self) -> LlamaIndexInstrumentation:
        """Record every LlamaIndex query, chat, retrieval, agent and workflow run in the process.

        Attaches a span and an event handler to LlamaIndex's root instrumentation dispatcher;
        the handle's ``close()`` detaches them. Calling it again returns the same attached
        handle (handlers are never added twice).
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("this LLMObs was shut down")
            handle = self._llama_index
            if handle is None or not handle.attached:
                handle = _llama_index_module().LlamaIndexInstrumentation(self.recorder, self.diagnostics)
                self._llama_index = handle
            handle.attach()
            return handle

    def llama_index_callback_handler(self) -> LlamaIndexCallbackHandler:
        """A legacy ``llama_index.core.callbacks`` handler, for apps still on ``CallbackManager``:
        ``Settings.callback_manager = CallbackManager([obs.llama_index_callback_handler()])``
        (set it before creating indexes and engines). Use either this or
        ``instrument_llama_index()``, not both: each records its own copy of every run."""
        with self._lock:
            if self._llama_index_handler is None:
                handler_cls = _llama_index_module(legacy=True).LlamaIndexCallbackHandler
                self._llama_index_handler = handler_cls(self.recorder, self.diagnostics)
            return self._llama_index_handler

    @staticmethod
    @contextmanager
    def context(
        *,
        prompt_name: str | None = None,
        prompt_version: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        tags: Sequence[str] | None = None,
        **metadata: Any,
    ) -> Iterator[None]:
        """Declare context for the LlamaIndex runs inside the block (nested blocks add to it).

        >>> with obs.context(prompt_version="v2", session_id="s-1", user_id="u-1", tags=["beta"]):
        ...     query_engine.query("How long do refunds take?")  # doctest: +SKIP

        Extra keyword arguments are stored as span attributes. LangChain runs take theirs from
        ``config["metadata"]`` instead.
        """
        declared = {
            k: v
            for k, v in (
                ("prompt_name", prompt_name),
                ("prompt_version", prompt_version),
                ("session_id", session_id),
                ("user_id", user_id),
            )
            if v is not None
        }
        declared.update(metadata)
        outer = _DECLARED_CONTEXT.get()
        if outer is not None:
            declared = {**outer[0], **declared}
            all_tags = [*outer[1], *(str(t) for t in tags or ())]
        else:
            all_tags = [str(t) for t in tags or ()]
        token = _DECLARED_CONTEXT.set((declared, all_tags))
        try:
            yield
        finally:
            _DECLARED_CONTEXT.reset(token)

    # -- quality ----------------------------------------------------------------------------

    def feedback(
        self,
        trace_id: object,
        score: float = 1.0,
        comment: str = "",
        name: str = "user_feedback",
        *,
        rating: str | None = None,
        span_id: object = None,
    ) -> str:
        """Store user feedback on a trace as a ``scores`` row (``source='user'``); returns its id.

        Thumbs up/down is ``score=1.0`` / ``0.0``; any float (a 1-5 rating) is kept as is. Only
        enqueues: the row is written by a background thread (``flush()`` waits for it). Works
        for traces still running, stored ones, and unknown ids: those are stored with
        ``label='unknown_trace'``; otherwise ``label`` is the rating (``positive`` /
        ``negative`` / ``neutral`` for 0..1 scores, see ``scores.feedback_rating``), which is
        also the ``rating`` label of ``llmobs_feedback_total``.
        """
        value = float(score)
        rating = rating or feedback_rating(value)
        known, prompt_version = in_flight(self.recorder, trace_id)
        row = feedback_row(trace_id, value, comment, name, rating, span_id)
        self.scores.submit(
            PendingScore(row, prompt_version, feedback_rating=rating, check_trace=True, in_flight=known)
        )
        return str(row["id"])

    # -- lifecycle --------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until every span finished so far is stored, the judge has scored the traces
        it sampled (its own spans stored too) and every score is written; False on timeout."""
        deadline = monotonic_deadline(timeout)
        ok = self.processor.flush(timeout)
        if self.judge is not None:
            ok = self.judge.flush(remaining(deadline)) and ok
            ok = self.processor.flush(remaining(deadline)) and ok
        return self.scores.flush(remaining(deadline)) and ok

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Flush, stop the writer and release the database. Spans ended later are counted as dropped."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        self._cancel_atexit()
        if "llmobs_callbacks.integrations.langchain" in sys.modules:
            LangChainInstrumentation(self).close()
        if self._handler is not None:
            self._handler.bind(None)
        if self._llama_index is not None:
            self._llama_index.close()
        if self._llama_index_handler is not None:
            self._llama_index_handler.bind(None)
        flushed = self.processor.flush(timeout)
        if self.judge is not None:
            flushed = self.judge.close(timeout) and flushed
        flushed = self.scores.close(timeout) and flushed
        flushed = self.processor.shutdown(timeout) and flushed
        for server in self._metrics_servers:
            server.close()
        return flushed

    def _atexit(self) -> None:
        self.shutdown(timeout=5.0)

    def serve_metrics(self, port: int = 9464, addr: str = "127.0.0.1") -> MetricsServer:
        """Serve the Prometheus metrics on ``http://addr:port/metrics`` from a daemon thread,
        for apps without a ``/metrics`` endpoint; ``port=0`` picks a free port (``.port``).
        Stopped by ``shutdown()`` (or the returned server's ``close()``)."""
        if self.metrics is None:
            raise RuntimeError("Prometheus metrics are off for this LLMObs (prometheus_registry=None)")
        with self._lock:
            if self._closed:
                raise RuntimeError("this LLMObs was shut down")
            server = MetricsServer(self.metrics.registry, port=port, addr=addr)
            self._metrics_servers.append(server)
        return server

    def stats(self) -> dict[str, Any]:
        """What was dropped, failed or left unpriced, and what is pending."""
        snapshot: dict[str, Any] = self.diagnostics.snapshot()
        snapshot["queued_spans"] = self.processor.queue_size()
        snapshot["open_spans"] = self.recorder.open_span_count()
        if self.judge is not None:
            snapshot["judge"] = self.judge.stats()
        return snapshot

    def __enter__(self) -> LLMObs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
