"""Opening the store for a command: the ``--database-url`` option, read-only for readers.

Commands that only read go through ``reader_engine`` / ``trace_store``: SQLite is opened
read-only (``sinks.schema.open_store_readonly``), so a read never creates a file, a directory or
tables, and a store that is not there is one line naming it. Every failure becomes a
``UserError`` with the URL's password masked.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import sqlalchemy as sa
import typer
from sqlalchemy.engine import Engine

from ..sinks.schema import (
    DATABASE_URL_ENV,
    DEFAULT_DATABASE_URL,
    StoreNotFoundError,
    open_store_readonly,
    resolve_database_url,
    sqlite_file,
)
from .errors import UserError, describe

if TYPE_CHECKING:
    from ..analysis.store import TraceStore

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        help=f"SQLAlchemy URL of the store (default: ${DATABASE_URL_ENV} or {DEFAULT_DATABASE_URL})",
        show_default=False,
    ),
]


def store_url(option: str | None) -> str:
    """The URL a command uses: ``--database-url``, else ``$LLMOBS_DATABASE_URL``, else the default.
    An empty ``--database-url ""`` is a mistake, not the default store."""
    if option is not None and not option.strip():
        raise UserError(
            f"--database-url is empty: give your store's URL (e.g. {DEFAULT_DATABASE_URL}), or leave "
            f"the option out to use ${DATABASE_URL_ENV} or {DEFAULT_DATABASE_URL}"
        )
    return resolve_database_url(option.strip() if option else None)


def translated(exc: BaseException, url: str) -> BaseException:
    """``exc`` as the one-line ``UserError`` it stands for, or itself when it is not one."""
    return describe(exc, url) or exc


def reader_engine(option: str | None) -> Engine:
    """A read-only engine on the command's store, checked to hold llmobs tables."""
    url = store_url(option)
    try:
        return open_store_readonly(url)
    except Exception as exc:
        raise translated(exc, url) from exc


def require_extra(what: str, modules: tuple[str, ...], extra: str) -> None:
    """A ``UserError`` saying what to install when one of ``modules`` is missing: the package's
    ``extra`` (``analysis``), or a package (``langchain-openai``) when ``extra`` has a dash."""
    install = extra if "-" in extra else f"'llmobs-callbacks[{extra}]'"
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UserError(f"this needs {what}: pip install {install} ({exc})") from exc


@contextmanager
def trace_store(option: str | None) -> Iterator[TraceStore]:
    """A read-only ``TraceStore`` on the command's store (needs the ``analysis`` extra); database
    errors while reading become one line too."""
    require_extra("pandas", ("pandas",), "analysis")
    from ..analysis.store import TraceStore

    url = store_url(option)
    try:
        store = TraceStore(url, read_only=True)
    except Exception as exc:
        raise translated(exc, url) from exc
    with store:
        try:
            yield store
        except sa.exc.DBAPIError as exc:
            raise translated(exc, url) from exc


def require_existing(url: str) -> None:
    """For commands that write into an existing store (``judge``): a SQLite file must be there."""
    try:
        path = sqlite_file(url)
    except sa.exc.ArgumentError as exc:
        raise translated(exc, url) from exc
    if path is not None and not path.is_file():
        kind = "it is a directory, not a SQLite file" if path.is_dir() else None
        raise translated(StoreNotFoundError(f"no store at {path}" + (f": {kind}" if kind else "")), url)
