"""Fast idempotent bulk inserts (``ON CONFLICT DO NOTHING``), straight to the DBAPI.

SQLAlchemy's Core executemany spends more time per row building and processing parameters
(~35 µs for a 33-column span row here) than SQLite spends storing it. For the two databases we
support, this module renders the statement once and converts values itself, exactly as the
column types would (JSON → the text ``json.dumps`` gives, aware datetime → SQLite's stored
text form); any other database goes through Core unchanged.

- Row dicts become parameter tuples through one generated function per table (a tuple display
  of ``row[key]`` lookups, converters inlined): ~1.5 µs per span row instead of ~6 µs for a
  loop of ``row.get`` calls.
- SQLite batches go in as multi-row ``INSERT … VALUES (…), (…), …`` statements, not
  ``executemany``: the sqlite3 module releases the GIL around every statement step, and
  ``executemany`` steps once per row. Getting the GIL back takes up to the interpreter's switch
  interval (5 ms) whenever an application thread is busy in Python: beside a CPU-bound app
  thread, ``executemany`` stored a priced LLM span in 3.7–5.3 ms, chunks of 256 rows in
  62–77 µs (with nothing beside it, 28 µs either way; 512-row chunks cost ~4 µs more there).
  Chunk sizes are powers of two (at most 256 rows), so the module's statement cache holds at
  most nine statements per table.
- PostgreSQL batches of ``copy_threshold`` rows or more go through ``COPY`` into a temporary
  staging table, then ``INSERT … SELECT … ON CONFLICT DO NOTHING``: one statement per batch
  instead of one per row (executemany cost ~75 µs per span row, COPY ~10 µs). The staging
  table's timestamp columns are ``timestamptz`` so the cast into the table's columns is the
  same one a bound aware-datetime parameter gets: the stored rows are identical either way.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from json.encoder import JSONEncoder
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

Converter = Callable[[Any], Any]

try:  # the C encoder json.dumps builds on every call; built once here (~2 µs less per value)
    from json.encoder import c_make_encoder, encode_basestring_ascii

    _C_ENCODE = (
        c_make_encoder(
            None, JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ", False, False, True
        )
        if c_make_encoder is not None
        else None
    )
except ImportError:  # pragma: no cover - interpreters without the C accelerator
    _C_ENCODE = None


def json_text(value: Any) -> str | None:
    """Exactly ``json.dumps(value)`` (SQLAlchemy's JSON serialiser), ``None`` for ``None``."""
    if value is None:
        return None
    if _C_ENCODE is None or isinstance(value, str):
        return json.dumps(value)
    try:
        return "".join(_C_ENCODE(value, 0))
    except (ValueError, RecursionError):  # a cycle: let json.dumps raise its usual error
        return json.dumps(value)


def _sqlite_datetime(value: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DATETIME storage format: naive UTC with microseconds.
    if value is None:
        return None
    if value.tzinfo is timezone.utc:  # what the exporter makes: drop the "+00:00" suffix
        return value.isoformat(" ", "microseconds")[:-6]
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")


# Rows per SQLite statement: a power of two, and within SQLite's bound-parameter limit (32,766
# since 3.32, 999 before) for the widest table.
_SQLITE_MAX_ROWS = 256
_SQLITE_MAX_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def _power_of_two_chunks(n: int, largest: int) -> Iterator[int]:
    """Sizes adding up to ``n``: ``largest`` (a power of two) as often as it fits, then the
    binary digits of the rest (at most log2(largest) + 1 distinct sizes ever)."""
    while n:
        size = min(largest, 1 << (n.bit_length() - 1))
        yield size
        n -= size


def _row_function(columns: Sequence[str], converters: dict[int, Converter]) -> Callable[[dict], tuple]:
    """``row -> tuple`` in column order with the converters applied, as one generated function
    (a tuple display of subscripts runs ~4× faster than a Python loop over the columns)."""
    namespace: dict[str, Any] = {f"c{i}": fn for i, fn in converters.items()}
    items = [f"c{i}(r[{name!r}])" if i in converters else f"r[{name!r}]" for i, name in enumerate(columns)]
    source = f"def to_params(r):\n    return ({', '.join(items)},)\n"
    exec(source, namespace)  # column names come from our own schema, not from data
    return namespace["to_params"]


class BulkInserter:
    copy_threshold = 32
    """PostgreSQL batches at least this long use COPY (below it a COPY costs more than it saves)."""

    def __init__(self, engine: Engine, table: sa.Table, conflict_keys: Sequence[str]) -> None:
        self._table = table
        self._columns = [c.name for c in table.columns]
        self._dialect = dialect = engine.dialect.name
        self._fast = dialect in ("sqlite", "postgresql")
        if not self._fast:
            self._core = sa.insert(table)
            return
        quote = engine.dialect.identifier_preparer.quote
        marker = "?" if dialect == "sqlite" else "%s"
        column_list = ", ".join(quote(c) for c in self._columns)
        conflict = f"ON CONFLICT ({', '.join(quote(k) for k in conflict_keys)}) DO NOTHING"
        row_marker = f"({', '.join([marker] * len(self._columns))})"
        self._sql = f"INSERT INTO {quote(table.name)} ({column_list}) VALUES {row_marker} {conflict}"
        if dialect == "sqlite":
            self._sqlite_rows = _SQLITE_MAX_ROWS
            while self._sqlite_rows > 1 and self._sqlite_rows * len(self._columns) > _SQLITE_MAX_PARAMETERS:
                self._sqlite_rows //= 2
            self._sqlite_statements = {
                rows: f"INSERT INTO {quote(table.name)} ({column_list}) "
                f"VALUES {', '.join([row_marker] * rows)} {conflict}"
                for rows in (1 << k for k in range(self._sqlite_rows.bit_length()))
            }
        converters: dict[int, Converter] = {}
        for i, column in enumerate(table.columns):
            if isinstance(column.type, sa.JSON):
                converters[i] = json_text
            elif dialect == "sqlite" and isinstance(getattr(column.type, "impl", column.type), sa.DateTime):
                converters[i] = _sqlite_datetime
        self._to_params = _row_function(self._columns, converters)
        # COPY needs psycopg 3 (``postgresql+psycopg://``); psycopg2 keeps executemany.
        self._copy_ok = dialect == "postgresql" and engine.dialect.driver == "psycopg"
        if self._copy_ok:
            stage = quote(f"_llmobs_stage_{table.name}")
            stage_columns = ", ".join(f"{quote(c.name)} {_stage_type(c, engine)}" for c in table.columns)
            # ON COMMIT DELETE ROWS: the staging table is private to the connection and empty
            # at the start of every transaction; created once per pooled connection.
            self._stage_ddl = (
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ({stage_columns}) ON COMMIT DELETE ROWS"
            )
            self._copy_sql = f"COPY {stage} ({column_list}) FROM STDIN"
            self._from_stage = (
                f"INSERT INTO {quote(table.name)} ({column_list}) "
                f"SELECT {column_list} FROM {stage} {conflict}"
            )
            self._clear_stage = f"DELETE FROM {stage}"

    def insert(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        if not self._fast:
            conn.execute(self._core, list(rows))
            return
        to_params = self._to_params
        try:
            params = [to_params(row) for row in rows]
        except KeyError:  # rows that leave out nullable columns (scores from users' code)
            columns = self._columns
            params = [to_params({c: row.get(c) for c in columns}) for row in rows]
        if self._copy_ok and len(params) >= self.copy_threshold:
            self._copy(conn, params)
        elif self._dialect == "sqlite":
            self._insert_sqlite(conn, params)
        else:
            conn.exec_driver_sql(self._sql, params)

    def _insert_sqlite(self, conn: Connection, params: list[tuple]) -> None:
        """Multi-row statements (see the module docstring): one GIL release per chunk. Through
        SQLAlchemy, so a locked or full database raises its wrapped (retryable) errors."""
        start = 0
        for rows in _power_of_two_chunks(len(params), self._sqlite_rows):
            chunk = params[start : start + rows]
            start += rows
            conn.exec_driver_sql(self._sqlite_statements[rows], tuple(itertools.chain.from_iterable(chunk)))

    def _copy(self, conn: Connection, params: list[tuple]) -> None:
        dbapi = conn.dialect.loaded_dbapi
        try:
            self._copy_rows(conn, params)
        except dbapi.Error as exc:
            # Straight from the driver: wrapped as SQLAlchemy would (OperationalError, DataError…,
            # flagged when the connection is gone), so the writer classifies it like any other.
            disconnect = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
            raise sa.exc.DBAPIError.instance(
                self._copy_sql,
                None,
                exc,
                dbapi.Error,
                hide_parameters=True,
                connection_invalidated=disconnect,
                dialect=conn.dialect,
            ) from exc

    def _copy_rows(self, conn: Connection, params: list[tuple]) -> None:
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.execute(self._stage_ddl)
            with cursor.copy(self._copy_sql) as copy:
                for values in params:
                    copy.write_row(values)
            cursor.execute(self._from_stage)
            # Empty again at once: a second batch in the same transaction (a replay) must not
            # insert these rows twice over (harmless, but wasted work).
            cursor.execute(self._clear_stage)
        finally:
            cursor.close()


def _stage_type(column: sa.Column, engine: Engine) -> str:
    if isinstance(getattr(column.type, "impl", column.type), sa.DateTime):
        return "timestamptz"  # see the module docstring: same cast as a bound parameter
    return column.type.compile(dialect=engine.dialect)
