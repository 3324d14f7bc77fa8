"""How commands print: Rich tables on a terminal (plain, grep-able text when piped), JSON, CSV.

User data (inputs, outputs, names) is always passed to Rich as ``Text``, never as markup, so
``[brackets]`` in a prompt print as they are.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

Advance = Callable[[int, int], None]

# Piped or captured output is not wrapped at 80 columns: a table keeps one row per line.
PIPED_WIDTH = 250


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) as it is now (tests swap the streams)."""
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(
        file=stream, width=None if tty else PIPED_WIDTH, highlight=False, emoji=False, markup=False
    )


def table(*columns: str, right: Sequence[str] = ()) -> Table:
    """A table with a rule under its header and no side borders (rows start at column 0)."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    for name in columns:
        t.add_column(name, justify="right" if name in right else "left", no_wrap=name in right)
    return t


def blank(value: Any) -> bool:
    """None, NaN, or pandas' NA / NaT (pandas is not imported for this)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    pandas = sys.modules.get("pandas")
    return pandas is not None and (value is pandas.NA or value is pandas.NaT)


def money(value: Any, digits: int = 6) -> str:
    return "—" if blank(value) else f"${float(value):.{digits}f}"


def duration_ms(value: Any) -> str:
    if blank(value):
        return "—"
    ms = float(value)
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def integer(value: Any) -> str:
    return "—" if blank(value) else f"{int(value)}"


def when(value: Any) -> str:
    """A UTC time as ``YYYY-MM-DD HH:MM:SS``."""
    if blank(value):
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def text(value: Any, placeholder: str = "—") -> Text:
    """A cell of user data: plain text, never markup."""
    return Text(placeholder if blank(value) or value == "" else str(value))


def status_text(value: Any) -> Text:
    value = "—" if blank(value) else str(value)
    return Text(value, style="red" if value == "error" else "green" if value == "ok" else "")


def jsonable(value: Any) -> Any:
    """A value as JSON can hold it: times as ISO text, NaN / NA as null."""
    if blank(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return value.item()
    return value


def records(frame: Any, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows of a DataFrame as JSON-ready dicts."""
    names = list(columns) if columns is not None else list(frame.columns)
    return [
        {k: jsonable(v) for k, v in zip(names, row, strict=True)} for row in frame[names].itertuples(False)
    ]


def write_rows(rows: Iterable[Mapping[str, Any]], fmt: Format, fieldnames: Sequence[str]) -> None:
    """Rows as a JSON list or CSV (with a header) on stdout."""
    rows = list(rows)
    if fmt is Format.json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fieldnames), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    sys.stdout.write(out.getvalue())


def one_line(value: str, limit: int | None) -> str:
    """``value`` on one line (whitespace collapsed), cut at ``limit`` characters with how much is left."""
    flat = " ".join(value.split())
    if limit is None or len(flat) <= limit:
        return flat
    return f"{flat[:limit]}… (+{len(flat) - limit} chars)"


QUESTION_KEYS = ("question", "input", "query", "message", "prompt", "text")
ANSWER_KEYS = ("answer", "output", "response", "result", "text", "content")


def readable(stored: Any, prefer: Sequence[str] = ()) -> str | None:
    """A stored input or output (JSON text) as a person reads it: a string as itself, a dict of
    one string (or with a string under one of the ``prefer`` keys, or a chat's ``messages``) as
    that string, anything else as compact JSON."""
    if blank(stored) or stored == "":
        return None
    try:
        value = json.loads(stored) if isinstance(stored, str) else stored
    except ValueError:
        return str(stored)
    if isinstance(value, dict):
        strings = {k: v for k, v in value.items() if isinstance(v, str)}
        if len(value) == 1 and strings:
            return next(iter(strings.values()))
        for key in prefer:
            if key in strings:
                return strings[key]
        messages = value.get("messages") if prefer else None
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            content = messages[-1].get("content")
            if isinstance(content, str):
                return content
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


@contextmanager
def progress_bar(description: str, unit: str, disabled: bool = False) -> Iterator[Advance | None]:
    """``advance(done, total)`` drawing a Rich progress bar on stderr (None when disabled)."""
    if disabled:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit))
    with Progress(*columns, TimeRemainingColumn(), console=console(stderr=True)) as progress:
        task: list[Any] = []  # added at the first call, when the total is known

        def advance(done: int, total: int) -> None:
            if not task:
                task.append(progress.add_task(description, total=total))
            progress.update(task[0], completed=done)

        yield advance
