"""Engines and schema management for the SQL store (SQLite and PostgreSQL).

``ensure_schema`` creates missing tables, then brings an older database up to
``SCHEMA_VERSION``: each migration step is a function, and columns added to the models since
the database was made are added as nullable columns, so no existing row is lost.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, StaticPool

from .tables import SCHEMA_VERSION, TABLES, PromptVersionRow, SchemaVersionRow, SpanRow

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///llmobs.db"
DATABASE_URL_ENV = "LLMOBS_DATABASE_URL"


class SchemaVersionError(RuntimeError):
    """The database was written by a newer llmobs-callbacks than this one."""


def resolve_database_url(url: str | None) -> str:
    return url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def make_engine(url: str, *, timeout_s: float | None = None) -> Engine:
    """An engine tuned for a single writer thread plus readers.

    ``timeout_s`` bounds how long one attempt waits for the database: SQLite's busy timeout
    (a file locked by another writer) and PostgreSQL's connect timeout (a host that does not
    answer). ``None`` keeps 30 s for SQLite and libpq's default for PostgreSQL; the writer
    uses a shorter one so a stuck database turns into a retry and the spool, not a stall.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        if not in_memory:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        busy_s = 30.0 if timeout_s is None else timeout_s
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_s},
            # One shared connection for :memory:, or every connection would see an empty db.
            poolclass=StaticPool if in_memory else None,
            hide_parameters=True,  # errors are logged: never with the rows' content in them
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cursor = dbapi_conn.cursor()
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cursor.execute("PRAGMA synchronous=NORMAL")
            # The writer commits a batch every ~0.5 s: checkpointing the WAL back into the file
            # every 40 MB instead of SQLite's default 4 MB, and a 32 MB page cache that keeps the
            # indexes' hot pages, write each index page once per many batches (ingest +40-50 %).
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
            cursor.execute("PRAGMA cache_size=-32768")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_s * 1000)}")
            cursor.close()

        return engine
    connect_args: dict[str, object] = {}
    postgres = parsed.get_backend_name() == "postgresql"
    if timeout_s is not None and postgres and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = max(2, math.ceil(timeout_s))  # libpq: whole seconds, >= 2
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, hide_parameters=True)


# -- reading without writing ------------------------------------------------------------------------


class StoreNotFoundError(FileNotFoundError):
    """A reader was pointed at a store that is not there: no file, a directory, no llmobs tables."""


def sqlite_file(url: str | sa.engine.URL) -> Path | None:
    """The file of a SQLite URL (absolute, ``~`` expanded); None for in-memory SQLite and other
    databases. Raises ``sa.exc.ArgumentError`` for text that is not a URL."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = parsed.database
    if database.startswith("file:"):  # a URI filename (uri=true): file:PATH?options
        database = unquote(database[len("file:") :].split("?", 1)[0])
    return Path(database).expanduser().absolute()


def readonly_sqlite_uri(path: str | os.PathLike[str]) -> str:
    """A ``sqlite3`` URI that reads ``path`` and creates nothing next to it, decided per connection.

    A read-only connection to a WAL database needs its ``-wal`` and ``-shm`` files and creates
    them when they are missing (SQLite cannot delete them afterwards without write access). So:
    while a ``-wal`` exists (a writer is connected, or committed pages are still only there),
    ``mode=ro`` reads through it, coordinated with the writer as any reader is; without one, no
    writer is connected and ``immutable=1`` reads the file as it is, creating nothing. (A writer
    that starts during such a read writes to a new ``-wal``, which that read does not see; the
    next connection does. A checkpoint within that one read is not protected against.) A database
    in rollback-journal mode is always opened ``mode=ro``, which creates nothing there.
    """
    path = Path(path)
    uri = f"file:{_uri_path(path)}?mode=ro"
    if _is_wal(path) and not Path(f"{path}-wal").exists():
        uri += "&immutable=1"
    return uri


def _uri_path(path: Path) -> str:
    """``path`` as the path of a ``file:`` URI: ``/``-separated, ``?``, ``#`` and ``%`` escaped."""
    text = quote(path.as_posix(), safe="/:")
    return text if text.startswith("/") else f"/{text}"  # C:/x (Windows) -> /C:/x


def readonly_sqlite_path(url: sa.engine.URL) -> Path | None:
    """The file of an engine URL made by ``open_store_readonly`` for SQLite; None for any other."""
    if url.get_backend_name() != "sqlite" or url.query.get("mode") != "ro":
        return None
    return sqlite_file(url)


def _is_wal(path: Path) -> bool:
    """The database header says WAL mode (file format versions 2 at offsets 18 and 19)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18] == 2


def open_store_readonly(url: str | sa.engine.URL, *, timeout_s: float = 10.0) -> Engine:
    """An engine that reads the llmobs store at ``url`` and never creates or changes anything.

    SQLite files are opened read-only (``sqlite:///file:PATH?mode=ro&uri=true``, each connection
    through ``readonly_sqlite_uri``; no pool, so each connection sees what a writer committed since).
    Raises ``StoreNotFoundError`` when the file does not exist, is a directory, or the database has
    no llmobs tables; ``SchemaVersionError`` when its schema is not the one this version reads;
    SQLAlchemy's errors for a malformed URL (``ArgumentError``), an unknown database or missing
    driver (``NoSuchModuleError``, ``ImportError``) and a database that does not answer
    (``OperationalError``). ``timeout_s``: PostgreSQL's connect timeout; SQLite's busy timeout.
    """
    path = sqlite_file(url)
    if path is None:
        text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        engine = make_engine(text, timeout_s=timeout_s)
    else:
        if path.is_dir():
            raise StoreNotFoundError(f"no store at {path}: it is a directory, not a SQLite file")
        if not path.is_file():
            raise StoreNotFoundError(f"no store at {path}")
        import sqlite3

        engine = sa.create_engine(
            f"sqlite:///file:{_uri_path(path)}?mode=ro&uri=true",
            creator=lambda: sqlite3.connect(
                readonly_sqlite_uri(path), uri=True, check_same_thread=False, timeout=timeout_s
            ),
            poolclass=NullPool,
            hide_parameters=True,
        )
    try:
        with engine.connect() as conn:
            check_readable(conn, url)
    except BaseException:
        engine.dispose()
        raise
    return engine


def check_readable(conn: Connection, url: str | sa.engine.URL | None = None) -> int:
    """The schema version of the store ``conn`` is connected to, when this version can read it;
    else ``StoreNotFoundError`` (no llmobs tables) or ``SchemaVersionError``, naming ``url``
    (default: the engine's) with its password masked."""
    shown = sa.engine.make_url(url or conn.engine.url).render_as_string(hide_password=True)
    names = set(sa.inspect(conn).get_table_names())
    version = None
    if {SpanRow.__tablename__, SchemaVersionRow.__tablename__} <= names:
        version = conn.execute(sa.select(SchemaVersionRow.__table__.c.version)).scalar()
    if version is None:
        raise StoreNotFoundError(f"no llmobs tables in {shown}")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the store {shown} is at schema version {version}, newer than this llmobs-callbacks "
            f"(version {SCHEMA_VERSION}); upgrade llmobs-callbacks to read it"
        )
    if version < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the store {shown} is at schema version {version}, older than this llmobs-callbacks "
            f"(version {SCHEMA_VERSION}); a writer migrates it: open it once with LLMObs(url) or your app"
        )
    return version


def _v1_to_v2(conn: Connection) -> None:
    """Schema 2: ``prompt_versions`` keyed by template hash too (a version whose template was
    edited keeps both templates), the roots' covering index widened, the judge's traces marked
    internal (they were counted as requests)."""
    table = "prompt_versions"
    if conn.dialect.name == "postgresql":
        pk = sa.inspect(conn).get_pk_constraint(table)["name"] or f"{table}_pkey"
        conn.execute(sa.text(f"UPDATE {table} SET template_hash = '' WHERE template_hash IS NULL"))
        conn.execute(
            sa.text(
                f"ALTER TABLE {table} ALTER COLUMN template_hash SET DEFAULT '', "
                "ALTER COLUMN template_hash SET NOT NULL"
            )
        )
        conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{pk}"'))
        key = "prompt_name, prompt_version, template_hash"
        conn.execute(sa.text(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})"))
    else:  # SQLite cannot change a primary key in place: copy into a new table
        conn.execute(sa.text(f"ALTER TABLE {table} RENAME TO {table}_v1"))
        PromptVersionRow.__table__.create(conn)
        conn.execute(
            sa.text(
                f"INSERT INTO {table} (prompt_name, prompt_version, template_hash, template, first_seen, "
                f"last_seen) SELECT prompt_name, prompt_version, COALESCE(template_hash, ''), template, "
                f"first_seen, last_seen FROM {table}_v1"
            )
        )
        conn.execute(sa.text(f"DROP TABLE {table}_v1"))
        # Covering indexes that cover more in schema 2 (created under their new names).
        conn.execute(sa.text("DROP INDEX IF EXISTS ix_spans_root_start"))  # now ix_spans_roots
        conn.execute(sa.text("DROP INDEX IF EXISTS ix_spans_llm_trace"))  # now ix_spans_llm_calls
    spans = SpanRow.__table__
    roots = sa.select(spans.c.trace_id).where(spans.c.parent_span_id.is_(None), spans.c.kind == "judge")
    conn.execute(sa.update(spans).where(spans.c.trace_id.in_(roots)).values(internal=True))


# version N -> N+1 steps, applied in order, after missing nullable columns were added (those
# need no step: see below).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2}


def ensure_schema(engine: Engine, attempts: int = 10) -> int:
    """Create or upgrade the schema; returns the version the database is at afterwards.

    Several processes may start at once on a new database: a losing CREATE ("table … already
    exists": SQLite runs each CREATE on its own, so check-then-create is not atomic) is retried
    after a short random pause. Every loss means another process made progress, so this ends.
    """
    for attempt in range(attempts):
        try:
            return _ensure_schema_once(engine)
        except SchemaVersionError:
            raise
        except sa.exc.DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
    raise AssertionError("unreachable")


def _ensure_schema_once(engine: Engine) -> int:
    with engine.begin() as conn:
        for table in TABLES:
            table.create(conn, checkfirst=True)
        row = conn.execute(sa.select(SchemaVersionRow.__table__.c.version)).first()
        current = row[0] if row else None
        if current is None:
            conn.execute(
                sa.insert(SchemaVersionRow.__table__).values(
                    id=1, version=SCHEMA_VERSION, updated_at=datetime.now(timezone.utc)
                )
            )
            return SCHEMA_VERSION
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the database schema is at version {current}, newer than this llmobs-callbacks "
                f"(version {SCHEMA_VERSION}); upgrade llmobs-callbacks to write to it"
            )
        # Also at the same version: a column or index added to the models without a version
        # bump still reaches databases made before it (both steps only add, never drop).
        _add_missing_columns(conn)
        if current < SCHEMA_VERSION:
            for version in range(current, SCHEMA_VERSION):
                step = MIGRATIONS.get(version)
                if step is not None:
                    logger.info("llmobs: migrating schema %d -> %d", version, version + 1)
                    step(conn)
        _add_missing_indexes(conn)
        if current < SCHEMA_VERSION:
            conn.execute(
                sa.update(SchemaVersionRow.__table__)
                .where(SchemaVersionRow.__table__.c.id == 1)
                .values(version=SCHEMA_VERSION, updated_at=datetime.now(timezone.utc))
            )
        return SCHEMA_VERSION


def _add_missing_columns(conn: Connection) -> None:
    inspector = sa.inspect(conn)
    preparer = conn.dialect.identifier_preparer
    for table in TABLES:
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in existing or not column.nullable:
                continue
            ddl_type = column.type.compile(dialect=conn.dialect)
            conn.execute(
                sa.text(
                    f"ALTER TABLE {preparer.quote(table.name)} "
                    f"ADD COLUMN {preparer.quote(column.name)} {ddl_type}"
                )
            )
            logger.info("llmobs: added column %s.%s", table.name, column.name)


def _add_missing_indexes(conn: Connection) -> None:
    inspector = sa.inspect(conn)
    for table in TABLES:
        existing = {ix["name"] for ix in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in existing and _index_applies(index, conn.dialect.name):
                index.create(conn, checkfirst=True)
                logger.info("llmobs: added index %s", index.name)


def _index_applies(index: sa.Index, dialect: str) -> bool:
    """False for an ``Index(...).ddl_if(dialect=...)`` meant for another database."""
    only = getattr(getattr(index, "_ddl_if", None), "dialect", None)
    return only is None or dialect in ((only,) if isinstance(only, str) else only)
