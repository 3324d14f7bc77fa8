"""What the ``llmobs`` command prints when something goes wrong: one line, never a traceback.

A command raises ``UserError`` (exit 2: the user can fix it) or ``NotFound`` (exit 1: nothing
matched, like grep); ``main`` prints ``llmobs <command>: <message>`` on stderr. ``--debug``
also prints the traceback. ``describe`` turns the errors of libraries (SQLAlchemy, the
database drivers, the operating system) into such a message.
"""

from __future__ import annotations

import errno
import sys
import traceback
from typing import Any

import sqlalchemy as sa

from ..sinks.schema import SchemaVersionError, StoreNotFoundError

STORE_HINT = "run `llmobs demo` or point --database-url at your store"
EXAMPLE_URLS = "e.g. sqlite:///llmobs.db or postgresql+psycopg://user@host:5432/db"


class UserError(Exception):
    """A mistake the user can fix (a bad value, a missing store): one line, exit code 2."""

    exit_code = 2


class NotFound(UserError):
    """The store holds nothing matching (no trace with this id): one line, exit code 1."""

    exit_code = 1


class Settings:
    """How errors are shown; ``main`` sets ``debug`` from ``--debug``."""

    debug = False


def mask_url(url: Any) -> str:
    """A database URL as it may be printed: the password replaced by ``***``."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: shown as given (it has no password to hide)
        return repr(url) if isinstance(url, str) else str(url)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a driver's, for SQLAlchemy's wrappers)."""
    reason = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(reason).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(reason).__name__


def describe(exc: BaseException, url: str | None = None) -> UserError | None:
    """The one-line ``UserError`` for a known failure of a library; None for anything else."""
    shown = mask_url(url) if url is not None else None
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, StoreNotFoundError):
        return UserError(f"{exc}; {STORE_HINT}")
    if isinstance(exc, SchemaVersionError):
        return UserError(str(exc))
    if isinstance(exc, sa.exc.NoSuchModuleError) and url is not None:  # an ArgumentError too
        return UserError(f"unknown database type in {shown} ({EXAMPLE_URLS})")
    if isinstance(exc, sa.exc.ArgumentError) and url is not None:
        return UserError(f"not a database URL: {shown} ({EXAMPLE_URLS})")
    if isinstance(exc, ImportError) and url is not None:  # create_engine: the dialect's driver
        missing = getattr(exc, "name", None) or first_line(exc)
        return UserError(
            f"the database driver for {shown} is not installed (no module {missing!r}): install it, "
            f"or use a URL of an installed one ({EXAMPLE_URLS})"
        )
    if isinstance(exc, sa.exc.DBAPIError):
        where = f" {shown}" if shown else ""
        if "no such table" in str(exc) or ("relation" in str(exc) and "does not exist" in str(exc)):
            return UserError(f"the store{where} has no llmobs tables; {STORE_HINT}")
        return UserError(f"cannot use the store{where}: {first_line(exc)}")
    return None


def report(command: str, exc: BaseException) -> int:
    """Print ``exc`` as one line for ``command``; returns the exit code."""
    error = describe(exc)
    if error is None:  # a bug, not a mistake: still one line, the traceback with --debug
        code = 1
        message = f"unexpected error: {type(exc).__name__}: {first_line(exc)} (run with --debug for details)"
    else:
        code = error.exit_code
        message = str(error)
    if Settings.debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print_error(command, message)
    return code


def print_error(command: str, message: str) -> None:
    """``llmobs <command>: <message>`` as one line on stderr."""
    text = " ".join(message.split())  # one line whatever the message holds
    print(f"{command}: {text}" if command else text, file=sys.stderr, flush=True)


def os_error(action: str, exc: OSError) -> UserError:
    """``cannot <action>: <reason>`` for an operating-system error (a file, a port)."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return UserError(
            f"cannot {action}: the address is already in use (pick another --port, or 0 for any)"
        )
    if exc.errno == errno.ENOENT:
        return UserError(f"cannot {action}: no such directory (create it first)")
    return UserError(f"cannot {action}: {reason}")
