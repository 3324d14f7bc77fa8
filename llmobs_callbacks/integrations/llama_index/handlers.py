"""The span and event handlers LlamaIndex's root dispatcher calls, and the handle that attaches them."""

from __future__ import annotations

from typing import Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

from ...core.context import current_context, restore_context
from ...diagnostics import Diagnostics
from ...recorder import Recorder
from .tracer import LlamaIndexTracer

_PROPAGATION_KEY = "llmobs_context"


def _set_tracer(handler: Any, tracer: LlamaIndexTracer) -> None:
    """Keep the tracer in the instance ``__dict__``, not as a pydantic private attribute:
    those are read through ``BaseModel.__getattr__``, a microsecond per event on the hot path."""
    object.__setattr__(handler, "_tracer", tracer)


class LlamaIndexSpanHandler(BaseSpanHandler[Any]):
    """Span handler on the root dispatcher. Overrides ``span_enter/exit/drop`` directly: the
    base class's ``open_spans`` bookkeeping would duplicate the recorder's."""

    def __init__(self, tracer: LlamaIndexTracer) -> None:
        super().__init__(open_spans={}, completed_spans=[], dropped_spans=[], current_span_ids={})
        _set_tracer(self, tracer)

    @classmethod
    def class_name(cls) -> str:
        return "LLMObsSpanHandler"

    # Workflows carry these across the task (or process) that runs their steps.
    def capture_propagation_context(self) -> dict[str, Any]:
        declared = current_context()
        if declared is None:
            return {}
        return {_PROPAGATION_KEY: {"metadata": dict(declared[0]), "tags": list(declared[1])}}

    def restore_propagation_context(self, context: dict[str, Any]) -> None:
        try:
            declared = context.get(_PROPAGATION_KEY)
            if isinstance(declared, dict):
                restore_context(dict(declared.get("metadata") or {}), list(declared.get("tags") or ()))
        except Exception as exc:  # noqa: BLE001
            self._tracer._diag.handler_error("llama_index.restore_propagation_context", exc)

    def span_enter(
        self,
        id_: str,
        bound_args: Any,
        instance: Any | None = None,
        parent_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._tracer.span_enter(id_, bound_args, instance, parent_id, tags)
        except Exception as exc:  # noqa: BLE001
            self._tracer._diag.handler_error("llama_index.span_enter", exc)

    def span_exit(
        self, id_: str, bound_args: Any, instance: Any | None = None, result: Any | None = None, **kwargs: Any
    ) -> None:
        try:
            self._tracer.span_exit(id_, instance, result)
        except Exception as exc:  # noqa: BLE001
            self._tracer._diag.handler_error("llama_index.span_exit", exc)
            self._tracer.end_anyway(id_)

    def span_drop(
        self,
        id_: str,
        bound_args: Any,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._tracer.span_drop(id_, err)
        except Exception as exc:  # noqa: BLE001
            self._tracer._diag.handler_error("llama_index.span_drop", exc)
            self._tracer.end_anyway(id_)

    # Abstract in the base class; unused because the three methods above are overridden.
    def new_span(self, id_: str, bound_args: Any, instance: Any = None, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, id_: str, bound_args: Any, instance: Any = None, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, id_: str, bound_args: Any, instance: Any = None, **kwargs: Any) -> None:
        return None


class LlamaIndexEventHandler(BaseEventHandler):
    """Event handler on the root dispatcher: stream progress/end, exceptions, rerank info."""

    def __init__(self, tracer: LlamaIndexTracer) -> None:
        super().__init__()
        _set_tracer(self, tracer)

    @classmethod
    def class_name(cls) -> str:
        return "LLMObsEventHandler"

    def handle(self, event: Any, **kwargs: Any) -> None:
        try:
            self._tracer.handle(event)
        except Exception as exc:  # noqa: BLE001
            self._tracer._diag.handler_error("llama_index.event", exc)


class LlamaIndexInstrumentation:
    """Handle returned by ``LLMObs.instrument_llama_index()``; ``close()`` detaches."""

    def __init__(self, recorder: Recorder, diagnostics: Diagnostics) -> None:
        self.tracer = LlamaIndexTracer(recorder, diagnostics)
        self.span_handler = LlamaIndexSpanHandler(self.tracer)
        self.event_handler = LlamaIndexEventHandler(self.tracer)
        self._attached = False

    @property
    def attached(self) -> bool:
        return self._attached

    def attach(self) -> None:
        root = get_dispatcher()
        if not any(h is self.span_handler for h in root.span_handlers):
            root.add_span_handler(self.span_handler)
        if not any(h is self.event_handler for h in root.event_handlers):
            root.add_event_handler(self.event_handler)
        self._attached = True

    def close(self) -> None:
        """Detach both handlers from the root dispatcher (idempotent)."""
        try:
            self.tracer.drain()
        except Exception as exc:  # noqa: BLE001
            self.tracer._diag.handler_error("llama_index.close", exc)
        root = get_dispatcher()
        # New lists rather than in-place removal: a dispatch iterating the old list is unaffected.
        root.span_handlers = [h for h in root.span_handlers if h is not self.span_handler]
        root.event_handlers = [h for h in root.event_handlers if h is not self.event_handler]
        self._attached = False
        self.tracer.bind(None)
