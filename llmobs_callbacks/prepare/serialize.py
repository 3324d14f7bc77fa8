"""Turn arbitrary run payloads into JSON text, on the processor thread.

Never raises: whatever cannot be encoded is stored by its ``repr`` (and a ``repr`` that
raises is replaced by the type name). Output is truncated to a configurable size with a
marker so a reader knows it was cut: texts as a whole, JSON fields (metadata, invocation
parameters, tags) string by string and within a total.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

TRUNCATION_MARKER = "…[truncated]"
_FLAT_SCALARS = frozenset((str, int, bool, type(None)))
_MAX_DEPTH = 32


def safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break tracing
        return f"<{type(value).__name__} object>"


def to_jsonable(value: Any, _depth: int = 0, _seen: set[int] | None = None) -> Any:
    """A structure of dicts, lists, str, numbers, bools and None that mirrors ``value``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if _depth > _MAX_DEPTH:
        return safe_repr(value)
    if _seen is None:
        _seen = set()
    if id(value) in _seen:
        return "<recursion>"
    if isinstance(value, (UUID, Decimal, datetime, date, Enum)):
        return str(value.value if isinstance(value, Enum) else value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    _seen.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {str(k): to_jsonable(v, _depth + 1, _seen) for k, v in list(value.items())}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [to_jsonable(v, _depth + 1, _seen) for v in list(value)]
        dump = getattr(value, "model_dump", None)  # pydantic v2 (LangChain messages, documents)
        if callable(dump):
            return to_jsonable(_pydantic_fields(value, dump), _depth + 1, _seen)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return to_jsonable(
                {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)},
                _depth + 1,
                _seen,
            )
        to_dict = getattr(value, "to_dict", None) or getattr(value, "dict", None)
        if callable(to_dict):
            try:
                return to_jsonable(to_dict(), _depth + 1, _seen)
            except Exception:  # noqa: BLE001
                pass
        return safe_repr(value)
    except Exception:  # noqa: BLE001 - e.g. a dict changed size while we read it
        return safe_repr(value)
    finally:
        _seen.discard(id(value))


def _pydantic_fields(value: Any, dump: Any) -> Any:
    """Only the fields that are set and meaningful: keeps stored messages short and readable."""
    try:
        data = dump(exclude_none=True, exclude_defaults=True)
    except TypeError:
        data = dump()
    if isinstance(data, dict):
        data.setdefault("type", getattr(value, "type", None) or type(value).__name__)
    return data


def _encode_unknown(value: Any) -> Any:
    """``json.dumps`` hook for objects the C encoder does not know (messages, documents…)."""
    return to_jsonable(value)


def to_text(value: Any, max_chars: int) -> str | None:
    """JSON text of ``value`` (a plain string stays as it is), truncated to ``max_chars``."""
    if value is None:
        return None
    if isinstance(value, str):
        return truncate(value, max_chars)
    try:
        # Fast path: the C encoder, calling back only for unknown objects. NaN, cycles or odd
        # keys raise here and take the careful path below.
        text = json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_encode_unknown
        )
    except Exception:  # noqa: BLE001
        try:
            text = json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))
        except Exception:  # noqa: BLE001
            text = safe_repr(value)
    return truncate(text, max_chars)


def truncate(text: str, max_chars: int) -> str:
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    return text[: max(max_chars - len(TRUNCATION_MARKER), 0)] + TRUNCATION_MARKER


def jsonable_dict(
    value: Mapping[str, Any] | None, max_chars: int = 0, max_total: int = 0
) -> dict[str, Any] | None:
    """A JSON-safe copy of a mapping, for JSON columns, bounded: each string (keys too) cut to
    ``max_chars`` with the marker, and entries past ``max_total`` characters in all left out
    (their number under the key ``TRUNCATION_MARKER``); 0 for no bound."""
    if not value:
        return None
    if type(value) is dict:
        # Fast path: the usual metadata, short str keys to JSON scalars, is its own JSON-safe
        # copy (what to_jsonable would build, at a third of the cost).
        limit = max_chars if max_chars > 0 else math.inf
        total = 0
        for k, v in value.items():
            t = type(v)
            if type(k) is not str or not (t in _FLAT_SCALARS or (t is float and math.isfinite(v))):
                break
            size = len(v) if t is str else 8
            if size > limit or len(k) > limit:
                break
            total += size + len(k)
        else:
            if max_total <= 0 or total <= max_total:
                return dict(value)
    if max_chars > 0 or max_total > 0:
        result = _bounded(value, _Budget(max_chars, max_total))
    else:
        result = to_jsonable(value)
    return result if isinstance(result, dict) else {"value": result}


def bounded_list(values: list[Any] | None, max_chars: int, max_total: int) -> list[Any] | None:
    """A JSON-safe copy of a list (tags) bounded like ``jsonable_dict``."""
    if not values:
        return None
    result = _bounded(values, _Budget(max_chars, max_total))
    return result if isinstance(result, list) else [result]


class _Budget:
    """What is left to spend while one field is copied (characters, roughly as JSON)."""

    __slots__ = ("left", "max_chars", "seen")

    def __init__(self, max_chars: int, max_total: int) -> None:
        self.max_chars = max_chars
        self.left = max_total if max_total > 0 else math.inf
        self.seen: set[int] = set()


def _bounded(value: Any, budget: _Budget, depth: int = 0) -> Any:
    """``to_jsonable`` within a budget: the walk itself stops at the budget, so a million-item
    list costs no more than a short one."""
    if isinstance(value, str):
        value = truncate(value, budget.max_chars)
        budget.left -= len(value) + 3
        return value
    if value is None or isinstance(value, (bool, int, float)):
        budget.left -= 8
        return to_jsonable(value)
    if depth > _MAX_DEPTH:
        return _bounded(safe_repr(value), budget)
    if id(value) in budget.seen:
        return "<recursion>"
    if not isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return _bounded(to_jsonable(value, depth), budget, depth + 1)  # an object: its fields
    budget.seen.add(id(value))
    budget.left -= 2
    try:
        # Iterated in place, not copied: past the budget, the rest is only counted.
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(value.items()):
                if budget.left <= 0:
                    out[TRUNCATION_MARKER] = len(value) - i  # how many entries were left out
                    break
                key = truncate(k if isinstance(k, str) else str(k), budget.max_chars)
                budget.left -= len(key) + 4
                out[key] = _bounded(v, budget, depth + 1)
            return out
        result: list[Any] = []
        for i, v in enumerate(value):
            if budget.left <= 0:
                result.append(f"{TRUNCATION_MARKER} {len(value) - i} more")
                break
            result.append(_bounded(v, budget, depth + 1))
        return result
    except Exception:  # noqa: BLE001 - e.g. a dict changed size while we read it
        return truncate(safe_repr(value), budget.max_chars)
    finally:
        budget.seen.discard(id(value))
