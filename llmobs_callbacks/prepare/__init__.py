"""The stage between the recorder and the exporters, on the processor thread.

``preparer.SpanPreparer`` completes each finished span: ``pricing`` (cost from genai-prices and
overrides), ``serialize`` (payloads → bounded JSON text) and, when configured, privacy
(``redaction``'s filters, with ``secrets``' detectors). The adapters use ``usage`` (provider
token counts → ``TokenUsage``) and ``prompts`` (prompt identity and derived versions) on the hot
path. The old top-level paths (``llmobs_callbacks.pricing`` …, ``enrich``) are these modules.
"""
