"""The gate's reads: each side's requests (``StoreReader.traces``) and, for pairing, the roots'
input ids and hashes (``queries.root_inputs_query``); pairing requests by input."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from ..queries import root_inputs_query

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..reader import StoreReader
    from .model import GateCriteria, GateResult


from .model import INPUT_ID_KEYS, GateInputError


def read_sides(
    store: StoreReader,
    by: str,
    baseline: str,
    candidate: str,
    since: Any,
    until: Any,
    pair_by: str = "off",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The requests of each side (``StoreReader.traces``: one row per user request, internal
    traces left out) with ``latency_ms``, ``error`` (1.0 when the root failed), ``tokens``,
    ``cost`` (sum over its LLM calls, 0 without any), ``unpriced_calls`` / ``unpriced_model``,
    ``score_<name>`` (mean of each current score name) and, for pairing, ``input_id`` (from the
    root's metadata) and ``input_hash`` (of the root's input text; read only for
    ``pair_by="input"``). The one place the gate reads the store."""
    # One read of the window (its LLM calls are aggregated per request in the same query), the
    # two versions picked in pandas: filtering by version in SQL would not narrow that read.
    every = store.traces(since=since, until=until, scores=True)
    values = every[by].astype("string")
    frames = [every[values.eq(v).fillna(False).astype(bool)] for v in (baseline, candidate)]
    missing = [v for v, f in zip((baseline, candidate), frames, strict=True) if not len(f)]
    if missing:
        known = sorted({str(v) for v in every[by].dropna()}) if len(every) else []
        asked = " or ".join(f"'{v}'" for v in dict.fromkeys(missing))
        raise GateInputError(f"no requests for {by} {asked}; known: {', '.join(known) or 'none'}")
    inputs = _root_inputs(store, [f["trace_id"] for f in frames], hashed=pair_by == "input")
    out = []
    for frame in frames:
        frame = frame.join(inputs, on="trace_id").assign(
            tokens=frame["tokens"].astype("float64"),
            error=(frame["status"] == "error").astype("float64"),
            cost=frame["cost_usd"].astype("float64").fillna(0.0),
        )
        out.append(frame.reset_index(drop=True))
    return out[0], out[1]


def _root_inputs(store: StoreReader, trace_ids: list[Any], hashed: bool) -> pd.DataFrame:
    """Per trace: the root's ``input_id`` from its metadata and (``hashed``) the hash of its
    input text. Read by trace id in chunks (bounded parameter lists on SQLite and PostgreSQL)."""
    import pandas as pd

    ids = [str(t) for frame_ids in trace_ids for t in frame_ids]
    roots = []
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 5000):
            roots += conn.execute(root_inputs_query(ids[start : start + 5000], with_input=hashed)).all()
    return pd.DataFrame(
        {
            "trace_id": [str(r[0]) for r in roots],
            "input_id": [_input_id(r[1]) for r in roots],
            "input_hash": [_hash(r[2]) if hashed else None for r in roots],
        }
    ).set_index("trace_id")


def _input_id(attributes: Any) -> str | None:
    if isinstance(attributes, str):  # a driver that hands JSON back as text
        import json

        try:
            attributes = json.loads(attributes)
        except ValueError:
            return None
    if not isinstance(attributes, dict):
        return None
    for key in INPUT_ID_KEYS:
        value = attributes.get(key)
        if value is not None and str(value) != "":
            return f"{key}={value}"
    return None


def _hash(text: Any) -> str | None:
    if text is None:
        return None
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def pair_requests(base: pd.DataFrame, cand: pd.DataFrame, c: GateCriteria, result: GateResult):
    """Match the sides by input when ``pair_by`` asks (or, ``auto``, when every request carries
    an input id): one row per input on each side (the mean of its requests when an input was
    answered several times), inputs of one side only left out. Unpaired: the sides as they are."""
    if c.pair_by == "off":
        return base, cand
    key = "input_hash" if c.pair_by == "input" else "input_id"
    has_b, has_c = base[key].notna(), cand[key].notna()
    if c.pair_by == "auto" and not (len(base) and len(cand) and has_b.all() and has_c.all()):
        return base, cand
    common = sorted(set(base.loc[has_b, key]) & set(cand.loc[has_c, key]))
    if c.pair_by == "auto" and len(common) < c.min_samples:
        result.notes.append(
            f"unpaired: the requests carry input ids, but only {len(common)} inputs were answered by both"
        )
        return base, cand
    numeric = ["latency_ms", "error", "tokens", "cost", "unpriced_calls", *_score_columns(base, cand)]

    def per_input(frame: pd.DataFrame) -> pd.DataFrame:
        kept = frame[frame[key].isin(common)]
        cols = [col for col in numeric if col in kept]
        grouped = kept.groupby(key)[cols].mean()
        grouped["unpriced_model"] = kept.groupby(key)["unpriced_model"].first()
        return grouped.reindex(common)

    paired_b, paired_c = per_input(base), per_input(cand)
    label = "input text" if key == "input_hash" else _id_keys(base, cand)
    result.paired_by, result.pairs = label, len(common)
    result.unmatched = (
        int((~base[key].isin(common)).sum()),
        int((~cand[key].isin(common)).sum()),
    )
    if any(result.unmatched):
        result.notes.append(
            f"paired on {len(common)} inputs; unmatched requests left out: {result.unmatched[0]} "
            f"of {result.baseline} and {result.unmatched[1]} of {result.candidate}"
        )
    return paired_b.reset_index(drop=True), paired_c.reset_index(drop=True)


def _score_columns(*frames: pd.DataFrame) -> list[str]:
    return sorted({col for f in frames for col in f.columns if col.startswith("score_")})


def _id_keys(*frames: pd.DataFrame) -> str:
    keys = sorted({str(v).split("=", 1)[0] for f in frames for v in f["input_id"].dropna()})
    return "/".join(keys) or "input id"
