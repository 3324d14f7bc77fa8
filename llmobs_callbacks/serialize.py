"""Turn arbitrary run payloads into JSON text, on the processor thread.

Never raises: whatever cannot be encoded is stored by its ``repr`` (and a ``repr`` that
raises is replaced by the type name). Output is truncated to a configurable size with a
marker so a reader knows it was cut.
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


def jsonable_dict(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A JSON-safe copy of a mapping, for JSON columns."""
    if not value:
        return None
    if type(value) is dict:
        # Fast path: the usual metadata, str keys to JSON scalars, is its own JSON-safe copy
        # (what to_jsonable would build, at a third of the cost).
        for k, v in value.items():
            t = type(v)
            if type(k) is not str or not (t in _FLAT_SCALARS or (t is float and math.isfinite(v))):
                break
        else:
            return dict(value)
    result = to_jsonable(value)
    return result if isinstance(result, dict) else {"value": result}
