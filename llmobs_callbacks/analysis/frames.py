"""Query results as pandas frames: the SQLAlchemy read (the fallback of ``fetch.ArrowReader``) and
the column conversions every read applies (UTC times, JSON decoded once per distinct text)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def pandas_module() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "llmobs_callbacks.analysis needs pandas: pip install 'llmobs-callbacks[analysis]'"
        ) from exc
    return pandas


def sqlalchemy_frame(engine: Engine, query: sa.Select) -> pd.DataFrame:
    """The result of ``query`` through SQLAlchemy, one DataFrame (no per-row result processing)."""
    pd = pandas_module()
    # Skip SQLAlchemy's per-row result processing (datetime parsing, JSON decoding): pandas
    # does the same work per column, much faster on large results.
    raw = query.with_only_columns(
        *(
            sa.type_coerce(
                getattr(c, "element", c) if isinstance(c, sa.Label) else c, sa.types.NullType()
            ).label(c.name)
            for c in query.selected_columns
        ),
        maintain_column_froms=True,
    )
    with engine.connect() as conn:
        result = conn.execute(raw)
        names = list(result.keys())
        # No column has a result processor (NullType): the DBAPI's plain tuples are the values.
        rows = result.cursor.fetchall() if result.cursor is not None else []
        result.close()
    return pd.DataFrame.from_records(rows, columns=names, coerce_float=True)


def empty_text(frame: Any) -> Any:
    """An empty object column aligned with ``frame`` (no rows)."""
    return pandas_module().Series([], index=frame.index, dtype=object)


def json_column(series: Any) -> Any:
    """Decode a column of JSON texts once per distinct text: spans share their metadata, so a
    million rows hold a few thousand distinct texts. Rows with equal text share one decoded object."""
    pd = pandas_module()
    import numpy as np

    present = series.dropna()
    if not len(present):
        return [None] * len(series)
    if not isinstance(present.iloc[0], str):
        return series.tolist()  # already decoded (psycopg decodes json)
    codes, texts = pd.factorize(series, use_na_sentinel=True)
    decoded = json.loads("[" + ",".join(texts) + "]")
    values = np.empty(len(decoded) + 1, dtype=object)  # the last one (None) for code -1: NULL
    for i, value in enumerate(decoded):
        values[i] = value
    return values[codes]


def python_type(column: sa.Column) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def utc_series(series: Any) -> Any:
    pd = pandas_module()
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC")
    present = series.dropna()
    if len(present) and isinstance(present.iloc[0], str):  # SQLite's stored text
        return pd.to_datetime(series, format="ISO8601", utc=True)
    return pd.to_datetime(series, utc=True)
