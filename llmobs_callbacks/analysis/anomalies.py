"""Anomaly detection over the store: what changed in the last ``window`` against the ``baseline``.

``detect_anomalies(store, now, window="1h", baseline="24h")`` compares the window
``[now - window, now)`` with the baseline just before it, ``[now - window - baseline, now - window)``,
and returns :class:`Anomaly` records (``type``, ``severity``, the group concerned, ``current``,
``baseline``, ``change`` and a one-line ``explanation``).

How groups are compared. Request metrics (tokens, cost, latency, errors), the branch mix and
quality scores are checked per prompt version (and model). A version that was already serving in
the first half of the baseline is *established* and compared with its own baseline. A version
that appeared later is *new*: all its requests since it appeared are compared with the traffic of
the other versions in the baseline (same model first), so a prompt update is named as soon as it
serves ``min_requests`` requests and stays flagged until it is established — what it changed is
then the new normal.

Two detectors per metric, each needing a minimum sample size:

- **rules** — the seed's thresholds (:class:`AnomalyThresholds`), each also required to be
  statistically significant (``rule_alpha``) so small samples cannot trip them;
- **statistics** — a robust z-score of the current value against the baseline's per-``window``
  buckets (median and MAD, so a regression already inside the baseline does not hide itself),
  exact tests for rates and shares (Fisher, binomial) at ``alpha``, with small effect floors.

A finding of both detectors is ``critical``, of one ``warning``; ``new_prompt_version`` is
``info``. Nothing here writes to the store.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..sinks.tables import BranchDecisionRow, RetrievedDocumentRow, ScoreRow, SpanRow
from .report import parse_since

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .store import TraceStore

SEVERITIES = ("info", "warning", "critical")
TYPES = (
    "token_spike",
    "cost_spike",
    "latency_spike",
    "error_rate",
    "tool_failure",
    "retrieval_empty",
    "branch_shift",
    "quality_drop",
    "new_prompt_version",
)
# Score names where a higher value is worse (rule scores and the judge's 0/1 hallucination flag).
LOWER_IS_BETTER = frozenset({"hallucination", "empty_answer", "refusal"})
_NONE = ""  # internal stand-in for a missing prompt version / model (pandas groups drop NaN)


@dataclass(frozen=True)
class AnomalyThresholds:
    """Thresholds of the anomaly detectors. Rule thresholds default to the seed's (the same as
    ``dashboards.Thresholds`` for the Prometheus alert rules); change any with ``replace()`` or
    keyword arguments, e.g. ``AnomalyThresholds(token_spike_factor=2.0)``."""

    # -- rules (each also needs p < rule_alpha) --
    token_spike_factor: float = 1.5  # mean tokens per request ≥ 1.5 × the reference's
    cost_spike_factor: float = 2.0  # the window's cost ≥ 2 × the baseline's mean per window
    cost_per_request_factor: float = 1.5  # a version's cost per request ≥ 1.5 × the reference's
    latency_spike_factor: float = 1.5  # p95 (and p99) latency ≥ 1.5 × the reference's
    error_rate: float = 0.02  # share of failed requests above 2 % …
    error_rate_factor: float = 3.0  # … or ≥ 3 × the reference's rate
    tool_failure_rate: float = 0.10  # share of failed calls of a tool
    tool_failure_factor: float = 3.0
    retrieval_empty_rate: float = 0.10  # share of retrievals that returned no document
    retrieval_empty_factor: float = 3.0
    branch_shift: float = 0.20  # a route's share of its node's decisions moves 20 points
    quality_drop: float = 0.10  # a score's mean falls by 10 % of the reference's mean
    hallucination_rate: float = 0.05  # share of judged traces flagged as hallucinated
    rule_alpha: float = 1e-3  # significance a rule's finding needs (one-sided tests)
    # -- statistics --
    z_threshold: float = 4.0  # robust z-score against the baseline's per-window buckets
    min_increase: float = 0.25  # and at least +25 % over the buckets' median (tokens, cost, latency)
    alpha: float = 1e-4  # exact tests of rates and shares (Bonferroni over a node's routes)
    branch_min_shift: float = 0.05  # a significant route shift must still move ≥ 5 points
    # -- minimum sample sizes: quiet hours page nobody --
    min_requests: int = 10  # requests (or tool calls, retrievals) in the current sample and reference
    min_requests_p99: int = 100  # p99 is only compared with this many requests on each side
    min_decisions: int = 20  # routing decisions of a graph node
    min_scores: int = 10  # scores of a metric
    min_baseline_buckets: int = 6  # baseline buckets with data before a robust z-score is used
    settle_fraction: float = 0.5  # a version serving since the first half of the baseline is established

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Anomaly:
    """One finding. ``current`` / ``baseline`` are in the unit of ``metric``; ``change`` is their
    ratio for ``change_unit == "x"`` and their difference for ``"pts"`` (rates and shares, in
    percentage points) and ``"delta"`` (score means)."""

    type: str
    severity: str
    metric: str
    current: float | None
    baseline: float | None
    change: float | None
    change_unit: str
    explanation: str
    prompt_version: str | None = None
    model: str | None = None
    tool: str | None = None
    graph: str | None = None
    route: str | None = None
    detector: str = "rule"  # "rule", "statistical" or "rule+statistical"
    samples: int = 0
    baseline_samples: int = 0
    p_value: float | None = None
    z: float | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str | None, ...]:
        """The anomaly's identity: its type and group (and, for quality, the score's metric)."""
        metric = self.metric if self.type == "quality_drop" else None
        return (self.type, self.prompt_version, self.model, self.tool, self.graph, self.route, metric)

    @property
    def fingerprint(self) -> str:
        """``key`` as text: what makes two findings "the same anomaly" (alert de-duplication)."""
        return "|".join("" if p is None else str(p) for p in self.key)

    @property
    def group(self) -> str:
        """The group as text: ``prompt_version=v2 model=gpt-4o-mini`` (empty for all traffic)."""
        pairs = [
            ("prompt_version", self.prompt_version),
            ("model", self.model),
            ("tool", self.tool),
            ("graph", self.graph),
            ("route", self.route),
        ]
        return " ".join(f"{k}={v}" for k, v in pairs if v is not None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO text, no NaN."""
        out = asdict(self)
        out["fingerprint"] = self.fingerprint
        return _json_safe(out)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- public entry points ---------------------------------------------------------------------------


def parse_duration(value: str | timedelta) -> timedelta:
    """``"1h"``, ``"30m"``, ``"24h"``, ``"7d"``, ``"90s"`` (or a timedelta) → a positive timedelta."""
    if isinstance(value, timedelta):
        duration = value
    else:
        units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        text = str(value).strip()
        try:
            duration = timedelta(**{units[text[-1]]: float(text[:-1])})
        except (KeyError, ValueError, IndexError):
            raise ValueError(f"not a duration: {value!r} (use e.g. 30m, 1h, 24h, 7d)") from None
    if duration <= timedelta(0):
        raise ValueError(f"a duration must be positive: {value!r}")
    return duration


def as_utc(value: datetime | str | None) -> datetime:
    """An aware UTC datetime from ISO text, '24h'-style text (before now), a datetime (naive =
    UTC) or None (now)."""
    if value is None:
        return datetime.now(timezone.utc)
    if isinstance(value, str):
        parsed = parse_since(value)
        assert parsed is not None
        return parsed
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def detect_anomalies(
    store: TraceStore,
    now: datetime | str | None = None,
    window: str | timedelta = "1h",
    baseline: str | timedelta = "24h",
    thresholds: AnomalyThresholds | None = None,
    types: Iterable[str] | None = None,
) -> list[Anomaly]:
    """Anomalies of the ``window`` before ``now`` (default: the current time) against the
    ``baseline`` before the window, most severe first. ``types`` keeps only those types."""
    now_ = as_utc(now)
    w, b = parse_duration(window), parse_duration(baseline)
    data = load(store, now_ - w - b, now_)
    return _select(Detector(data, thresholds or AnomalyThresholds()).detect(now_, w, b), types)


def backtest(
    store: TraceStore,
    start: datetime | str,
    end: datetime | str | None = None,
    every: str | timedelta = "1h",
    window: str | timedelta = "1h",
    baseline: str | timedelta = "24h",
    thresholds: AnomalyThresholds | None = None,
    types: Iterable[str] | None = None,
) -> list[tuple[datetime, list[Anomaly]]]:
    """Replay the detector over history: ``[(now, anomalies), ...]`` for each ``now`` from
    ``start`` to ``end`` every ``every`` — how often given thresholds would have paged.
    The store is read once."""
    start_, end_ = as_utc(start), as_utc(end)
    w, b, step = parse_duration(window), parse_duration(baseline), parse_duration(every)
    detector = Detector(load(store, start_ - w - b, end_), thresholds or AnomalyThresholds())
    out = []
    moment = start_
    while moment <= end_:
        out.append((moment, _select(detector.detect(moment, w, b), types)))
        moment += step
    return out


def _select(anomalies: list[Anomaly], types: Iterable[str] | None) -> list[Anomaly]:
    if types is None:
        return anomalies
    wanted = set(types)
    unknown = wanted - set(TYPES)
    if unknown:
        raise ValueError(f"unknown anomaly types {sorted(unknown)}; known: {', '.join(TYPES)}")
    return [a for a in anomalies if a.type in wanted]


def format_anomalies(anomalies: Sequence[Anomaly], *, now: datetime | None = None) -> str:
    """Anomalies as text, one line each (most severe first), for terminals and chat messages."""
    if not anomalies:
        return "no anomalies" + (f" at {now:%Y-%m-%d %H:%M} UTC" if now else "")
    lines = []
    for a in anomalies:
        lines.append(f"{a.severity.upper():8} {a.type:18} {a.explanation}")
    return "\n".join(lines)


# -- loading ---------------------------------------------------------------------------------------


@dataclass
class Data:
    """What the detectors read, for one stretch of time (see :func:`load`)."""

    start: datetime
    end: datetime
    traces: pd.DataFrame  # start_time, status, latency_ms, tokens, cost_usd, pv, model
    tools: pd.DataFrame  # start_time, name, status
    retrievals: pd.DataFrame  # start_time, name, documents
    decisions: pd.DataFrame  # created_at, trace_id, graph, from_node, to_node, pv
    scores: pd.DataFrame  # trace_id, name, value, start_time (the trace's), pv
    version_first_seen: dict[str, datetime]  # earliest span of each version, over the whole store


SPANS = SpanRow.__table__
DOCS = RetrievedDocumentRow.__table__
BRANCHES = BranchDecisionRow.__table__
SCORES = ScoreRow.__table__


def _pd() -> Any:
    import pandas

    return pandas


def _read(store: TraceStore, query: sa.Select, time_columns: Sequence[str]) -> pd.DataFrame:
    pd = _pd()
    with store.engine.connect() as conn:
        result = conn.execute(query)
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    for name in time_columns:
        frame[name] = _utc(frame[name])
    return frame


def _utc(series: Any) -> Any:
    pd = _pd()
    if len(series) == 0:
        return pd.Series([], dtype="datetime64[ns, UTC]")
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC")
    if isinstance(series.iloc[0], str):
        return pd.to_datetime(series, format="ISO8601", utc=True)
    return pd.to_datetime(series, utc=True)


def requests(store: TraceStore, start: datetime, end: datetime) -> pd.DataFrame:
    """One row per request (root span) started in ``[start, end)``, as ``TraceStore.traces``
    defines it: tokens and cost summed over its LLM calls, its prompt version the root's else the
    first LLM call's, its model the first LLM call's. Two indexed queries, aggregated in pandas."""
    pd = _pd()
    s = SPANS.c
    roots = _read(
        store,
        sa.select(s.trace_id, s.start_time, s.status, s.latency_ms, s.prompt_version).where(
            s.parent_span_id.is_(None), s.start_time >= start, s.start_time < end
        ),
        ["start_time"],
    )
    root_ids = (
        sa.select(s.trace_id)
        .where(s.parent_span_id.is_(None), s.start_time >= start, s.start_time < end)
        .scalar_subquery()
    )
    llm = _read(
        store,
        sa.select(
            s.trace_id, s.start_time, s.model, s.prompt_version, s.input_tokens, s.output_tokens, s.cost_usd
        ).where(s.kind == "llm", s.trace_id.in_(root_ids)),
        ["start_time"],
    )
    roots["trace_id"] = roots["trace_id"].astype(str)
    if len(llm):
        llm["trace_id"] = llm["trace_id"].astype(str)
        for col in ("input_tokens", "output_tokens", "cost_usd"):
            llm[col] = pd.to_numeric(llm[col], errors="coerce").astype("float64")
        llm["tokens"] = llm["input_tokens"].fillna(0) + llm["output_tokens"].fillna(0)
        grouped = llm.groupby("trace_id")
        per_trace = pd.DataFrame(
            {
                "tokens": grouped["tokens"].sum(),
                # min_count=1: a request whose calls are all unpriced has no cost (NaN), not 0
                "cost_usd": grouped["cost_usd"].sum(min_count=1),
            }
        )
        first = llm.sort_values(["trace_id", "start_time"]).drop_duplicates("trace_id").set_index("trace_id")
        per_trace["first_model"] = first["model"]
        per_trace["first_version"] = first["prompt_version"]
        roots = roots.join(per_trace, on="trace_id")
    else:
        roots = roots.assign(tokens=0.0, cost_usd=float("nan"), first_model=None, first_version=None)
    version = roots["prompt_version"].where(roots["prompt_version"].notna(), roots["first_version"])
    return pd.DataFrame(
        {
            "trace_id": roots["trace_id"],
            "start_time": roots["start_time"],
            "status": roots["status"],
            "latency_ms": pd.to_numeric(roots["latency_ms"], errors="coerce").astype("float64"),
            "tokens": roots["tokens"].fillna(0.0).astype("float64"),
            "cost_usd": pd.to_numeric(roots["cost_usd"], errors="coerce").astype("float64"),
            "pv": version.fillna(_NONE).astype(str),
            "model": roots["first_model"].fillna(_NONE).astype(str),
        }
    ).sort_values("start_time", kind="stable", ignore_index=True)


def score_values(store: TraceStore, since: datetime) -> pd.DataFrame:
    """``trace_id``, ``name``, ``value`` of the scores created since ``since`` (with a value)."""
    sc = SCORES.c
    frame = _read(
        store,
        sa.select(sc.trace_id, sc.name, sc.value).where(
            sc.created_at >= since, sc.value.is_not(None), sc.superseded_at.is_(None)
        ),
        [],
    )
    frame["trace_id"] = frame["trace_id"].astype(str)
    frame["value"] = frame["value"].astype("float64")
    return frame


def load(store: TraceStore, start: datetime, end: datetime) -> Data:
    """Read requests (``store.traces``), tool calls, retrievals with their document counts,
    routing decisions and scores of ``[start, end)``, and each prompt version's first appearance."""
    pd = _pd()
    traces = requests(store, start, end)
    s = SPANS.c
    tools = _read(
        store,
        sa.select(s.start_time, s.name, s.status).where(
            s.kind == "tool", s.start_time >= start, s.start_time < end
        ),
        ["start_time"],
    )
    docs = (
        sa.select(DOCS.c.span_id, sa.func.count().label("documents"))
        .group_by(DOCS.c.span_id)
        .subquery("docs")
    )
    retrievals = _read(
        store,
        sa.select(s.start_time, s.name, sa.func.coalesce(docs.c.documents, 0).label("documents"))
        .select_from(SPANS.outerjoin(docs, docs.c.span_id == s.span_id))
        .where(s.kind == "retriever", s.status == "ok", s.start_time >= start, s.start_time < end),
        ["start_time"],
    )
    c = BRANCHES.c
    decisions = _read(
        store,
        sa.select(c.created_at, c.trace_id, c.graph, c.from_node, c.to_node).where(
            c.created_at >= start, c.created_at < end
        ),
        ["created_at"],
    )
    version_of = dict(zip(traces["trace_id"], traces["pv"], strict=True))
    decisions["pv"] = decisions["trace_id"].astype(str).map(version_of).fillna(_NONE)
    # Scores of the window's traces may be written later (the judge runs after the trace).
    raw_scores = score_values(store, start)
    if len(raw_scores):
        by_trace = traces.set_index("trace_id")[["start_time", "pv"]]
        scores = raw_scores.join(by_trace, on="trace_id", how="inner")
    else:
        scores = pd.DataFrame({"trace_id": [], "name": [], "value": [], "start_time": [], "pv": []})
    versions = sorted(set(traces["pv"]) - {_NONE})
    first_seen: dict[str, datetime] = {}
    if versions:
        query = (
            sa.select(s.prompt_version, sa.func.min(s.start_time).label("first"))
            .where(s.prompt_version.in_(versions))
            .group_by(s.prompt_version)
        )
        frame = _read(store, query, ["first"])
        first_seen = {
            str(v): t.to_pydatetime() for v, t in zip(frame["prompt_version"], frame["first"], strict=True)
        }
    return Data(start, end, traces, tools, retrievals, decisions, scores, first_seen)


# -- statistics ------------------------------------------------------------------------------------


def _stats() -> Any:
    try:
        from scipy import stats
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("anomaly detection needs scipy: pip install 'llmobs-callbacks[analysis]'") from exc
    return stats


def _welch_greater(x: Any, y: Any) -> float:
    """One-sided Welch t-test p-value that mean(x) > mean(y)."""
    mx, my = float(x.mean()), float(y.mean())
    if float(x.var()) == 0.0 and float(y.var()) == 0.0:
        return 0.0 if mx > my else 1.0
    with warnings.catch_warnings():  # nearly constant samples: scipy warns, the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(_stats().ttest_ind(x, y, equal_var=False, alternative="greater").pvalue)
    return 1.0 if math.isnan(p) else p


def _robust_z(value: float, buckets: Sequence[float]) -> tuple[float | None, float | None]:
    """(z, median) of ``value`` against bucket values: (value − median) / (1.4826 · MAD).
    A MAD of zero (identical buckets) is floored at 1 % of the median, so tiny changes of a
    perfectly flat series are not infinitely significant."""
    np = __import__("numpy")
    arr = np.asarray(buckets, dtype="float64")
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return None, None
    median = float(np.median(arr))
    scale = 1.4826 * float(np.median(np.abs(arr - median)))
    scale = max(scale, 0.01 * abs(median), 1e-12)
    return (value - median) / scale, median


def _fisher_greater(k: int, n: int, ref_k: int, ref_n: int) -> float:
    return float(_stats().fisher_exact([[k, n - k], [ref_k, ref_n - ref_k]], alternative="greater").pvalue)


def _binom_greater(k: int, n: int, p: float) -> float:
    return float(_stats().binomtest(k, n, p, alternative="greater").pvalue)


# -- the detectors ---------------------------------------------------------------------------------


@dataclass
class _Sample:
    """A group's current rows and the reference rows it is compared with."""

    current: pd.DataFrame
    reference: pd.DataFrame
    since: datetime  # start of the current sample (window start, or the new version's first request)
    new: bool
    reference_label: str  # "its baseline" / "v1" …


def _fmt_num(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "$":
        return f"${value:.4g}"
    if unit == "ms":
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"
    if unit == "%":
        return f"{value * 100:.1f}%"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _fmt_p(p: float | None) -> str:
    return "" if p is None else f"p={p:.1g}"


class Detector:
    """All detectors over one loaded :class:`Data`; ``detect(now, window, baseline)`` may be
    called for many ``now`` (backtests)."""

    def __init__(self, data: Data, thresholds: AnomalyThresholds) -> None:
        self.data = data
        self.t = thresholds
        # Comparisons that had enough data to be made, by type (how much a quiet result means).
        self.evaluated: Counter[str] = Counter()

    # -- orchestration --

    def detect(self, now: datetime, window: timedelta, baseline: timedelta) -> list[Anomaly]:
        self.now, self.window = now, window
        self.window_start = now - window
        self.baseline_start = self.window_start - baseline
        self.settle_at = self.baseline_start + baseline * self.t.settle_fraction
        d = self.data
        self.traces = d.traces[
            (d.traces["start_time"] >= self.baseline_start) & (d.traces["start_time"] < now)
        ]
        found: list[Anomaly] = []
        found += self._request_metrics()
        found += self._hourly_cost()
        found += self._rates(
            d.tools,
            "status",
            "tool_failure",
            "failure rate",
            self.t.tool_failure_rate,
            self.t.tool_failure_factor,
        )
        found += self._rates(
            d.retrievals,
            "documents",
            "retrieval_empty",
            "empty retrieval rate",
            self.t.retrieval_empty_rate,
            self.t.retrieval_empty_factor,
        )
        found += self._branches()
        found += self._quality()
        found += self._new_versions()
        return _merge(found)

    def _in(self, frame: pd.DataFrame, column: str, start: datetime, end: datetime) -> pd.DataFrame:
        return frame[(frame[column] >= start) & (frame[column] < end)]

    def _sample(
        self, rows: pd.DataFrame, others: pd.DataFrame, time_column: str, same: pd.Series | None
    ) -> _Sample | None:
        """Current and reference rows of one group (``rows``: the group's rows in the lookback;
        ``others``: everyone else's; ``same``: a mask of ``others`` to prefer, e.g. same model)."""
        current_window = rows[rows[time_column] >= self.window_start]
        if current_window.empty:
            return None
        first = rows[time_column].min()
        if first < self.settle_at:
            reference = rows[rows[time_column] < self.window_start]
            return _Sample(current_window, reference, self.window_start, False, "its baseline")
        base = others[others[time_column] < self.window_start]
        reference = base
        if same is not None:
            preferred = base[same.reindex(base.index, fill_value=False)]
            if len(preferred) >= self.t.min_requests:
                reference = preferred
        versions = sorted({v or "(none)" for v in reference["pv"]}) if "pv" in reference else []
        label = ", ".join(versions[:3]) + ("…" if len(versions) > 3 else "") if versions else "the baseline"
        return _Sample(rows, reference, first.to_pydatetime(), True, label)

    def _describe(self, s: _Sample, what: str) -> str:
        if s.new:
            return f"{what} since it appeared at {s.since:%Y-%m-%d %H:%M} ({len(s.current)} requests)"
        return f"{what} in the last {_fmt_window(self.window)} ({len(s.current)} requests)"

    def _buckets(self, frame: pd.DataFrame, column: str, time_column: str = "start_time") -> Any:
        """Rows of the baseline grouped by window-sized buckets (aligned on the window's start)."""
        size = self.window.total_seconds()
        offset = (frame[time_column] - self.window_start).dt.total_seconds()
        index = (offset // size).astype("int64")
        return frame.groupby(index)[column]

    def _anomaly(self, **kwargs: Any) -> Anomaly:
        kwargs.setdefault("window_end", self.now)
        for key in ("prompt_version", "model"):
            if kwargs.get(key) == _NONE:
                kwargs[key] = None
        return Anomaly(**kwargs)

    # -- request metrics: tokens, cost per request, latency, errors --

    def _request_metrics(self) -> list[Anomaly]:
        traces = self.traces
        out: list[Anomaly] = []
        window_rows = traces[traces["start_time"] >= self.window_start]
        # Tokens and cost per prompt version and model (requests without an LLM call have none).
        for (pv, model), rows in traces[traces["model"] != _NONE].groupby(["pv", "model"], sort=True):
            if not ((window_rows["pv"] == pv) & (window_rows["model"] == model)).any():
                continue
            others = traces[(traces["pv"] != pv) & (traces["model"] != _NONE)]
            sample = self._sample(rows, others, "start_time", others["model"] == model)
            if sample is None or len(sample.current) < self.t.min_requests:
                continue
            group = {"prompt_version": pv, "model": model}
            out += self._mean_check(
                sample, group, "tokens", "token_spike", "tokens per request", self.t.token_spike_factor, ""
            )
            out += self._mean_check(
                sample,
                group,
                "cost_usd",
                "cost_spike",
                "cost per request",
                self.t.cost_per_request_factor,
                "$",
            )
        # Latency and errors per prompt version (a request failing before its LLM call has no model).
        for pv, rows in traces.groupby("pv", sort=True):
            if not (window_rows["pv"] == pv).any():
                continue
            sample = self._sample(rows, traces[traces["pv"] != pv], "start_time", None)
            if sample is None or len(sample.current) < self.t.min_requests:
                continue
            group = {"prompt_version": pv}
            out += self._latency(sample, group)
            failed = int((sample.current["status"] == "error").sum())
            ref_failed = int((sample.reference["status"] == "error").sum())
            out += self._rate_check(
                failed,
                len(sample.current),
                ref_failed,
                len(sample.reference),
                self.t.error_rate,
                self.t.error_rate_factor,
                "error_rate",
                "error rate",
                group,
                self._describe(sample, "error rate"),
                sample.since,
                sample.reference_label,
            )
        return out

    def _mean_check(
        self, s: _Sample, group: dict[str, Any], column: str, kind: str, what: str, factor: float, unit: str
    ) -> list[Anomaly]:
        t = self.t
        x, y = s.current[column].dropna(), s.reference[column].dropna()
        if len(x) < t.min_requests or len(y) < t.min_requests:
            return []
        self.evaluated[kind] += 1
        current, ref = float(x.mean()), float(y.mean())
        if ref <= 0:
            return []
        ratio = current / ref
        p = _welch_greater(x, y)
        rule = ratio >= factor and p < t.rule_alpha
        buckets = self._buckets(
            self._in(s.reference, "start_time", self.baseline_start, self.window_start), column
        )
        means = buckets.mean()[buckets.count() >= max(3, t.min_requests // 2)]
        z, median = (None, None)
        stat = False
        if len(means) >= t.min_baseline_buckets:
            z, median = _robust_z(current, list(means))
            stat = z is not None and median is not None and median > 0 and z >= t.z_threshold
            stat = stat and current >= (1 + t.min_increase) * median  # type: ignore[operator]
        if not (rule or stat):
            return []
        metric = "tokens_per_request" if column == "tokens" else "cost_per_request_usd"
        text = (
            f"{self._describe(s, what)}: {_fmt_num(current, unit)} vs {_fmt_num(ref, unit)} for "
            f"{s.reference_label} ({ratio:.2f}×, {_fmt_p(p)}"
            + (f", robust z {z:.1f}" if z is not None else "")
            + ")"
        )
        return [
            self._ratio_anomaly(
                s, group, kind, metric, rule, stat, current, ref, (len(x), len(y)), p, z, text,
                baseline_median=median,
            )
        ]  # fmt: skip

    def _ratio_anomaly(
        self,
        s: _Sample,
        group: dict[str, Any],
        kind: str,
        metric: str,
        rule: bool,
        stat: bool,
        current: float,
        ref: float,
        samples: tuple[int, int],
        p: float,
        z: float | None,
        text: str,
        **details: Any,
    ) -> Anomaly:
        """An anomaly whose change is ``current / ref`` of a sample against its reference."""
        return self._anomaly(
            type=kind,
            severity=_severity(rule, stat),
            metric=metric,
            current=current,
            baseline=ref,
            change=current / ref,
            change_unit="x",
            explanation=_prefix(group) + text,
            detector=_detector(rule, stat),
            samples=samples[0],
            baseline_samples=samples[1],
            p_value=p,
            z=z,
            window_start=s.since,
            details={"reference": s.reference_label, "new_version": s.new, **details},
            **group,
        )

    def _latency(self, s: _Sample, group: dict[str, Any]) -> list[Anomaly]:
        t = self.t
        x, y = s.current["latency_ms"].dropna(), s.reference["latency_ms"].dropna()
        if len(x) < t.min_requests or len(y) < t.min_requests:
            return []
        self.evaluated["latency_spike"] += 1
        found: list[tuple[str, float, float, float, float, bool, bool, float | None]] = []
        for q, minimum in ((0.95, t.min_requests), (0.99, t.min_requests_p99)):
            if len(x) < minimum or len(y) < minimum:
                continue
            current, ref = float(x.quantile(q)), float(y.quantile(q))
            if ref <= 0:
                continue
            # Exceedance test: under "no change", a share (1 - q) of requests exceed the
            # reference's quantile; many more than that is a shifted tail.
            exceed = int((x > ref).sum())
            p = _binom_greater(exceed, len(x), 1 - q)
            rule = current >= t.latency_spike_factor * ref and p < t.rule_alpha
            stat = False
            z = None
            if q == 0.95:
                ref_rows = self._in(s.reference, "start_time", self.baseline_start, self.window_start)
                buckets = self._buckets(ref_rows, "latency_ms")
                counts = buckets.count()
                values = buckets.quantile(q)[counts >= max(3, t.min_requests // 2)]
                if len(values) >= t.min_baseline_buckets:
                    z, median = _robust_z(current, list(values))
                    stat = bool(
                        z is not None
                        and median
                        and z >= t.z_threshold
                        and current >= (1 + t.min_increase) * median
                    )
            if rule or stat:
                found.append((f"p{round(q * 100)}", current, ref, current / ref, p, rule, stat, z))
        if not found:
            return []
        name, current, ref, ratio, p, rule, stat, z = max(found, key=lambda f: (f[5] and f[6], f[3]))
        text = (
            f"{self._describe(s, f'{name} latency')}: {_fmt_num(current, 'ms')} vs {_fmt_num(ref, 'ms')} "
            f"for {s.reference_label} ({ratio:.2f}×, {_fmt_p(p)})"
        )
        return [
            self._ratio_anomaly(
                s, group, "latency_spike", f"{name}_latency_ms", rule, stat, current, ref,
                (len(x), len(y)), p, z, text,
            )
        ]  # fmt: skip

    def _rate_check(
        self,
        k: int,
        n: int,
        ref_k: int,
        ref_n: int,
        limit: float,
        factor: float,
        kind: str,
        what: str,
        group: dict[str, Any],
        described: str,
        since: datetime,
        reference_label: str,
    ) -> list[Anomaly]:
        """A rate (errors, failures, empty retrievals) above ``limit`` or ``factor`` × the
        reference's, significantly (Fisher's exact test; a binomial test against ``limit`` when
        there is no reference)."""
        t = self.t
        if n < t.min_requests:
            return []
        self.evaluated[kind] += 1
        if k == 0:
            return []
        rate = k / n
        has_ref = ref_n >= t.min_requests
        ref_rate = ref_k / ref_n if has_ref else None
        above_limit = rate > limit
        above_ref = ref_rate is not None and rate >= factor * ref_rate and rate > ref_rate
        p = _fisher_greater(k, n, ref_k, ref_n) if has_ref else _binom_greater(k, n, limit)
        if not (above_limit or above_ref) or p >= t.rule_alpha:
            return []
        critical = above_limit and (above_ref or not has_ref) and p < t.alpha
        ref_text = f"{_fmt_num(ref_rate, '%')} for {reference_label}" if has_ref else "no baseline"
        text = f"{described}: {_fmt_num(rate, '%')} ({k} of {n}) vs {ref_text} ({_fmt_p(p)})"
        return [
            self._anomaly(
                type=kind,
                severity="critical" if critical else "warning",
                metric=what.replace(" ", "_"),
                current=rate,
                baseline=ref_rate,
                change=None if ref_rate is None else (rate - ref_rate) * 100,
                change_unit="pts",
                explanation=_prefix(group) + text,
                detector="rule+statistical" if critical else "rule",
                samples=n,
                baseline_samples=ref_n,
                p_value=p,
                window_start=since,
                details={"events": k, "baseline_events": ref_k},
                **group,
            )
        ]

    def _rates(
        self,
        frame: pd.DataFrame,
        column: str,
        kind: str,
        what: str,
        limit: float,
        factor: float,
    ) -> list[Anomaly]:
        """Per tool (or retriever): failed calls (or empty retrievals), window vs baseline."""
        out: list[Anomaly] = []
        frame = self._in(frame, "start_time", self.baseline_start, self.now)
        if frame.empty:
            return out
        bad = frame[column] == "error" if column == "status" else frame[column] == 0
        frame = frame.assign(bad=bad)
        for name, rows in frame.groupby("name", sort=True):
            current = rows[rows["start_time"] >= self.window_start]
            reference = rows[rows["start_time"] < self.window_start]
            described = f"{what} of {name} in the last {_fmt_window(self.window)}"
            out += self._rate_check(
                int(current["bad"].sum()),
                len(current),
                int(reference["bad"].sum()),
                len(reference),
                limit,
                factor,
                kind,
                what,
                {"tool": name},
                described,
                self.window_start,
                "its baseline",
            )
        return out

    # -- the window's total cost against the baseline's windows --

    def _hourly_cost(self) -> list[Anomaly]:
        t = self.t
        traces = self.traces
        current_rows = traces[traces["start_time"] >= self.window_start]
        if len(current_rows) < t.min_requests:
            return []
        base = traces[traces["start_time"] < self.window_start]
        if base.empty:
            return []
        size = self.window.total_seconds()
        offset = (base["start_time"] - self.window_start).dt.total_seconds()
        index = (offset // size).astype("int64")
        sums = base["cost_usd"].fillna(0.0).groupby(index).sum()
        # Empty windows count as zero spend, from the first one with data on.
        full = sums.reindex(range(int(index.min()), 0), fill_value=0.0)
        if len(full) < t.min_baseline_buckets:
            return []
        self.evaluated["cost_spike"] += 1
        current = float(current_rows["cost_usd"].fillna(0.0).sum())
        mean = float(full.mean())
        if mean <= 0:
            return []
        ratio = current / mean
        rule = ratio >= t.cost_spike_factor
        z, median = _robust_z(current, list(full))
        stat = bool(
            z is not None and median and z >= t.z_threshold and current >= (1 + t.min_increase) * median
        )
        if not (rule or stat):
            return []
        # Attribute the excess: each group's spend above what its requests cost in the reference.
        contributions = []
        for (pv, model), rows in current_rows.groupby(["pv", "model"], sort=True):
            lookback = traces[(traces["pv"] == pv) & (traces["model"] == model)]
            others = traces[traces["pv"] != pv]
            sample = self._sample(lookback, others, "start_time", others["model"] == model)
            ref_cost = sample.reference["cost_usd"].dropna() if sample is not None else []
            per_request = float(ref_cost.mean()) if len(ref_cost) else 0.0
            excess = float(rows["cost_usd"].fillna(0.0).sum()) - len(rows) * per_request
            contributions.append((excess, pv, model))
        contributions.sort(reverse=True)
        excess, pv, model = contributions[0] if contributions else (0.0, _NONE, _NONE)
        total_excess = current - mean
        named = excess > 0 and excess >= 0.5 * total_excess
        group = {"prompt_version": pv, "model": model} if named else {}
        win = _fmt_window(self.window)
        text = (
            f"LLM spend in the last {win} {_fmt_num(current, '$')} vs a baseline mean of "
            f"{_fmt_num(mean, '$')} per {win} ({ratio:.2f}×; median {_fmt_num(median, '$')}, robust z "
            f"{z:.1f})"
            + (
                f"; most of the increase is {pv or '(no version)'} on {model or '(no model)'} "
                f"(+{_fmt_num(excess, '$')})"
                if named
                else ""
            )
        )
        return [
            self._anomaly(
                type="cost_spike",
                severity=_severity(rule, stat),
                metric="window_cost_usd",
                current=current,
                baseline=mean,
                change=ratio,
                change_unit="x",
                explanation=text,
                detector=_detector(rule, stat),
                samples=len(current_rows),
                baseline_samples=len(base),
                z=z,
                window_start=self.window_start,
                details={
                    "baseline_median": median,
                    "baseline_windows": len(full),
                    "contributions": [
                        {"prompt_version": v or None, "model": m or None, "excess_usd": e}
                        for e, v, m in contributions
                    ],
                },
                **group,
            )
        ]

    # -- routing --

    def _branches(self) -> list[Anomaly]:
        t = self.t
        decisions = self._in(self.data.decisions, "created_at", self.baseline_start, self.now)
        if decisions.empty:
            return []
        out: list[Anomaly] = []
        for (graph, node, pv), rows in decisions.groupby(["graph", "from_node", "pv"], sort=True):
            same_node = decisions[(decisions["graph"] == graph) & (decisions["from_node"] == node)]
            others = same_node[same_node["pv"] != pv]
            sample = self._sample(rows, others, "created_at", None)
            if sample is None:
                continue
            cur, ref = sample.current, sample.reference
            if len(cur) < t.min_decisions or len(ref) < t.min_decisions:
                continue
            self.evaluated["branch_shift"] += 1
            routes = sorted(set(cur["to_node"]) | set(ref["to_node"]))
            cur_counts = cur["to_node"].value_counts().reindex(routes, fill_value=0)
            ref_counts = ref["to_node"].value_counts().reindex(routes, fill_value=0)
            n, m = int(cur_counts.sum()), int(ref_counts.sum())
            best = None
            for route in routes:
                k, r = int(cur_counts[route]), int(ref_counts[route])
                share, ref_share = k / n, r / m
                p = float(_stats().fisher_exact([[k, n - k], [r, m - r]]).pvalue) * len(routes)
                p = min(p, 1.0)
                shift = share - ref_share
                rule = abs(shift) > t.branch_shift and p < t.rule_alpha
                stat = abs(shift) >= t.branch_min_shift and p < t.alpha
                if (rule or stat) and (best is None or abs(shift) > abs(best[3])):
                    best = (route, share, ref_share, shift, p, rule, stat)
            if best is None:
                continue
            route, share, ref_share, shift, p, rule, stat = best
            mix = _stats().chi2_contingency([list(cur_counts), list(ref_counts)])
            from scipy.spatial.distance import jensenshannon

            jsd = float(jensenshannon(list(cur_counts / n), list(ref_counts / m), base=2) ** 2)
            who = f"prompt version {pv}" if pv != _NONE else "requests without a prompt version"
            when = (
                f"since it appeared at {sample.since:%Y-%m-%d %H:%M}"
                if sample.new
                else f"in the last {_fmt_window(self.window)}"
            )
            text = (
                f"{graph}: {node}→{route} takes {share:.0%} of {who}'s {n} decisions {when} vs "
                f"{ref_share:.0%} for {sample.reference_label} ({shift * 100:+.0f} points, {_fmt_p(p)}; "
                f"mix χ² p={mix.pvalue:.1g}, JSD {jsd:.3f})"
            )
            out.append(
                self._anomaly(
                    type="branch_shift",
                    severity=_severity(rule, stat),
                    metric="route_share",
                    current=share,
                    baseline=ref_share,
                    change=shift * 100,
                    change_unit="pts",
                    explanation=text,
                    detector=_detector(rule, stat),
                    samples=n,
                    baseline_samples=m,
                    p_value=p,
                    window_start=sample.since,
                    prompt_version=pv,
                    graph=graph,
                    route=f"{node}→{route}",
                    details={
                        "from_node": node,
                        "to_node": route,
                        "reference": sample.reference_label,
                        "chi2_p_value": float(mix.pvalue),
                        "jensen_shannon": jsd,
                        "current_mix": {k: int(v) for k, v in cur_counts.items()},
                        "baseline_mix": {k: int(v) for k, v in ref_counts.items()},
                    },
                )
            )
        return out

    # -- quality --

    def _quality(self) -> list[Anomaly]:
        t = self.t
        scores = self._in(self.data.scores, "start_time", self.baseline_start, self.now)
        if scores.empty:
            return []
        out: list[Anomaly] = []
        for (pv, name), rows in scores.groupby(["pv", "name"], sort=True):
            others = scores[(scores["name"] == name) & (scores["pv"] != pv)]
            sample = self._sample(rows, others, "start_time", None)
            if sample is None:
                continue
            x, y = sample.current["value"].astype(float), sample.reference["value"].astype(float)
            if len(x) < t.min_scores:
                continue
            self.evaluated["quality_drop"] += 1
            group = {"prompt_version": pv}
            described = (
                f"{name} scores since it appeared at {sample.since:%Y-%m-%d %H:%M}"
                if sample.new
                else f"{name} scores in the last {_fmt_window(self.window)}"
            )
            if name == "hallucination":
                out += self._rate_check(
                    int((x >= 0.5).sum()),
                    len(x),
                    int((y >= 0.5).sum()),
                    len(y),
                    t.hallucination_rate,
                    t.error_rate_factor,
                    "quality_drop",
                    "hallucination rate",
                    group,
                    described.replace("scores", "flags"),
                    sample.since,
                    sample.reference_label,
                )
                continue
            if len(y) < t.min_scores:
                continue
            current, ref = float(x.mean()), float(y.mean())
            worse = name in LOWER_IS_BETTER
            drop = (current - ref) if worse else (ref - current)
            p = _welch_greater(x, y) if worse else _welch_greater(y, x)
            if ref == 0 or drop < t.quality_drop * abs(ref) or p >= t.rule_alpha:
                continue
            stat = p < t.alpha
            text = (
                f"{described}: mean {current:.3g} vs {ref:.3g} for {sample.reference_label} "
                f"({current - ref:+.3g}, {_fmt_p(p)})"
            )
            out.append(
                self._anomaly(
                    type="quality_drop",
                    severity=_severity(True, stat),
                    metric=f"mean_{name}",
                    current=current,
                    baseline=ref,
                    change=current - ref,
                    change_unit="delta",
                    explanation=_prefix(group) + text,
                    detector=_detector(True, stat),
                    samples=len(x),
                    baseline_samples=len(y),
                    p_value=p,
                    window_start=sample.since,
                    prompt_version=pv,
                    details={"score": name},
                )
            )
        return out

    # -- new prompt versions --

    def _new_versions(self) -> list[Anomaly]:
        out: list[Anomaly] = []
        window_rows = self.traces[self.traces["start_time"] >= self.window_start]
        for pv, rows in window_rows.groupby("pv", sort=True):
            first = self.data.version_first_seen.get(pv)
            if pv == _NONE or first is None or first < self.window_start:
                continue
            models = sorted({m for m in rows["model"] if m})
            out.append(
                self._anomaly(
                    type="new_prompt_version",
                    severity="info",
                    metric="requests",
                    current=float(len(rows)),
                    baseline=None,
                    change=None,
                    change_unit="x",
                    explanation=f"prompt version {pv} first seen at {first:%Y-%m-%d %H:%M} "
                    f"({len(rows)} requests in the last {_fmt_window(self.window)}"
                    + (f" on {', '.join(models)})" if models else ")"),
                    detector="rule",
                    samples=len(rows),
                    window_start=self.window_start,
                    prompt_version=pv,
                    details={"first_seen": first},
                )
            )
        return out


def _severity(rule: bool, stat: bool) -> str:
    return "critical" if rule and stat else "warning"


def _detector(rule: bool, stat: bool) -> str:
    return "rule+statistical" if rule and stat else ("rule" if rule else "statistical")


def _prefix(group: dict[str, Any]) -> str:
    pv, model = group.get("prompt_version"), group.get("model")
    if pv is None and model is None:
        return ""
    who = f"prompt version {pv}" if pv else "requests without a prompt version"
    return f"{who} on {model}: " if model else f"{who}: "


def _fmt_window(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _merge(found: list[Anomaly]) -> list[Anomaly]:
    """One anomaly per (type, group): the most severe finding; the others go to ``details``.
    Sorted most severe first, then by type order and group."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    merged: dict[tuple, Anomaly] = {}
    for a in found:
        key = a.key
        kept = merged.get(key)
        if kept is None:
            merged[key] = a
            continue
        if rank[a.severity] > rank[kept.severity]:
            a, kept = kept, a
            merged[key] = kept
        kept.details.setdefault("also", []).append(
            {"metric": a.metric, "current": a.current, "baseline": a.baseline, "explanation": a.explanation}
        )
    order = {t: i for i, t in enumerate(TYPES)}
    return sorted(merged.values(), key=lambda a: (-rank[a.severity], order[a.type], a.fingerprint))


def with_thresholds(base: AnomalyThresholds | None = None, **changes: Any) -> AnomalyThresholds:
    """``base`` (default thresholds) with ``changes`` applied; unknown names raise ``TypeError``."""
    return replace(base or AnomalyThresholds(), **changes)
