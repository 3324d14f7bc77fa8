"""Engines and schema management for the SQL store (SQLite and PostgreSQL).

``ensure_schema`` creates missing tables, then brings an older database up to
``SCHEMA_VERSION``: each migration step is a function, and columns added to the models since
the database was made are added as nullable columns, so no existing row is lost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from .tables import SCHEMA_VERSION, TABLES, SchemaVersionRow

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///llmobs.db"
DATABASE_URL_ENV = "LLMOBS_DATABASE_URL"


class SchemaVersionError(RuntimeError):
    """The database was written by a newer llmobs-callbacks than this one."""


def resolve_database_url(url: str | None) -> str:
    return url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def make_engine(url: str) -> Engine:
    """An engine tuned for a single writer thread plus readers."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        if not in_memory:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # One shared connection for :memory:, or every connection would see an empty db.
            poolclass=StaticPool if in_memory else None,
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cursor = dbapi_conn.cursor()
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


# version N -> N+1 steps, applied in order. Adding nullable columns needs no step (see below).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}


def ensure_schema(engine: Engine, attempts: int = 3) -> int:
    """Create or upgrade the schema; returns the version the database is at afterwards.

    Several processes may start at once on a new database: a losing CREATE is retried.
    """
    for attempt in range(attempts):
        try:
            return _ensure_schema_once(engine)
        except SchemaVersionError:
            raise
        except sa.exc.DBAPIError:
            if attempt == attempts - 1:
                raise
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
        if current < SCHEMA_VERSION:
            for version in range(current, SCHEMA_VERSION):
                step = MIGRATIONS.get(version)
                if step is not None:
                    logger.info("llmobs: migrating schema %d -> %d", version, version + 1)
                    step(conn)
            _add_missing_columns(conn)
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
