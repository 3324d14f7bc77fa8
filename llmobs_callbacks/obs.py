"""LLMObs: wires recorder → processor → exporters from one configuration."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .diagnostics import Diagnostics
from .enrich import SpanPreparer
from .pricing import ModelPriceOverride, Pricer
from .processor import BatchSpanProcessor, SpanExporter, SynchronousSpanProcessor, register_atexit_shutdown
from .recorder import Recorder
from .sinks.schema import resolve_database_url
from .sinks.sql import SQLExporter

if TYPE_CHECKING:
    from .integrations.langchain import LangChainCallbackHandler


def _langchain_module() -> Any:
    try:
        from .integrations import langchain
    except ImportError as exc:
        raise ImportError(
            "the LangChain integration needs langchain-core: pip install 'llmobs-callbacks[langchain]'"
        ) from exc
    return langchain


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
        """
        self.database_url = resolve_database_url(database_url)
        self.service = service or os.environ.get("LLMOBS_SERVICE")
        self.environment = environment or os.environ.get("LLMOBS_ENVIRONMENT")
        self.diagnostics = Diagnostics()
        self.sql = SQLExporter(self.database_url, service=self.service, environment=self.environment)
        preparer = SpanPreparer(
            Pricer(price_overrides),
            self.diagnostics,
            max_content_chars=max_content_chars,
            capture_content=capture_content,
        )
        all_exporters: list[SpanExporter] = [self.sql, *(exporters or [])]
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
        self.recorder = Recorder(self.processor, self.diagnostics, open_span_ttl_s=open_span_ttl_s)
        self.processor.add_housekeeping(self.recorder.evict_expired, interval_s=min(60.0, open_span_ttl_s))
        self._handler: LangChainCallbackHandler | None = None
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

    # -- lifecycle --------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until every span finished so far is stored; False if ``timeout`` ran out."""
        return self.processor.flush(timeout)

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
        return self.processor.shutdown(timeout)

    def _atexit(self) -> None:
        self.shutdown(timeout=5.0)

    def stats(self) -> dict[str, Any]:
        """What was dropped, failed or left unpriced, and what is pending."""
        snapshot: dict[str, Any] = self.diagnostics.snapshot()
        snapshot["queued_spans"] = self.processor.queue_size()
        snapshot["open_spans"] = self.recorder.open_span_count()
        return snapshot

    def __enter__(self) -> LLMObs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
