"""Shared fixtures: a fresh store per test on SQLite and, when it answers, on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from llmobs_callbacks import LLMObs
from llmobs_callbacks.sinks.tables import TABLES

POSTGRES_URL = os.environ.get("LLMOBS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "skip with this reason"
        return f"PostgreSQL at {POSTGRES_URL} not reachable: {type(exc).__name__}: {exc}"


_PG_SKIP_REASON = _postgres_available()
_TABLES = {t.name: t for t in TABLES}


def _fresh_postgres_url() -> str:
    """A private schema per test, so tests never see each other's rows."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    engine.dispose()
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def drop_postgres_schema(url: str) -> None:
    """Drop a test's private schema: left behind, thousands of them bloat the catalogs (the ADBC
    driver reads pg_type on every connect). Best effort: a connection the test left open must
    not hang the suite."""
    schema = url.rsplit("search_path%3D", 1)[-1]
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("set local lock_timeout = '5s'"))
            conn.execute(sa.text(f'drop schema if exists "{schema}" cascade'))
    except sa.exc.DBAPIError:
        pass
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A store URL with no tables yet: SQLite file in tmp_path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'llmobs.db'}"
        return
    if _PG_SKIP_REASON:
        if os.environ.get("LLMOBS_REQUIRE_POSTGRES"):  # CI: a missing database is a failure
            pytest.fail(_PG_SKIP_REASON)
        pytest.skip(_PG_SKIP_REASON)
    url = _fresh_postgres_url()
    yield url
    drop_postgres_schema(url)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'llmobs.db'}"


@pytest.fixture
def obs(db_url: str) -> Iterator[LLMObs]:
    instance = LLMObs(db_url, service="test-svc", environment="test")
    yield instance
    instance.shutdown()


def fetch(url: str, table: str, order_by: str | None = None, **where) -> list[dict]:
    """Rows of one store table as dicts, typed by the schema (UTC datetimes, decoded JSON)."""
    t = _TABLES[table]
    query = sa.select(t).where(*(t.c[k] == v for k, v in where.items()))
    if order_by:
        query = query.order_by(t.c[order_by])
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]
    finally:
        engine.dispose()


def sql(url: str, statement: str, **params) -> list[tuple]:
    """A raw SQL query, as a user or Grafana would write it."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(statement), params)]
    finally:
        engine.dispose()


def spans_by_name(url: str) -> dict[str, dict]:
    """The spans table keyed by span name (the last one wins for repeated names)."""
    return {r["name"]: r for r in fetch(url, "spans", order_by="start_time")}
