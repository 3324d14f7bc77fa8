"""LLMObs: wires recorder → processor → exporters from one configuration."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from prometheus_client import REGISTRY, CollectorRegistry

from .core.context import declared as declare_context
from .diagnostics import Diagnostics
from .enrich import SpanPreparer
from .pricing import ModelPriceOverride, Pricer
from .processor import BatchSpanProcessor, SpanExporter, SynchronousSpanProcessor, register_atexit_shutdown
from .recorder import Recorder
from .redaction import PrivacyFilter, RedactSpec
from .reliability import (
    check_options,
    describe_database_error,
    install_sigterm_flush,
    remove_sigterm_flush,
)
from .scores import (
    PendingScore,
    ScoreWriter,
    feedback_rating,
    feedback_row,
    in_flight,
    monotonic_deadline,
    remaining,
)
from .sinks.durable import DurableSQLExporter, default_spool_dir, is_transient
from .sinks.prometheus import MetricsServer, PrometheusExporter
from .sinks.schema import SchemaVersionError, ensure_schema, make_engine, resolve_database_url
from .sinks.sql import SQLExporter

if TYPE_CHECKING:
    from .alerts import Alert, AlertManager, Notifier
    from .budget import BudgetEvent, BudgetTracker
    from .integrations.langchain import LangChainCallbackHandler
    from .integrations.llama_index import LlamaIndexInstrumentation
    from .integrations.llama_index_legacy import LlamaIndexCallbackHandler
    from .judge import Judge


def _utc(epoch_ns: int) -> datetime:
    return datetime.fromtimestamp(epoch_ns / 1e9, tz=timezone.utc)


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
        max_attribute_chars: int = 4_096,
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
        queue_full: Literal["drop", "block"] = "drop",
        block_timeout_s: float = 1.0,
        require_database: bool = True,
        spool_dir: str | os.PathLike[str] | Literal[False] | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        write_retry_delays_s: Sequence[float] | None = None,
        replay_interval_s: float = 5.0,
        database_timeout_s: float = 5.0,
        write_timeout_s: float = 0.25,
        exit_timeout_s: float = 5.0,
        handle_sigterm: bool = True,
        redact: RedactSpec = None,
        hash_user_ids: bytes | str | None = None,
        budget_usd: Mapping[str, float] | None = None,
        on_budget: Callable[[BudgetEvent], Any] | None = None,
        anomaly_check_every: str | float | None = None,
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
            max_content_chars: inputs, outputs and document texts are truncated to this; the
                metadata, invocation parameters, tags and document metadata of a span hold at
                most this much each too (entries past it are left out, counted under the key
                ``"…[truncated]"``).
            max_attribute_chars: each string in those (values and keys, tags) is truncated to
                this, ending in ``…[truncated]``: a huge metadata value inherited by every span
                of a trace costs each row this much at most.
            capture_content: ``False`` stores no prompt/response/document text at all.
            max_queue_size: finished spans waiting for the writer. Past 80 % of it the writer
                spills batches to the spool (replayed once the queue is under 50 %) instead of
                waiting on the store; when it is full anyway, spans are dropped and counted
                (``stats()["spans_dropped"]["queue_full"]``), never blocking, unless
                ``queue_full="block"``: then the caller waits up to ``block_timeout_s`` for room
                before the span is dropped and counted.
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
            require_database: an unreachable database raises ``ConfigurationError`` here
                (default); ``False`` starts anyway and spools spans until it answers.
            spool_dir: where batches that could not be written wait for the database (default
                ``$LLMOBS_SPOOL_DIR`` or ``~/.cache/llmobs-callbacks/spool``, one subdirectory
                per database URL, replayed by the next process too); ``False``: no spool
                (spans are dropped and counted as ``store_unavailable``).
            spool_max_bytes: spool bytes not yet replayed, per process; beyond it,
                ``spool_full`` drops (a full disk: ``disk_full``).
            write_retry_delays_s: deprecated (a ``DeprecationWarning``), no longer used: a batch whose
                write fails is spooled at once, and the spool is replayed (a probe after 0.5 s,
                doubling up to ``replay_interval_s``, and whenever ``flush`` waits).
            database_timeout_s: the wait for a PostgreSQL connection (connect timeout, whole
                seconds, at least 2) and SQLite's busy timeout for readers.
            write_timeout_s: the writer's bound on one write: SQLite's busy timeout (a file
                locked by another process), PostgreSQL's ``lock_timeout`` (``statement_timeout``
                4× it, at least 1 s). A write that fails or times out sends its batch to the
                spool at once: the worker never stalls on the store.
            exit_timeout_s: how long the ``atexit`` / SIGTERM flush waits for the store.
            handle_sigterm: flush on SIGTERM, then terminate as before; installed only from
                the main thread when SIGTERM has no handler yet (the app's own handler wins).
            redact: built-in detectors by name (``"secrets"`` (formerly ``"api_key"``),
                ``"email"``, ``"phone"``, ``"credit_card"``, ``"ip"``; ``True`` for all) and/or
                callables ``str -> str``, applied on the processor thread to inputs, outputs,
                documents, error messages, attribute/tag strings and score comments before any
                exporter, log or judge sees them (see ``redaction.py``).
            hash_user_ids: an HMAC key: ``user_id`` is stored as its keyed HMAC-SHA256 (hex),
                stable per key, so per-user analysis still works.
            budget_usd: spend budgets in USD per ``"day"``, ``"week"`` and/or ``"month"`` (UTC),
                e.g. ``{"day": 50}``: gauges ``llmobs_budget_usd{period}`` and
                ``llmobs_budget_spend_usd{period}``, and an alert at 80 % and 100 % of each
                (through ``alerts()``'s notifiers; logged by default). See ``budget.py``.
            on_budget: also called with each ``BudgetEvent`` (on the alert thread).
            anomaly_check_every: run the anomaly detectors on the store every ``"5m"`` (or
                seconds) on a daemon thread and send new anomalies to ``alerts()``'s notifiers
                (needs the ``analysis`` extra).
        """
        check_options(
            max_queue_size=max_queue_size,
            max_batch_size=max_batch_size,
            flush_interval_s=flush_interval_s,
            open_span_ttl_s=open_span_ttl_s,
            max_content_chars=max_content_chars,
            max_attribute_chars=max_attribute_chars,
            queue_full=queue_full,
            block_timeout_s=block_timeout_s,
            spool_max_bytes=spool_max_bytes,
            write_retry_delays_s=write_retry_delays_s,
            replay_interval_s=replay_interval_s,
            database_timeout_s=database_timeout_s,
            write_timeout_s=write_timeout_s,
            exit_timeout_s=exit_timeout_s,
            price_overrides=price_overrides,
        )
        if budget_usd:
            from .budget import validate_budgets

            validate_budgets(budget_usd)
        self.exit_timeout_s = exit_timeout_s
        self.database_url = resolve_database_url(database_url)
        self.service = service or os.environ.get("LLMOBS_SERVICE")
        self.environment = environment or os.environ.get("LLMOBS_ENVIRONMENT")
        self.diagnostics = Diagnostics()
        if judge is not None and not capture_content:
            raise ValueError("a Judge reads prompts and answers: it cannot work with capture_content=False")
        privacy = PrivacyFilter.create(
            self.diagnostics,
            redact=redact,
            hash_user_ids=hash_user_ids,
            capture_content=capture_content,
            max_content_chars=max_content_chars,
            max_attribute_chars=max_attribute_chars,
        )
        if privacy is not None and (privacy.redactor is not None or not capture_content):
            self.diagnostics.describe_exception = privacy.describe_exception
        self.sql, schema_ready = _open_store(
            self.database_url, self.service, self.environment, database_timeout_s, require_database
        )
        if spool_dir is None and not _in_memory(self.database_url):
            spool_dir = default_spool_dir(self.database_url)
        # Retries, spool and replay around the SQL writer (sinks/durable.py).
        self.durable = DurableSQLExporter(
            self.sql,
            self.diagnostics,
            spool_dir=spool_dir or None,
            spool_max_bytes=spool_max_bytes,
            max_recovery_interval_s=replay_interval_s,
            write_timeout_s=write_timeout_s,
            schema_ready=schema_ready,
        )
        pricer = Pricer(price_overrides)
        preparer = SpanPreparer(
            pricer,
            self.diagnostics,
            max_content_chars=max_content_chars + (privacy.content_margin if privacy else 0),
            max_attribute_chars=max_attribute_chars + (privacy.content_margin if privacy else 0),
            capture_content=capture_content,
            privacy=privacy,
        )
        self.metrics: PrometheusExporter | None = None
        if prometheus_registry is not None and prometheus_registry is not False:
            self.metrics = PrometheusExporter(
                None if prometheus_registry is True else prometheus_registry,
                label_limit=prometheus_label_limit,
                diagnostics=self.diagnostics,
                service=self.service,  # llmobs_info{service, environment}
                environment=self.environment,
            )
        self._metrics_servers: list[MetricsServer] = []
        if self.metrics is not None:
            self.durable.attach_metrics(self.metrics.registry)  # llmobs_spool_*, llmobs_store_*
        all_exporters: list[SpanExporter] = [self.durable, *(exporters or [])]
        self.judge = judge
        if judge is not None:
            all_exporters.append(judge)
        if self.metrics is not None:
            all_exporters.append(self.metrics)
        self._alerts: AlertManager | None = None
        self._on_budget = on_budget
        self.budget: BudgetTracker | None = None
        if budget_usd:
            from .budget import BudgetTracker

            self.budget = BudgetTracker(
                budget_usd,
                on_event=self._budget_event,
                registry=self.metrics.registry if self.metrics is not None else None,
                engine=self.sql.engine,
                now=_utc((clock or time.time_ns)()),
            )
            all_exporters.append(self.budget)
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
                queue_full=queue_full,
                block_timeout_s=block_timeout_s,
            )
        self.recorder = Recorder(
            self.processor,
            self.diagnostics,
            open_span_ttl_s=open_span_ttl_s,
            **({"clock": clock} if clock is not None else {}),
        )
        self.processor.add_housekeeping(self.recorder.evict_expired, interval_s=min(60.0, open_span_ttl_s))
        self.processor.add_housekeeping(self.durable.maintain, interval_s=0.0)  # replays when due
        if isinstance(self.processor, BatchSpanProcessor):
            self.durable.wake = self.processor.wake  # flush() waits; the worker replays
            self.durable.queue_level = self.processor.queue_level  # replay only with room
            self.durable.behind = self.processor.behind  # spill to the spool while behind
        # Scores go through the durable writer too: retried and spooled during an outage.
        self.scores = ScoreWriter(self.durable, self.metrics, self.diagnostics, privacy=privacy)
        if judge is not None:
            judge.bind(
                recorder=self.recorder,
                scores=self.scores,
                metrics=self.metrics,
                pricer=pricer,
                diagnostics=self.diagnostics,
                engine=self.sql.engine,  # the judge's daily budget is read from the store
                service=self.service,
            )
        self._handler: LangChainCallbackHandler | None = None
        self._llama_index: LlamaIndexInstrumentation | None = None
        self._llama_index_handler: LlamaIndexCallbackHandler | None = None
        self._lock = threading.Lock()
        self._closed = False
        if anomaly_check_every is not None:
            self.alerts().start(anomaly_check_every)
        self._cancel_atexit = register_atexit_shutdown(self._atexit)
        self.handles_sigterm = handle_sigterm and install_sigterm_flush(self)

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
        with declare_context(declared, tags or ()):
            yield

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
        user_id: object = None,
    ) -> str:
        """Store user feedback on a trace as a ``scores`` row (``source='user'``); returns its id.

        Thumbs up/down is ``score=1.0`` / ``0.0``; any float (a 1-5 rating) is kept as is. Only
        enqueues: the row is written by a background thread (``flush()`` waits for it). Works
        for traces still running, stored ones, and unknown ids: those are stored with
        ``label='unknown_trace'``; otherwise ``label`` is the rating (``positive`` /
        ``negative`` / ``neutral`` for 0..1 scores, see ``scores.feedback_rating``), which is
        also the ``rating`` label of ``llmobs_feedback_total`` (it counts submissions).

        ``user_id``: who rated. One score per (trace, user, name) counts: a user's later rating
        replaces the earlier one, which stays in the table with ``superseded_at`` set. Without a
        ``user_id`` every row counts. ``hash_user_ids`` / ``redact`` apply as to spans' user ids.
        """
        value = float(score)
        rating = rating or feedback_rating(value)
        known, prompt_version = in_flight(self.recorder, trace_id)
        # The recorder's clock: a replay's feedback lands at the replay's time, like its spans.
        created_at = _utc(self.recorder.clock())
        row = feedback_row(trace_id, value, comment, name, rating, span_id, created_at, user_id)
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
        ok = self.scores.flush(remaining(deadline)) and ok
        # Scores written while the database was down are in the spool: stored only when replayed.
        return self.durable.wait_stored(remaining(deadline)) and ok

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Flush, stop the writer and release the database. Spans ended later are counted as dropped."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        self._cancel_atexit()
        remove_sigterm_flush(self)
        if "llmobs_callbacks.integrations.langchain" in sys.modules:
            LangChainInstrumentation(self).close()
        if self._handler is not None:
            self._handler.bind(None)
        if self._llama_index is not None:
            self._llama_index.close()
        if self._llama_index_handler is not None:
            self._llama_index_handler.bind(None)
        deadline = monotonic_deadline(timeout)  # one budget for every step (exit must not stall)
        flushed = self.processor.flush(timeout)
        if self.judge is not None:
            flushed = self.judge.close(remaining(deadline)) and flushed
        flushed = self.scores.close(remaining(deadline)) and flushed
        flushed = self.processor.shutdown(remaining(deadline)) and flushed
        if self._alerts is not None:  # after the processor: budget alerts of the last spans
            flushed = self._alerts.close(remaining(deadline)) and flushed
        for server in self._metrics_servers:
            server.close()
        left = self.durable.pending_spans()
        if left:
            logging.getLogger("llmobs_callbacks").warning(
                "llmobs: %d span(s) stay spooled in %s; the next process using this database replays them",
                left,
                self.durable.spool.directory if self.durable.spool is not None else None,
            )
        return flushed

    def _atexit(self) -> None:
        self.shutdown(timeout=self.exit_timeout_s)

    def _on_exit(self, timeout: float) -> None:  # SIGTERM (reliability.install_sigterm_flush)
        self.shutdown(timeout=timeout)

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

    # -- alerts and budgets -----------------------------------------------------------------

    def alerts(
        self,
        notify: Sequence[Notifier | Callable[[Alert], Any]] | None = None,
        *,
        window: str | None = None,
        baseline: str | None = None,
        thresholds: Any = None,
        repeat_after: str | bool | None = False,
        min_severity: str | None = None,
        notify_resolved: bool | None = None,
    ) -> AlertManager:
        """The alert manager of this LLMObs (created on first use; later calls reconfigure it).

        ``notify``: ``WebhookNotifier(url)`` (Slack-compatible JSON POST), ``LoggingNotifier()``,
        or any callable ``fn(alert)`` (default: logging). ``check()`` detects anomalies in the
        store now and sends the new ones (de-duplicated; repeated after ``repeat_after``,
        default 6 h); ``LLMObs(anomaly_check_every="5m")`` does it in the background. Budget
        alerts go to the same notifiers. Other options: see ``alerts.AlertManager``.
        """
        from .alerts import AlertManager, as_notifier

        with self._lock:
            if self._alerts is None:
                self._alerts = AlertManager(
                    self.sql.engine,
                    notify,
                    clock=lambda: _utc(self.recorder.clock()),
                )
                if self._on_budget is not None:
                    self._alerts.budget_callbacks.append(self._on_budget)
            elif notify is not None:
                self._alerts.notifiers = [as_notifier(n) for n in notify]
            manager = self._alerts
        manager.configure(
            window=window,
            baseline=baseline,
            thresholds=thresholds,
            repeat_after=repeat_after,
            min_severity=min_severity,
            notify_resolved=notify_resolved,
        )
        return manager

    def _budget_event(self, event: BudgetEvent) -> None:
        # On the processor thread: only queue (the alert thread delivers).
        self.alerts().budget_alert(event)

    def stats(self) -> dict[str, Any]:
        """What was dropped, failed or left unpriced, and what is pending."""
        snapshot: dict[str, Any] = self.diagnostics.snapshot()
        snapshot["queued_spans"] = self.processor.queue_size()
        snapshot["open_spans"] = self.recorder.open_span_count()
        snapshot["spool"] = self.durable.stats()
        if self.judge is not None:
            snapshot["judge"] = self.judge.stats()
        return snapshot

    def __enter__(self) -> LLMObs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _in_memory(url: str) -> bool:
    parsed = sa.engine.make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def _open_store(
    url: str, service: str | None, environment: str | None, timeout_s: float, required: bool
) -> tuple[SQLExporter, bool]:
    """The SQL exporter, with its schema ensured (True) or deferred until the database answers."""
    try:
        engine = make_engine(url, timeout_s=timeout_s)
        sql = SQLExporter(engine, service=service, environment=environment, create_schema=False)
    except Exception as exc:  # a malformed URL, a missing driver, a directory we cannot create
        raise describe_database_error(url, exc) from exc
    try:
        ensure_schema(engine)
    except SchemaVersionError:
        raise
    except Exception as exc:  # turned into a clear error, or spooling by choice
        if required or not is_transient(exc):
            engine.dispose()
            raise describe_database_error(url, exc) from exc
        return sql, False
    return sql, True
