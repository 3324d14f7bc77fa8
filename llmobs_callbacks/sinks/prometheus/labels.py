"""Bounded Prometheus label values: normalised, truncated, capped per label, overflow ``__other__``.

Every distinct label value creates a time series in Prometheus, forever (until retention).
Model names, tool names, retriever names, prompt versions (content hashes change with every
prompt edit) and LangGraph node names all come from the application, so each label gets a cap:
the first ``limit`` distinct values seen by this process are kept as they are, every later one
becomes ``__other__``. Admitted values are never evicted, so a series never changes its
meaning mid-flight. Session and user ids are never labels at all.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping

from ...prepare.pricing import strip_snapshot

OTHER = "__other__"
"""The value every label takes once its cap of distinct values is reached."""

MISSING = "none"
"""The value of a label the span does not have (no model, no prompt version, …)."""

DEFAULT_LABEL_LIMIT = 100
MAX_LABEL_CHARS = 128

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def normalize_model_name(model: str) -> str:
    """A model name as a label: one series per model family, not per dated snapshot.

    Lower-cased and stripped; path-like prefixes dropped (``models/gemini-1.5-pro`` →
    ``gemini-1.5-pro``, ``accounts/fireworks/models/x`` → ``x``); a trailing snapshot date
    dropped (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``, ``claude-3-5-sonnet-20241022`` →
    ``claude-3-5-sonnet``, ``claude-3-5-sonnet@20240620`` → ``claude-3-5-sonnet``); Ollama's
    ``:latest`` tag dropped. The store keeps the exact name the provider returned.
    """
    name = model.strip().lower()
    if "/" in name:
        name = name.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith(":latest"):
        name = name[: -len(":latest")]
    return strip_snapshot(name)


def clean_label_value(value: object, max_chars: int = MAX_LABEL_CHARS) -> str:
    """Text of a label value: control characters removed, truncated; empty or None → ``none``."""
    if value is None:
        return MISSING
    text = _CONTROL.sub(" ", str(value)).strip()
    if not text:
        return MISSING
    return text[:max_chars]


class LabelLimiter:
    """Caps the distinct values of each label name, shared by every metric using that name.

    ``limit`` is the cap for every label, or a mapping ``{label_name: cap}`` with a ``"*"``
    entry as the default. ``model_normalizer`` turns a model name into its label value
    (default :func:`normalize_model_name`; ``None`` keeps names as reported).
    Thread-safe: several processors (one per ``LLMObs``) may share a registry.
    """

    def __init__(
        self,
        limit: int | Mapping[str, int] = DEFAULT_LABEL_LIMIT,
        *,
        model_normalizer: Callable[[str], str] | None = normalize_model_name,
        max_chars: int = MAX_LABEL_CHARS,
    ) -> None:
        if isinstance(limit, Mapping):
            self._limits = dict(limit)
            self._default = int(self._limits.pop("*", DEFAULT_LABEL_LIMIT))
        else:
            self._limits, self._default = {}, int(limit)
        if self._default < 1 or any(v < 1 for v in self._limits.values()):
            raise ValueError("label limits must be at least 1")
        self._normalize_model = model_normalizer
        self._max_chars = max_chars
        self._seen: dict[str, set[str]] = {}
        # raw value → label value, for values that were admitted (bounded: a few per admitted value)
        self._admitted: dict[tuple[str, object], str] = {}
        self._fast_max = 100_000
        self._overflowed: dict[str, int] = {}
        self._lock = threading.Lock()

    def limit_for(self, label: str) -> int:
        return self._limits.get(label, self._default)

    def __call__(self, label: str, value: object) -> str:
        """The bounded value of ``label`` for ``value``."""
        key = (label, value)
        try:
            return self._admitted[key]  # raw values already admitted: no cleaning, no lock
        except (KeyError, TypeError):
            pass
        bounded = self._bound(label, value)
        if bounded != OTHER and isinstance(value, (str, type(None))) and len(self._admitted) < self._fast_max:
            self._admitted[key] = bounded
        return bounded

    def _bound(self, label: str, value: object) -> str:
        text = clean_label_value(value, self._max_chars)
        if text == MISSING:
            return MISSING
        if label == "model" and self._normalize_model is not None:
            text = clean_label_value(self._normalize_model(text), self._max_chars)
        with self._lock:
            seen = self._seen.get(label)
            if seen is None:
                seen = self._seen[label] = set()
            if text in seen:
                return text
            if len(seen) < self.limit_for(label):
                seen.add(text)
                return text
            self._overflowed[label] = self._overflowed.get(label, 0) + 1
            return OTHER

    def model(self, value: object) -> str:
        return self("model", value)

    def overflowed(self) -> dict[str, int]:
        """How many label values went to ``__other__``, per label name."""
        with self._lock:
            return dict(self._overflowed)

    def values(self, label: str) -> set[str]:
        with self._lock:
            return set(self._seen.get(label, ()))
