"""Completes finished spans on the processor thread: cost, payloads turned into bounded text.

Kept off the hot path on purpose: pricing through genai-prices costs ~150-250 µs per call and
serialising a large prompt costs more; the caller's chain should pay neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from ..diagnostics import Diagnostics
from ..model import SpanRecord
from .pricing import Pricer, model_key
from .serialize import bounded_list, jsonable_dict, to_text


class SpanPreparer:
    def __init__(
        self,
        pricer: Pricer,
        diagnostics: Diagnostics,
        *,
        max_content_chars: int = 16_000,
        max_attribute_chars: int = 4_096,
        capture_content: bool = True,
        privacy: Callable[[Sequence[SpanRecord]], None] | None = None,
    ) -> None:
        self._pricer = pricer
        self._diag = diagnostics
        self._max_chars = max_content_chars
        # Each string of metadata, invocation parameters, document metadata and tags is cut to
        # this; each of those fields holds max_content_chars in all (a 5 MB value inherited by
        # every span of a trace costs each row at most this much).
        self._max_attribute = max_attribute_chars
        self._capture = capture_content
        # redaction.PrivacyFilter: redaction, hashed user ids; None unless configured.
        self._privacy = privacy

    def __call__(self, spans: Sequence[SpanRecord]) -> None:
        for span in spans:
            try:
                self._prepare(span)
            except Exception as exc:  # noqa: BLE001 - store the span even if one field is odd
                self._diag.handler_error("prepare_span", exc)
                span.input = span.output = None
                span.metadata = span.invocation_params = None
                span.documents = None
        if self._privacy is not None:  # after serialisation, before any exporter sees the batch
            self._privacy(spans)

    def _prepare(self, span: SpanRecord) -> None:
        span.span_id = str(span.span_id)
        span.trace_id = str(span.trace_id)
        if span.parent_span_id is not None:
            span.parent_span_id = str(span.parent_span_id)
        for decision in span.branch_decisions or ():
            decision.span_id = str(decision.span_id)
        if span.request_model or span.response_model:
            span.model = model_key(span.request_model, span.response_model)
        if span.usage is not None and span.cost_usd is None and span.model:
            # Priced as the model that answered, else as the one asked for.
            at = datetime.fromtimestamp(span.start_ns / 1e9, tz=timezone.utc)
            price = self._pricer.price(
                span.response_model or span.request_model or span.model,
                span.provider,
                span.usage,
                at,
                span.price_context,
                requested_model=span.request_model,
            )
            if price is None:
                self._diag.unpriced_model(span.model)
            else:
                span.cost_usd = price.cost_usd
                span.price_source = price.source
        if self._capture:
            span.input = to_text(span.input, self._max_chars)
            span.output = to_text(span.output, self._max_chars)
        else:
            span.input = span.output = None
        cut, total = self._max_attribute, self._max_chars
        span.metadata = jsonable_dict(span.metadata, cut, total)
        span.invocation_params = jsonable_dict(span.invocation_params, cut, total)
        if span.tags:
            span.tags = bounded_list(span.tags, cut, total)
        for doc in span.documents or ():
            doc.content = to_text(doc.content, self._max_chars) if self._capture else None
            doc.metadata = jsonable_dict(doc.metadata, cut, total)
        if span.prompt_template is not None and not self._capture:
            span.prompt_template.template = None
