"""Arrow-native reads for ``TraceStore``: ADBC drivers, with SQLAlchemy as the fallback.

Reading through SQLAlchemy and a DBAPI builds one Python object per value (31 million for a
million spans), which is most of the time a large read takes. The ADBC drivers of the Apache
Arrow project (``adbc-driver-sqlite``, ``adbc-driver-postgresql``, in the ``analysis`` extra)
return Arrow columns built in C instead (PostgreSQL's through binary ``COPY``), and pandas
takes Arrow columns without a Python object per value.

The same SQLAlchemy ``select`` is compiled for the store's dialect, so filters, joins and
aggregates stay in SQL exactly as on the fallback path; the result is then cast to the types the
query's columns declare (SQLite returns datetimes as text and infers a column's type from its
values; PostgreSQL's ``numeric`` and ``json`` come as text). ``read`` raises on anything it
cannot do; ``TraceStore`` then reads through SQLAlchemy.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..sinks.schema import readonly_sqlite_path, readonly_sqlite_uri

logger = logging.getLogger(__name__)

# SQLite's ADBC driver infers each column's type from the first batch of rows (1,024 by default)
# and fails when a later batch disagrees (a column NULL in the first rows, text later). One batch
# of the whole result lets it see every value before choosing; the result is in memory anyway.
_SQLITE_BATCH_ROWS = str(2**30)
# Tables smaller than this are read in one query: a split costs two small queries and a thread.
SPLIT_MIN_ROWS = 200_000


class ArrowReader:
    """Runs SQLAlchemy ``select``s through an ADBC driver; ``read`` returns a ``pyarrow.Table``.

    ``ArrowReader.create(engine)`` returns None when the drivers are not installed or the store
    is one they cannot open (an in-memory SQLite database, another dialect).
    """

    def __init__(self, dialect: sa.engine.Dialect, connect: Callable[[], Any], name: str) -> None:
        self._dialect = dialect
        self._connect = connect
        self.name = name
        self.trace: Callable[[str], None] | None = None  # called with each SQL statement (tests)
        self.parallel = min(2, os.cpu_count() or 1)  # ranges read at once by read(split_on=...)
        self._idle: list[Any] = []
        self.keep_idle = True  # reuse connections between reads
        self._lock = threading.Lock()

    @classmethod
    def create(cls, engine: Engine, engine_is_ours: bool = True) -> ArrowReader | None:
        url = engine.url
        backend = url.get_backend_name()
        try:
            if backend == "sqlite":
                readonly = readonly_sqlite_path(url)
                if readonly is not None:  # open_store_readonly's engine: the same read-only opening
                    import adbc_driver_sqlite.dbapi as driver

                    reader = cls(
                        engine.dialect,
                        lambda: driver.connect(readonly_sqlite_uri(readonly), autocommit=True),
                        "adbc-sqlite",
                    )
                    reader.keep_idle = False  # decided per connection: never a stale immutable one
                    return reader
                database = url.database
                # Only a plain file: ":memory:" is private to SQLAlchemy's connection, and URL
                # options (uri=true, mode=ro…) are the sqlite3 module's, not the driver's.
                if not database or database == ":memory:" or database.startswith("file:") or url.query:
                    return None
                import adbc_driver_sqlite.dbapi as driver

                return cls(engine.dialect, lambda: driver.connect(database, autocommit=True), "adbc-sqlite")
            if backend == "postgresql":
                # An Engine made elsewhere may carry connect_args (search_path, credentials) that
                # the URL does not show: reading through another connection could read another
                # schema. Only engines TraceStore made from a URL take this path.
                if not engine_is_ours:
                    return None
                import adbc_driver_postgresql.dbapi as driver

                uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
                dialect = type(engine.dialect)(paramstyle="numeric_dollar")  # $1, $2: libpq's style
                return cls(dialect, lambda: driver.connect(uri, autocommit=True), "adbc-postgresql")
        except ImportError:
            return None
        return None

    def read(self, query: sa.Select, split_on: sa.Column | None = None) -> Any:
        """The query's result as a ``pyarrow.Table`` with the selected columns' names and types.

        ``split_on`` (an indexed datetime column of the one table the query reads, which it is
        ordered by, with no LIMIT): a large table is read in ``parallel`` ranges of that column,
        each on its own connection and thread (the drivers release the GIL), concatenated in order.
        """
        bounds = self._split_points(split_on) if split_on is not None and self.parallel > 1 else []
        if not bounds:
            return self._read_one(query)
        edges = [None, *bounds, None]
        parts = []
        for lower, upper in itertools.pairwise(edges):
            part = query if lower is None else query.where(split_on >= lower)
            parts.append(part if upper is None else part.where(split_on < upper))
        with ThreadPoolExecutor(len(parts)) as pool:
            tables = list(pool.map(self._read_one, parts))
        import pyarrow as pa

        return pa.concat_tables(tables)

    def _split_points(self, column: sa.Column) -> list[Any]:
        """Values of ``column`` (a datetime) that cut its range into ``parallel`` equal spans of
        time ([] when the table is too small to be worth it). Equal time, not equal rows: the
        bounds are two index lookups, and steady traffic makes them close to equal rows."""
        table = column.table
        with self.connection() as conn:
            if self.name == "adbc-postgresql":  # the planner's estimate: count(*) scans the table
                estimate = self._fetch_sql(
                    conn, "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)", [table.name]
                )
                count = estimate[0][0] if estimate and estimate[0][0] is not None else -1
            else:
                # The largest rowid: one index step, where count(*) scans the table (~90 ms per
                # million rows). It over-counts after deletes, which only matters near the cut.
                rowid = self._fetch_sql(conn, f'SELECT max(_rowid_) FROM "{table.name}"', [])
                count = rowid[0][0] if rowid and rowid[0][0] is not None else 0
            if count < 0:
                count = self._fetch(conn, sa.select(sa.func.count()).select_from(table))[0][0]
            if count < SPLIT_MIN_ROWS:
                return []
            lower, upper = self._fetch(conn, sa.select(sa.func.min(column), sa.func.max(column)))[0]
        # SQLite's stored text (UTC) back to what the column binds: an aware datetime.
        lower, upper = (datetime.fromisoformat(v) if isinstance(v, str) else v for v in (lower, upper))
        if not isinstance(lower, datetime) or not isinstance(upper, datetime) or lower >= upper:
            return []
        lower, upper = (v if v.tzinfo else v.replace(tzinfo=timezone.utc) for v in (lower, upper))
        return [lower + (upper - lower) * k / self.parallel for k in range(1, self.parallel)]

    def _read_one(self, query: sa.Select) -> Any:
        with self.connection() as conn, closing(conn.cursor()) as cursor:
            if self.name == "adbc-sqlite":
                cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": _SQLITE_BATCH_ROWS})
            sql, params = self._compile(query)
            if self.trace is not None:
                self.trace(sql)
            cursor.execute(sql, params or None)
            table = cursor.fetch_arrow_table()
        return conform(table, query)

    def _fetch(self, conn: Any, query: sa.Select) -> list[tuple[Any, ...]]:
        return self._fetch_sql(conn, *self._compile(query))

    def _fetch_sql(self, conn: Any, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with closing(conn.cursor()) as cursor:
            cursor.execute(sql, params or None)
            return cursor.fetchall()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """An idle connection of this reader's, or a new one; kept for the next read unless the
        read failed. (Opening one costs tens of milliseconds to seconds: the PostgreSQL driver
        loads the type catalog.) Autocommit: no read holds a snapshot open between reads."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            _close_quietly(conn)
            raise
        with self._lock:
            if self.keep_idle and len(self._idle) < self.parallel:
                self._idle.append(conn)
                conn = None
        if conn is not None:
            _close_quietly(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)

    def _compile(self, query: sa.Select) -> tuple[str, list[Any]]:
        compiled = query.compile(dialect=self._dialect, compile_kwargs={"render_postcompile": True})
        # The columns' own bind processors (UTCDateTime → UTC, SQLite's datetime text), exactly
        # as SQLAlchemy would send them.
        processors = getattr(compiled, "_bind_processors", {})
        params = []
        for name in compiled.positiontup or ():
            value = compiled.params[name]
            process = processors.get(name)
            params.append(process(value) if process is not None and value is not None else value)
        return str(compiled), params


def _target_type(sa_type: sa.types.TypeEngine) -> Any:
    """The Arrow type a column of this SQLAlchemy type should have (None: keep the driver's)."""
    import pyarrow as pa

    if isinstance(sa_type, sa.types.TypeDecorator):
        sa_type = sa_type.impl_instance
    if isinstance(sa_type, sa.JSON):
        return pa.large_string()  # decoded by TraceStore, once per distinct text
    if isinstance(sa_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(sa_type, sa.Integer):
        return pa.int64()
    if isinstance(sa_type, (sa.Float, sa.Numeric)):
        return pa.float64()
    if isinstance(sa_type, sa.String):
        return pa.large_string()  # what pandas keeps strings in: cast here, in the reading thread
    return None


def _cast_column(column: Any, target: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column.type, pa.ExtensionType):  # PostgreSQL numeric (opaque text), json
        column = pa.chunked_array([chunk.storage for chunk in column.chunks], type=column.type.storage_type)
    if target is None or column.type == target:
        return column
    is_text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    if pa.types.is_timestamp(target) and is_text:
        try:  # SQLite's stored text, "YYYY-MM-DD HH:MM:SS.ffffff" in UTC
            column = pc.cast(column, pa.timestamp("us"))
        except pa.ArrowInvalid:
            return column  # another text form: TraceStore parses it with pandas
    try:
        return pc.cast(column, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return column  # e.g. text in a numeric column of SQLite: pandas gets what is stored


def conform(table: Any, query: sa.Select) -> Any:
    """Rename the result's columns to the query's names and cast them to its declared types."""
    import pyarrow as pa

    columns = list(query.selected_columns)
    if table.num_columns != len(columns):
        raise ValueError(f"expected {len(columns)} columns, got {table.num_columns}")
    arrays = [_cast_column(table.column(i), _target_type(c.type)) for i, c in enumerate(columns)]
    return pa.table(arrays, names=[c.name for c in columns])


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # a broken connection is being discarded anyway
        logger.debug("llmobs: closing an ADBC connection failed", exc_info=True)
