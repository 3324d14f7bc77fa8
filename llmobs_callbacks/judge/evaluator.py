"""The Judge: picks finished traces on the processor thread, scores them on its own workers.

``Judge`` is a ``SpanExporter``: the processor thread hands it every prepared batch. It keeps
the retrieved documents of traces that may be sampled, and when a trace's root span arrives
(``parent_span_id is None``: the trace is finished) it decides — by ``sample_fraction(trace_id)``
— whether to judge it, and if so enqueues a task on its bounded worker pool (a full queue drops
the task and counts ``llmobs_judge_evaluations_total{status="dropped"}``). Nothing here runs on
the application's thread.

A worker renders the rubric, calls the judge model and records the call as one
``kind='judge'`` span (framework ``manual``) in a trace of its own, with tokens and cost (priced
on the worker with the LLMObs pricer, so the same cost lands on the span, the score rows and
the budget). Judge spans are never judged. Scores go through the ``ScoreWriter``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..model import STATUS_ERROR, SpanKind, SpanRecord
from ..scores import SOURCE_JUDGE, SOURCE_RULE, PendingScore, utcnow
from .budget import JudgeBudget
from .llm import call_llm, model_identity
from .rubric import DEFAULT_METRICS, JudgeOutputError, Metric, MetricScore, Rubric
from .rules import rule_scores
from .sampler import Sampler

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..diagnostics import Diagnostics
    from ..prepare.pricing import Pricer
    from ..recorder import Recorder
    from ..scores import ScoreWriter
    from ..sinks.prometheus import PrometheusExporter

logger = logging.getLogger("llmobs_callbacks")

SCORE_NAMESPACE = uuid.UUID("9c4f6a53-2b0e-4d7a-8f51-3a6e0c1d7b22")
JUDGE_FRAMEWORK = "manual"

# llmobs_judge_evaluations_total{status}
STATUS_OK = "ok"
STATUS_INVALID = "invalid"  # the model answered, but not the rubric's JSON: no scores stored
STATUS_ERROR_ = "error"  # the model call raised
STATUS_BUDGET = "budget_exhausted"  # sampled, skipped: today's judge budget is spent
STATUS_DROPPED = "dropped"  # sampled, skipped: the judge's queue was full


@dataclass
class JudgeTask:
    """One finished trace to judge: its root's input (question) and output (answer)."""

    trace_id: str
    question: str
    answer: str
    context: list[str] = field(default_factory=list)
    prompt_version: str | None = None
    root_span_id: str | None = None
    is_error: bool = False


@dataclass
class Evaluation:
    trace_id: str
    status: str
    scores: list[MetricScore] = field(default_factory=list)
    reason: str | None = None
    cost_usd: float | None = None
    judge_model: str | None = None
    judge_span_id: str | None = None
    prompt_version: str | None = None


def score_id(trace_id: str, source: str, rubric_id: str, name: str) -> str:
    """Deterministic: judging the same trace with the same rubric again writes no new row."""
    return uuid.uuid5(SCORE_NAMESPACE, f"{trace_id}|{source}|{rubric_id}|{name}").hex


class _Pool:
    """A bounded task queue and a few daemon workers (started on first use)."""

    def __init__(self, work: Callable[[JudgeTask], object], workers: int, max_queue_size: int) -> None:
        if workers < 1 or max_queue_size < 1:
            raise ValueError("workers and max_queue_size must be at least 1")
        self._work = work
        self._workers = workers
        self._max = max_queue_size
        self._queue: deque[JudgeTask] = deque()
        self._cond = threading.Condition()
        self._unfinished = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, task: JudgeTask) -> bool:
        with self._cond:
            if self._closed or len(self._queue) >= self._max:
                return False
            self._queue.append(task)
            self._unfinished += 1
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._run, name="llmobs-judge", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cond.notify_all()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                task = self._queue.popleft()
            try:
                self._work(task)
            except Exception:
                logger.exception("llmobs judge: unexpected error")
            finally:
                with self._cond:
                    self._unfinished -= 1
                    self._cond.notify_all()

    def join(self, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished == 0, timeout)

    def close(self, timeout: float | None) -> bool:
        done = self.join(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return done

    def pending(self) -> int:
        return self._unfinished


def _plain(text: Any) -> str:
    """The root's prepared input/output as the judge should read it: a JSON object with one
    text field (``{"question": "..."}``) becomes that text."""
    if text is None:
        return ""
    text = str(text)
    if text[:1] in "{[":
        import json

        try:
            value = json.loads(text)
        except ValueError:
            return text
        while isinstance(value, dict) and len(value) == 1:
            value = next(iter(value.values()))
        if isinstance(value, str):
            return value
    return text


class Judge:
    """Sampled LLM-as-judge (and rule scores) for finished traces, off the request path.

    >>> obs = LLMObs(judge=Judge(llm=chat_model, sample_rate=0.05,
    ...                          budget_usd_per_day=5.0))  # doctest: +SKIP

    Args:
        llm: the judge model — a LangChain chat model / LLM (``.invoke``), a LlamaIndex LLM
            (``.complete``), or a function ``prompt -> text``. ``None`` with ``rules=True``
            computes rule scores only.
        sample_rate: share of finished traces judged, by ``sha256(trace_id)``.
        metrics: metric names (built in: faithfulness, relevance, completeness 1-5 and
            hallucination yes/no) or ``Metric`` objects for custom ones.
        rubric: a ``Rubric`` (custom template and metrics); wins over ``metrics``.
        budget_usd_per_day: judge spend per UTC day: the cost of today's judge spans in the
            store (of this LLMObs's ``service``, else the whole store's), so restarts and worker
            processes share it; when spent, sampled traces are skipped and counted as
            ``status="budget_exhausted"``. See ``judge.budget``.
        max_calls_per_day: judge calls per UTC day, counted the same way. A model whose replies
            have no price cannot bind a USD budget: it is then limited to ``max_calls_per_day``
            (default ``DEFAULT_UNPRICED_CALLS_PER_DAY`` = 1000), with a warning logged once.
        budget_refresh_s: how often (at most) a worker reads today's judge spans from the store.
        error_sample_rate: rate for traces whose root failed (over-sampling errors).
        new_prompt_sample_rate / new_prompt_window_h: rate for prompt versions this process
            first saw less than ``new_prompt_window_h`` hours ago.
        rules: also store the heuristic rule scores (``source='rule'``) of sampled traces.
        workers / max_queue_size: the judge's own thread pool and its bounded queue.
    """

    def __init__(
        self,
        llm: Any = None,
        *,
        sample_rate: float = 0.05,
        metrics: Sequence[str | Metric] = DEFAULT_METRICS,
        rubric: Rubric | None = None,
        budget_usd_per_day: float | None = None,
        max_calls_per_day: int | None = None,
        budget_refresh_s: float = 5.0,
        error_sample_rate: float | None = None,
        new_prompt_sample_rate: float | None = None,
        new_prompt_window_h: float = 24.0,
        rules: bool = False,
        workers: int = 2,
        max_queue_size: int = 256,
        max_pending_traces: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if llm is None and not rules:
            raise ValueError("a Judge needs an llm, or rules=True for rule scores only")
        self.llm = llm
        self.rubric = rubric or Rubric.of(metrics)
        self.sampler = Sampler(
            sample_rate,
            error_sample_rate=error_sample_rate,
            new_prompt_sample_rate=new_prompt_sample_rate,
            new_prompt_window_h=new_prompt_window_h,
            clock=clock or time.time,
        )
        self._clock_given = clock is not None
        self.budget = JudgeBudget(
            budget_usd_per_day,
            max_calls_per_day,
            refresh_interval_s=budget_refresh_s,
            clock=clock or time.time,
        )
        self.unpriced_calls = 0
        self.rules = rules
        self.counts: Counter[str] = Counter()  # evaluations by status, as in the metric
        self._counts_lock = threading.Lock()
        self._pool = _Pool(self._evaluate_task, workers, max_queue_size)
        self._docs: OrderedDict[str, list[str]] = OrderedDict()
        self._max_pending = max_pending_traces
        self._recorder: Recorder | None = None
        self._scores: ScoreWriter | None = None
        self._metrics: PrometheusExporter | None = None
        self._pricer: Pricer | None = None
        self._diag: Diagnostics | None = None

    # -- wiring (LLMObs) ----------------------------------------------------------------------

    def bind(
        self,
        *,
        recorder: Recorder,
        scores: ScoreWriter,
        metrics: PrometheusExporter | None,
        pricer: Pricer | None,
        diagnostics: Diagnostics,
        engine: Engine | None = None,
        service: str | None = None,
    ) -> None:
        if self._recorder is not None and self._recorder is not recorder:
            raise RuntimeError("this Judge already belongs to another LLMObs")
        self._recorder, self._scores, self._metrics = recorder, scores, metrics
        self._pricer, self._diag = pricer, diagnostics
        # Today's spend is read from the store; "today" is the day of the spans' own clock.
        self.budget.bind_store(engine, service)
        if not self._clock_given:
            self.budget.clock = lambda: recorder.clock() / 1e9

    # -- SpanExporter (processor thread) ------------------------------------------------------

    def export(self, spans: Sequence[SpanRecord]) -> None:
        if self._recorder is None:
            return
        sampler = self.sampler
        for span in spans:
            if span.kind == SpanKind.JUDGE:
                continue  # the judge's own calls are never judged
            trace_id = str(span.trace_id)
            root = span.parent_span_id is None
            if root and span.prompt_version is not None:
                sampler.see_prompt_version(span.prompt_version, span.start_ns / 1e9)
            if not sampler.might_sample(trace_id):
                continue
            if span.documents:
                docs = self._docs.get(trace_id)
                if docs is None:
                    docs = self._docs[trace_id] = []
                    if len(self._docs) > self._max_pending:
                        self._docs.popitem(last=False)
                docs.extend(str(d.content) for d in span.documents if d.content)
            if root:
                self._on_root(span, self._docs.pop(trace_id, []))

    def shutdown(self) -> None:
        """Called by the processor at its shutdown; LLMObs closes the pool before that."""

    def _on_root(self, root: SpanRecord, docs: list[str]) -> None:
        trace_id = str(root.trace_id)
        is_error = root.status == STATUS_ERROR
        if not self.sampler.should_sample(trace_id, is_error=is_error, prompt_version=root.prompt_version):
            return
        if self.llm is not None and not self.rules and self.budget.exhausted():
            self._count(STATUS_BUDGET)
            return
        task = JudgeTask(
            trace_id=trace_id,
            question=_plain(root.input),
            answer=_plain(root.output),
            context=docs,
            prompt_version=root.prompt_version,
            root_span_id=str(root.span_id),
            is_error=is_error,
        )
        if not self.submit(task):
            self._count(STATUS_DROPPED)
            if self._diag is not None:
                self._diag.dropped("judge_queue_full")

    # -- API ----------------------------------------------------------------------------------

    def submit(self, task: JudgeTask) -> bool:
        """Queue a trace for judging (never blocks); False when the queue is full."""
        return self._pool.submit(task)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every queued evaluation is done (its scores handed to the writer)."""
        return self._pool.join(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        return self._pool.close(timeout)

    def pending(self) -> int:
        return self._pool.pending()

    def evaluate(self, task: JudgeTask) -> Evaluation:
        """Judge one trace on the calling thread (the workers and ``llmobs judge`` use this)."""
        if self._recorder is None or self._scores is None:
            raise RuntimeError("the Judge is not attached: pass it to LLMObs(judge=...)")
        rows: list[PendingScore] = []
        if self.rules:
            for rule in rule_scores(task.answer, task.context):
                row = self._row(task, rule.name, rule.value, rule.label, SOURCE_RULE, rule.comment)
                row["id"] = score_id(task.trace_id, SOURCE_RULE, "rules", rule.name)
                rows.append(PendingScore(row, task.prompt_version))
        result = Evaluation(task.trace_id, STATUS_OK, prompt_version=task.prompt_version)
        if self.llm is not None:
            if not self.budget.admit():  # reads today's judge spend from the store when due
                result.status = STATUS_BUDGET
            else:
                try:
                    result = self._judge(task)
                except BaseException:
                    self.budget.release()
                    raise
                self.budget.add(result.cost_usd, span_id=result.judge_span_id)
                if result.cost_usd is None and result.status != STATUS_ERROR_:
                    self._unpriced(result.judge_model)
                n = len(result.scores)
                for s in result.scores:
                    row = self._row(task, s.name, s.value, s.label, SOURCE_JUDGE, result.reason)
                    row["id"] = score_id(task.trace_id, SOURCE_JUDGE, self.rubric.id, s.name)
                    row["judge_model"] = result.judge_model
                    row["cost_usd"] = None if result.cost_usd is None else result.cost_usd / n
                    rows.append(PendingScore(row, task.prompt_version))
            self._count(result.status)
        for pending in rows:
            self._scores.submit(pending)
        return result

    def stats(self) -> dict[str, Any]:
        with self._counts_lock:
            counts = dict(self.counts)
        return {
            "evaluations": counts,
            "pending": self.pending(),
            "spent_today_usd": self.budget.spent_today(),
            "calls_today": self.budget.calls_today(),
            "unpriced_calls": self.unpriced_calls,
        }

    def _unpriced(self, model: str | None) -> None:
        """A reply with no price: counted; warned once when a USD budget cannot bind."""
        with self._counts_lock:
            self.unpriced_calls += 1
            first = not self.budget.unpriced
            self.budget.unpriced = True
        if self._diag is not None:
            self._diag.event("judge_unpriced_calls")
        if first and self.budget.limit_usd is not None:
            logger.warning(
                "llmobs judge: no price for judge model %r, so budget_usd_per_day=%s cannot bind; "
                "judge calls are limited to %s per day instead (set Judge(max_calls_per_day=...), "
                "or price it with LLMObs(price_overrides=...))",
                model,
                self.budget.limit_usd,
                self.budget.call_cap,
            )

    # -- worker -------------------------------------------------------------------------------

    def _evaluate_task(self, task: JudgeTask) -> None:
        try:
            self.evaluate(task)
        except Exception as exc:  # noqa: BLE001
            self._count(STATUS_ERROR_)
            if self._diag is not None:
                self._diag.handler_error("judge", exc)

    def _judge(self, task: JudgeTask) -> Evaluation:
        recorder = self._recorder
        assert recorder is not None
        rubric = self.rubric
        prompt = rubric.render(task.question, task.answer, task.context)
        model, provider = model_identity(self.llm)
        span_id = str(uuid.uuid4())
        metadata: dict[str, Any] = {
            "judged_trace_id": task.trace_id,
            "rubric": rubric.name,
            "rubric_id": rubric.id,
            "judge_metrics": [m.name for m in rubric.metrics],
        }
        span = recorder.start(
            span_id, None, SpanKind.JUDGE, f"judge:{rubric.name}", JUDGE_FRAMEWORK, input=prompt,
            metadata=metadata, model=model, provider=provider, internal=True,
        )  # fmt: skip
        result = Evaluation(
            task.trace_id, STATUS_OK, judge_span_id=span_id, prompt_version=task.prompt_version
        )
        try:
            reply = call_llm(self.llm, prompt)
        except Exception as exc:  # noqa: BLE001 - a failing judge is counted, never raised
            metadata["judge_status"] = STATUS_ERROR_
            recorder.end(span_id, error=exc)
            result.status = STATUS_ERROR_
            result.reason = f"{type(exc).__name__}: {exc}"
            return result
        result.judge_model = reply.model or model
        if span is not None:
            span.provider = reply.provider or provider
            if self._pricer is not None and reply.usage is not None and result.judge_model:
                at = datetime.fromtimestamp(span.start_ns / 1e9, tz=timezone.utc)
                price = self._pricer.price(
                    result.judge_model, span.provider, reply.usage, at, requested_model=model
                )
                if price is not None:
                    span.cost_usd, span.price_source = price.cost_usd, price.source
                    result.cost_usd = price.cost_usd
        try:
            judgement = rubric.parse(reply.text)
        except JudgeOutputError as exc:
            result.status = STATUS_INVALID
            result.reason = str(exc)
            metadata["judge_error"] = str(exc)[:500]
        else:
            result.scores, result.reason = judgement.scores, judgement.reason
        metadata["judge_status"] = result.status
        recorder.end(span_id, output=reply.text, usage=reply.usage, model=reply.model)
        return result

    def _row(
        self, task: JudgeTask, name: str, value: float, label: str | None, source: str, comment: str | None
    ) -> dict[str, Any]:
        return {
            "id": None,
            "trace_id": task.trace_id,
            "span_id": task.root_span_id,
            "name": name,
            "value": value,
            "label": label,
            "source": source,
            "comment": comment,
            "judge_model": None,
            "cost_usd": None,
            "created_at": utcnow(),
        }

    def _count(self, status: str) -> None:
        with self._counts_lock:
            self.counts[status] += 1
        if self._metrics is not None:
            try:
                self._metrics.count_judge_evaluation(status)
            except Exception as exc:  # noqa: BLE001
                if self._diag is not None:
                    self._diag.handler_error("judge_metrics", exc)
