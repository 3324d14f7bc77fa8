"""Which store to read: ``$LLMOBS_DATABASE_URL``, else the project root's ``llmobs.db``.

Notebooks run with their own directory as the working directory (Jupyter, JupyterLab and VS
Code all do), but ``make demo`` writes ``llmobs.db`` at the repository root; ``find_store``
finds that file from any directory below the root. It only looks: a store that is not there is
a ``StoreNotFound`` naming the path and what to run, never a new empty file.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from ..sinks.schema import DATABASE_URL_ENV, StoreNotFoundError

STORE_FILE = "llmobs.db"
# What marks a project root: where `make demo` (and an app run from the root) writes llmobs.db.
ROOT_MARKERS = ("pyproject.toml", ".git")
WHAT_TO_RUN = "run `make demo` (or `llmobs demo`) first"


class StoreNotFound(StoreNotFoundError):
    """There is no store where one was looked for; the message says where and what to run."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of a traceback: the message is the whole story,
        # and the notebook stops there rather than failing later, deep in a plot.
        return [str(self)]


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest directory from ``start`` (default: the working directory) upwards that holds
    a ``pyproject.toml`` or ``.git``; ``start`` itself when none does."""
    here = Path(start if start is not None else Path.cwd()).expanduser().resolve()
    for directory in (here, *here.parents):
        if any((directory / marker).exists() for marker in ROOT_MARKERS):
            return directory
    return here


def find_store(start: str | os.PathLike[str] | None = None) -> str:
    """The URL of the store to analyse: ``$LLMOBS_DATABASE_URL`` when set, else
    ``llmobs.db`` in the project root above ``start`` (see ``project_root``), which is where
    ``make demo`` writes it.

    Raises ``StoreNotFound`` (a ``FileNotFoundError``) when that SQLite file does not exist or
    is empty; in Jupyter it shows as one line, "No store at …: run `make demo` (or `llmobs demo`)
    first", without a traceback. Other databases (PostgreSQL, in-memory SQLite) are returned as
    they are. Nothing is opened or created.

    >>> ts = TraceStore(find_store())  # doctest: +SKIP
    """
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError:
            raise ValueError(f"${DATABASE_URL_ENV} is not a database URL: {url!r}") from None
        in_memory = parsed.database in (None, "", ":memory:")
        if parsed.get_backend_name() == "sqlite" and not in_memory:
            _check_file(Path(parsed.database).expanduser(), f", or point ${DATABASE_URL_ENV} at your store")
        return url
    path = project_root(start) / STORE_FILE
    _check_file(path, f", or set ${DATABASE_URL_ENV} to your store")
    return f"sqlite:///{path.as_posix()}"


def _check_file(path: Path, alternative: str) -> None:
    path = path.absolute()  # a relative URL is relative to the working directory: say which file
    if not path.is_file():
        raise StoreNotFound(f"No store at {path}: {WHAT_TO_RUN}{alternative}.")
    if path.stat().st_size == 0:  # e.g. left by a tool that opened a missing path: no tables in it
        raise StoreNotFound(f"No store at {path} (the file is empty): {WHAT_TO_RUN}{alternative}.")
