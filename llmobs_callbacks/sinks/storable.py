"""Make every text and JSON value of a batch's rows storable, before any database sees it.

PostgreSQL rejects NUL in ``text`` and in JSON; SQLite's encoder raises on a lone surrogate
(``'\\ud800'``, what ``surrogateescape`` decoding or a cut UTF-16 pair leaves). Either one used to
make the store reject the whole batch. Here each such character becomes U+FFFD (in strings,
dict keys, nested lists), and a non-finite float inside a JSON value (``NaN`` is not JSON;
PostgreSQL refuses it) becomes ``null``. Every replacement is counted by reason.

Fast path: ``str.isascii()`` and one ``in`` test per ASCII string; the regex runs only on
non-ASCII text.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

REPLACEMENT = "\ufffd"
NUL = "nul_byte"
SURROGATE = "lone_surrogate"
NON_FINITE = "non_finite_json_number"
REASONS = (NUL, SURROGATE, NON_FINITE)

_NON_ASCII_BAD = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str, counts: Counter[str]) -> str:
    if text.isascii():
        if "\x00" not in text:
            return text
        counts[NUL] += text.count("\x00")
        return text.replace("\x00", REPLACEMENT)
    if _NON_ASCII_BAD.search(text) is None:
        return text

    def replace(match: re.Match[str]) -> str:
        counts[NUL if match.group() == "\x00" else SURROGATE] += 1
        return REPLACEMENT

    # A valid surrogate *pair* cannot occur in a Python str (it holds code points), so every
    # surrogate here is lone.
    return _NON_ASCII_BAD.sub(replace, text)


def clean_json(value: Any, counts: Counter[str]) -> Any:
    """``value`` with every string (keys too) cleaned; the same object when nothing changed."""
    t = type(value)
    if t is str:
        return clean_text(value, counts)
    if t is dict:
        changed = False
        out: dict[Any, Any] = {}
        for k, v in value.items():
            k2 = clean_text(k, counts) if type(k) is str else k
            if k2 in out:  # two keys that differ only in a replaced character: keep both
                k2 = f"{k2}#{len(out)}"
            v2 = clean_json(v, counts)
            if k2 is not k or v2 is not v:
                changed = True
            out[k2] = v2
        return out if changed else value
    if t is list or t is tuple:
        items = [clean_json(v, counts) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if t is float and not math.isfinite(value):
        counts[NON_FINITE] += 1
        return None
    return value


def clean_rows(rows: dict[str, list[dict[str, Any]]], counts: Counter[str]) -> None:
    """Clean every row of every table in place (top-level strings and JSON values)."""
    for table_rows in rows.values():
        for row in table_rows:
            for key, value in row.items():
                t = type(value)
                if t is str:
                    cleaned = clean_text(value, counts)
                elif t is dict or t is list:
                    cleaned = clean_json(value, counts)
                else:
                    continue
                if cleaned is not value:
                    row[key] = cleaned
