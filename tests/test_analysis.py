"""TraceStore on stores written by real traced runs (LangGraph + LangChain fakes, simulated time)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import sql
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore
from lc_fakes import ai, chat

from llmobs_callbacks import LLMObs
from llmobs_callbacks.analysis import TraceStore, TraceTree
from llmobs_callbacks.analysis.store import SPAN_COLUMNS
from llmobs_callbacks.cli import main
from llmobs_callbacks.demo import KNOWLEDGE, ScoredRetriever, build_app
from llmobs_callbacks.sinks.tables import ScoreRow

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=timezone.utc)
# (hour offset, prompt version, question, order id): 6 on v1, then 4 on v2
REQUESTS = [
    (0, "v1", "How long do refunds take?", "A10"),
    (1, "v1", "Where is my order?", "A11"),
    (2, "v1", "Where is my order?", "A13"),  # the tool fails: an error trace
    (3, "v1", "I want a manager about a double charge", "A10"),  # human review, no LLM
    (4, "v1", "Can I cancel?", "A10"),
    (5, "v1", "How much is the Pro plan?", "A10"),
    (6, "v2", "How long do refunds take?", "A10"),
    (7, "v2", "Is it under warranty?", "A10"),
    (8, "v2", "I want a manager about a double charge", "A12"),
    (9, "v2", "Where is my order?", "A14"),
]
USAGE = {"v1": (100, 20), "v2": (200, 40)}


class StepClock:
    """Simulated time: every reading advances 3 ms; ``at`` jumps to a moment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ns = int(T0.timestamp() * 1e9)

    def at(self, moment: datetime) -> None:
        with self._lock:
            self.ns = int(moment.timestamp() * 1e9)

    def __call__(self) -> int:
        with self._lock:
            self.ns += 3_000_000
            return self.ns


def build_store(url: str) -> dict[str, str]:
    """Trace REQUESTS through the demo's LangGraph app; add scores; returns trace ids by index."""
    clock = StepClock()
    vectors = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    vectors.add_documents([Document(id=k, page_content=t) for k, t in KNOWLEDGE])
    llms = {
        v: chat(*(ai(f"answer {v} {i}", *USAGE[v]) for i in range(20)), model_name="gpt-4o-mini")
        for v in ("v1", "v2")
    }
    app = build_app(ScoredRetriever(store=vectors, k=2), llms)
    ids: dict[str, str] = {}
    with LLMObs(url, service="analysis-test", clock=clock) as obs:
        handler = obs.langchain_handler()
        for i, (hour, version, question, order) in enumerate(REQUESTS):
            clock.at(T0 + timedelta(hours=hour))
            run_id = uuid.uuid4()
            ids[str(i)] = str(run_id)
            config = {
                "callbacks": [handler],
                "run_id": run_id,
                "metadata": {
                    "prompt_name": "support",
                    "prompt_version": version,
                    "session_id": f"s-{i % 3}",
                    "user_id": f"u-{i % 2}",
                },
            }
            with contextlib.suppress(ValueError):
                app.invoke({"question": question, "version": version, "order_id": order}, config=config)
        assert obs.flush()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ScoreRow.__table__),
            [
                {
                    "id": f"sc-{n}",
                    "trace_id": ids[str(i)],
                    "name": name,
                    "value": value,
                    "source": "judge",
                    "created_at": T0 + timedelta(hours=i, minutes=30),
                }
                for n, (i, name, value) in enumerate(
                    [
                        (0, "faithfulness", 5.0),
                        (0, "faithfulness", 4.0),
                        (1, "faithfulness", 3.0),
                        (6, "faithfulness", 2.0),
                        (6, "user_feedback", 1.0),
                    ]
                )
            ],
        )
    engine.dispose()
    return ids


@pytest.fixture
def store(db_url: str):
    ids = build_store(db_url)
    with TraceStore(db_url) as ts:
        ts.ids = ids  # type: ignore[attr-defined]
        ts.url = db_url  # type: ignore[attr-defined]
        yield ts


def _capture(ts: TraceStore) -> list[str]:
    """The SQL statements ``ts`` runs, through SQLAlchemy or through its ADBC reader."""
    statements: list[str] = []

    @sa.event.listens_for(ts.engine, "before_cursor_execute")
    def _record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    if ts._reader is not None:
        ts._reader.trace = statements.append
    return statements


def test_spans_filters_are_pushed_down_to_sql(store: TraceStore) -> None:
    statements = _capture(store)
    frame = store.spans(kind="llm", prompt_version="v2", since=T0 + timedelta(hours=5, minutes=30))
    (statement,) = statements
    where = statement.split("WHERE", 1)[1]
    assert "spans.kind =" in where and "spans.prompt_version =" in where and "spans.start_time >=" in where
    assert len(frame) == 3  # v2: two answers, one order status (the manager goes to a human)
    assert set(frame["kind"]) == {"llm"} and set(frame["prompt_version"]) == {"v2"}
    assert list(frame.columns)[:3] == ["span_id", "trace_id", "parent_span_id"]
    assert str(frame["start_time"].dt.tz) == "UTC"
    assert frame["start_time"].is_monotonic_increasing
    assert (frame["input_tokens"] == 200).all()
    # every filter, each one a WHERE term; lists become IN
    statements.clear()
    some = store.spans(
        until=T0 + timedelta(hours=2),
        model=["gpt-4o-mini"],
        session_id="s-0",
        user_id="u-0",
        status="ok",
        trace_id=store.ids["0"],
        limit=5,
    )
    for term in ("spans.start_time <", "spans.model IN", "spans.session_id =", "spans.user_id =", "LIMIT"):
        assert term in statements[-1]
    assert len(some) == 1 and some.iloc[0]["trace_id"] == store.ids["0"]
    assert store.spans(status="error")["trace_id"].unique().tolist() == [store.ids["2"]]
    assert len(store.spans(limit=4)) == 4
    assert store.spans(columns=["span_id", "cost_usd"]).columns.tolist() == ["span_id", "cost_usd"]
    with pytest.raises(ValueError, match="unknown"):
        store.spans(columns=["nope"])


def test_time_windows_accept_relative_iso_and_naive(store: TraceStore) -> None:
    naive = store.spans(since=datetime(2025, 3, 3, 14, 0))  # naive means UTC: hours 6..9
    aware = store.spans(since="2025-03-03T15:00:00+01:00")
    assert len(naive) == len(aware) > 0
    assert naive["start_time"].min() >= pd.Timestamp("2025-03-03 14:00", tz="UTC")
    assert store.spans(since="1h").empty  # relative to now: the data is from 2025
    assert len(store.traces(since="36500d")) == len(REQUESTS)


def test_traces_one_row_per_request_with_sql_aggregates(store: TraceStore) -> None:
    statements = _capture(store)
    traces = store.traces()
    assert "GROUP BY" in statements[0]
    assert len(traces) == len(REQUESTS)
    assert traces["trace_id"].tolist() == [store.ids[str(i)] for i in range(len(REQUESTS))]
    assert set(traces["name"]) == {"support_bot"}
    assert traces["prompt_version"].tolist() == [r[1] for r in REQUESTS]
    by_id = traces.set_index("trace_id")
    assert by_id.loc[store.ids["2"], "status"] == "error"
    assert by_id.loc[store.ids["2"], "llm_calls"] == 0  # the tool failed before the LLM
    assert by_id.loc[store.ids["3"], "llm_calls"] == 0 and by_id.loc[store.ids["0"], "llm_calls"] == 1
    assert by_id.loc[store.ids["6"], "input_tokens"] == 200
    assert by_id.loc[store.ids["0"], "model"] == "gpt-4o-mini"
    # totals equal the store's own sums
    ((tin, tout, cost),) = sql(
        store.url, "select sum(input_tokens), sum(output_tokens), sum(cost_usd) from spans where kind = 'llm'"
    )
    assert traces["input_tokens"].sum() == tin == 4 * 100 + 3 * 200 and traces["output_tokens"].sum() == tout
    assert traces["cost_usd"].sum() == pytest.approx(cost)
    # root latency is the root span's
    roots = dict(sql(store.url, "select trace_id, latency_ms from spans where parent_span_id is null"))
    assert by_id["latency_ms"].to_dict() == pytest.approx(roots)
    # scores: mean per name, pivoted
    assert by_id.loc[store.ids["0"], "score_faithfulness"] == pytest.approx(4.5)
    assert by_id.loc[store.ids["6"], "score_user_feedback"] == 1.0
    assert np.isnan(by_id.loc[store.ids["4"], "score_faithfulness"])
    # filters on the trace level, in SQL
    statements.clear()
    v2 = store.traces(prompt_version="v2", status="ok", session_id="s-0")
    assert "coalesce(root.prompt_version" in statements[0]
    assert v2["trace_id"].tolist() == [store.ids["6"], store.ids["9"]]
    assert store.traces(name="nope").empty


def test_summary_matches_numpy_and_store(store: TraceStore) -> None:
    summary = store.summary(by="prompt_version")
    assert summary.index.tolist() == ["v1", "v2"]
    traces = store.traces()
    for version, count in (("v1", 6), ("v2", 4)):
        row = summary.loc[version]
        group = traces[traces["prompt_version"] == version]
        latencies = group["latency_ms"].to_numpy()
        assert row["requests"] == count
        for q in (50, 95, 99):
            assert row[f"p{q}_latency_ms"] == pytest.approx(np.percentile(latencies, q))
        assert row["input_tokens"] == group["input_tokens"].sum()
        assert row["input_tokens_per_request"] == pytest.approx(group["input_tokens"].sum() / count)
        assert row["cost_usd"] == pytest.approx(group["cost_usd"].sum())
        assert row["cost_per_request"] == pytest.approx(group["cost_usd"].sum() / count)
    assert summary.loc["v1", "errors"] == 1 and summary.loc["v1", "error_rate"] == pytest.approx(1 / 6)
    assert summary.loc["v2", "error_rate"] == 0
    # branch shares: v1 went to human review once in 6, v2 once in 4
    assert summary.loc["v1", "branch_human_review"] == pytest.approx(1 / 6)
    assert summary.loc["v2", "branch_human_review"] == pytest.approx(1 / 4)
    assert summary.loc["v1", "branch_order_status"] == pytest.approx(2 / 6)
    # score means per group (over traces with a score)
    assert summary.loc["v1", "score_faithfulness"] == pytest.approx((4.5 + 3.0) / 2)
    assert summary.loc["v2", "score_faithfulness"] == pytest.approx(2.0)
    # the same totals as `llmobs report`
    from llmobs_callbacks.analysis.report import summarize

    for r in summarize(store.engine, by="prompt_version"):
        assert summary.loc[r.group, "input_tokens"] == r.input_tokens
        assert summary.loc[r.group, "cost_usd"] == pytest.approx(r.cost_usd)
        assert summary.loc[r.group, "p95_latency_ms"] == pytest.approx(r.p95_latency_ms)
    by_root = store.summary(by="root")
    assert by_root.index.tolist() == ["support_bot"] and by_root.loc["support_bot", "requests"] == 10
    by_model = store.summary(by="model")
    assert set(by_model.index) == {"gpt-4o-mini", "(none)"}  # "(none)": traces with no LLM call
    assert by_model["requests"].sum() == 10
    with pytest.raises(ValueError):
        store.summary(by="nope")


def test_compare_gives_absolute_and_relative_deltas(store: TraceStore) -> None:
    diff = store.compare("v1", "v2")
    assert list(diff.columns) == ["v1", "v2", "delta", "relative"]
    row = diff.loc["input_tokens_per_request"]
    assert row["v1"] == pytest.approx(400 / 6) and row["v2"] == pytest.approx(600 / 4)
    assert row["delta"] == pytest.approx(600 / 4 - 400 / 6)
    assert row["relative"] == pytest.approx((600 / 4 - 400 / 6) / (400 / 6))
    assert diff.loc["requests", "delta"] == -2
    with pytest.raises(KeyError, match="v9"):
        store.compare("v1", "v9")


def test_cost_series_and_forecast(store: TraceStore) -> None:
    hourly = store.cost(by="model", freq="1h")
    assert list(hourly.columns) == ["gpt-4o-mini"]
    assert str(hourly.index.tz) == "UTC" and hourly.index[0] == pd.Timestamp(T0)
    ((total,),) = sql(store.url, "select sum(cost_usd) from spans where kind = 'llm'")
    assert hourly.to_numpy().sum() == pytest.approx(total)
    by_version = store.cost(by="prompt_version", freq="1D")
    assert by_version.loc[pd.Timestamp("2025-03-03", tz="UTC"), "v2"] == pytest.approx(
        store.traces(prompt_version="v2")["cost_usd"].sum()
    )
    assert store.cost(by=None, freq="1h")["cost_usd"].sum() == pytest.approx(total)
    # forecast at 18:00 on the day: rate over the lookback's data (08:00→18:00) for the rest of March
    now = T0 + timedelta(hours=10)
    forecast = store.forecast_cost(lookback="7d", now=now)
    first = store.spans(kind="llm")["start_time"].min().to_pydatetime()
    rate = total / (now - first).total_seconds()
    remaining = (datetime(2025, 4, 1, tzinfo=timezone.utc) - now).total_seconds()
    assert forecast["spent_usd"] == pytest.approx(total)
    assert forecast["projected_usd"] == pytest.approx(total + rate * remaining)
    assert forecast["rate_usd_per_day"] == pytest.approx(rate * 86400)
    with pytest.raises(ValueError):
        store.forecast_cost(period="year")


def test_forecast_cost_per_day_and_week(store: TraceStore) -> None:
    ((total,),) = sql(store.url, "select sum(cost_usd) from spans where kind = 'llm'")
    first = store.spans(kind="llm")["start_time"].min().to_pydatetime()
    # 2025-03-03 is a Monday: at 18:00 the day and the ISO week both began at 00:00 that day
    now = T0 + timedelta(hours=10)
    rate = total / (now - first).total_seconds()
    day = store.forecast_cost(period="day", now=now)
    assert day["period_start"] == datetime(2025, 3, 3, tzinfo=timezone.utc)
    assert day["period_end"] == datetime(2025, 3, 4, tzinfo=timezone.utc)
    assert day["spent_usd"] == pytest.approx(total)
    assert day["projected_usd"] == pytest.approx(total + rate * 6 * 3600)  # 18:00 → midnight
    week = store.forecast_cost(period="week", lookback="24h", now=now)
    assert week["period_end"] == datetime(2025, 3, 10, tzinfo=timezone.utc)
    assert week["projected_usd"] == pytest.approx(total + rate * (6 * 3600 + 6 * 86400))
    # on Wednesday noon: nothing spent today, the week's spend is Monday's; the 7-day rate runs
    # from the first call to now
    later = datetime(2025, 3, 5, 12, 0, tzinfo=timezone.utc)
    rate = total / (later - first).total_seconds()
    day = store.forecast_cost(period="day", now=later)
    assert day["spent_usd"] == 0.0 and day["projected_usd"] == pytest.approx(rate * 12 * 3600)
    week = store.forecast_cost(period="week", now=later)
    assert week["period_start"] == datetime(2025, 3, 3, tzinfo=timezone.utc)
    assert week["spent_usd"] == pytest.approx(total)
    assert week["projected_usd"] == pytest.approx(total + rate * (12 * 3600 + 4 * 86400))
    assert week["period"] == "week" and week["rate_usd_per_day"] == pytest.approx(rate * 86400)
    # a lookback window with no spend: the projection is what was spent
    assert store.forecast_cost(period="day", lookback="1h", now=later)["projected_usd"] == 0.0


def test_spans_content_only_on_request(store: TraceStore) -> None:
    default = store.spans(kind="llm")
    assert "input" not in default.columns and "output" not in default.columns
    assert "attributes" in default.columns and "error_message" in default.columns
    full = store.spans(kind="llm", content=True)
    assert list(full.columns) == SPAN_COLUMNS and len(full.columns) == len(default.columns) + 2
    stored = dict(sql(store.url, "select span_id, output from spans where kind = 'llm'"))
    assert full.set_index("span_id")["output"].to_dict() == stored
    assert "answer v1 0" in stored[full.iloc[0]["span_id"]]
    only = store.spans(kind="llm", columns=["span_id", "input"])
    assert only.columns.tolist() == ["span_id", "input"]
    # a trace tree keeps every column, content included
    assert all("output" in node.span for node in store.trace(store.ids["0"]).nodes)


def test_branches_scores_and_documents(store: TraceStore) -> None:
    statements = _capture(store)
    mix = store.branches(graph="support_bot")
    assert "GROUP BY" in statements[0] and "branch_decisions.graph =" in statements[0]
    counts = dict(zip(mix["to_node"], mix["count"], strict=True))
    assert counts == {"answer": 5, "human_review": 2, "order_status": 3}
    assert mix["share"].sum() == pytest.approx(1.0)
    daily = store.branches(freq="1D")
    assert daily.loc[pd.Timestamp("2025-03-03", tz="UTC"), "human_review"] == pytest.approx(2 / 10)
    hourly = store.branches(freq="1h")
    assert len(hourly) == 10 and hourly.sum(axis=1).to_numpy() == pytest.approx([1.0] * 10)
    assert hourly.loc[pd.Timestamp(T0) + pd.Timedelta(hours=3), "human_review"] == 1.0
    assert store.branches(graph="other").empty

    scores = store.scores(name="faithfulness")
    assert len(scores) == 4 and str(scores["created_at"].dt.tz) == "UTC"
    assert store.scores(trace_id=store.ids["6"])["name"].tolist() == ["faithfulness", "user_feedback"]
    docs = store.documents(store.ids["0"])
    assert docs["rank"].tolist() == [0, 1] and docs["score"].notna().all()
    assert store.documents("nope").empty


def test_trace_tree_text_and_html(store: TraceStore) -> None:
    tree = store.trace(store.ids["2"])  # the failing order lookup
    assert isinstance(tree, TraceTree)
    text = str(tree)
    lines = text.splitlines()
    assert lines[0] == f"trace {store.ids['2']}"
    assert lines[1].startswith("chain support_bot") and "ERROR ValueError: order A13 not found" in lines[1]
    tool = next(line for line in lines if "tool lookup_order" in line)
    assert tool.startswith("    tool lookup_order") and "ERROR ValueError" in tool  # depth 2
    assert any(line.startswith("  graph_node order_status") for line in lines)
    assert repr(tree) == text

    ok = store.trace(store.ids["0"])
    text = str(ok)
    assert "scores: faithfulness=5, faithfulness=4" in text
    llm = next(line for line in text.splitlines() if line.lstrip().startswith("llm "))
    assert "tokens 100→20" in llm and "$" in llm and "gpt-4o-mini" in llm
    assert "retriever ScoredRetriever" in text and "2 docs" in text
    html = ok._repr_html_()
    for node in ok.nodes:
        assert f"data-depth='{node.depth}'" in html and node.name.split("<")[0] in html
    assert html.index("support_bot") < html.index("support_rag") < html.index("StrOutputParser")
    assert "llmobs-doc" in html and "faithfulness=5" in html
    assert "error" in store.trace(store.ids["2"])._repr_html_()
    with pytest.raises(KeyError, match="no trace"):
        store.trace("missing")


def test_plots_return_figures(store: TraceStore) -> None:
    from matplotlib.figure import Figure

    for fig in (
        store.plot.latency(freq="2h"),
        store.plot.cost(by="prompt_version", freq="2h"),
        store.plot.tokens_by_version(),
    ):
        assert isinstance(fig, Figure) and fig.axes and fig.axes[0].get_title()
        fig.savefig(__import__("io").BytesIO(), format="png")
    labels = [t.get_text() for t in store.plot.tokens_by_version().axes[0].get_xticklabels()]
    assert labels == ["v1", "v2"]


def test_cli_trace_prints_the_tree(store: TraceStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", store.ids["2"], "--database-url", store.url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"trace {store.ids['2']}  ")
    assert out.splitlines()[1].startswith("└── chain support_bot  ")
    assert main(["trace", "missing", "--database-url", store.url]) == 1
    assert "no trace 'missing'" in capsys.readouterr().err


def test_empty_store(sqlite_url: str) -> None:
    LLMObs(sqlite_url).shutdown()
    with TraceStore(sqlite_url) as ts:
        assert ts.spans().empty and ts.traces().empty and ts.summary().empty
        assert ts.cost().empty and ts.branches().empty and ts.branches(freq="1h").empty
        assert ts.forecast_cost()["projected_usd"] == 0.0
