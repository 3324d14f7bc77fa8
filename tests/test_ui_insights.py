"""The overview, sessions, prompts, anomalies and gate pages through the ASGI test client, on the
demo store (SQLite and PostgreSQL): each figure on a page is checked against the store itself."""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

import pytest
import ui_support
from conftest import sql
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient
from ui_support import HOSTILE_INPUT, HOSTILE_SESSION, DemoStore

from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.demo import Scenario, simulate
from llmobs_callbacks.sinks.schema import ensure_schema, make_engine
from llmobs_callbacks.ui import create_app

sqlite_demo_store = ui_support.sqlite_demo_store
postgres_demo_store = ui_support.postgres_demo_store
demo_store = ui_support.demo_store


@pytest.fixture(scope="module")
def client(demo_store: DemoStore) -> Iterator[TestClient]:
    with TestClient(create_app(demo_store.url)) as c:
        yield c


@pytest.fixture(scope="module")
def store(demo_store: DemoStore) -> Iterator[TraceStore]:
    ts = TraceStore(demo_store.url, read_only=True)
    yield ts
    ts.close()


def requests_per_version(url: str) -> dict[str, int]:
    """Requests per prompt version, straight from the spans table (roots; the version declared
    on the root, as the demo declares it)."""
    rows = sql(
        url,
        "select prompt_version, count(*) from spans where parent_span_id is null "
        "and (internal is null or internal = false) group by prompt_version",
    )
    return {str(v): int(n) for v, n in rows}


def cells(page: str, attribute: str) -> list[str]:
    return re.findall(rf'{attribute}="([^"]*)"', page)


def with_panels(client: TestClient, path: str = "/") -> str:
    """The overview and every panel it loads with htmx after it is shown (the slower ones)."""
    page = client.get(path)
    assert page.status_code == 200
    parts = [page.text]
    for src in re.findall(r'hx-get="([^"]+)"', page.text):
        panel = client.get(html.unescape(src))
        assert panel.status_code == 200 and "<html" not in panel.text, src
        parts.append(panel.text)
    assert len(parts) == 5  # anomalies, branches, tools and retrieval, spend
    return "\n".join(parts)


def one_line_error(page: str) -> str:
    found = re.findall(r'<p class="error-line" role="alert">(.*?)</p>', page, re.S)
    assert len(found) == 1, page[-2000:]
    assert "\n" not in found[0] and "Traceback" not in page
    return html.unescape(found[0])


# -- overview -----------------------------------------------------------------------------------


def test_overview_default_window_shows_an_old_store_with_the_counts_per_version(
    client: TestClient, demo_store: DemoStore
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    text = page.text
    # the store's day is in the past: the default 24 h end at its newest request, and say so
    assert "showing the 24h up to the newest request" in text
    assert demo_store.last_request.strftime("%Y-%m-%d %H:%M") in text
    expected = requests_per_version(demo_store.url)
    rows = re.findall(r'<tr data-version="([^"]+)"><td>[^<]*</td><td class="num" data-requests="(\d+)"', text)
    assert {v: int(n) for v, n in rows} == expected
    assert sum(expected.values()) == demo_store.replay.requests + 5  # the replay and the extras
    kpi = re.search(r'data-kpi="requests">.*?kpi-value">([\d,]+)<', text, re.S)
    assert kpi is not None and int(kpi.group(1).replace(",", "")) == sum(expected.values())
    # the charts' data and the scripts that draw them, from our own static files (CSP: 'self')
    assert 'src="/static/vendor/uPlot.iife.min.js"' in text and 'src="/static/charts.js"' in text
    assert "<script>" not in text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_chart_json_sums_to_the_store_and_shares_sum_to_one(
    client: TestClient, demo_store: DemoStore
) -> None:
    page = client.get("/")
    inline = json.loads(html.unescape(re.search(r'data-charts="([^"]*)"', page.text).group(1)))
    src = html.unescape(re.search(r'data-src="([^"]*)"', page.text).group(1))
    fetched = client.get(src)
    assert fetched.status_code == 200 and fetched.headers["content-type"].startswith("application/json")
    assert fetched.json() == inline  # the endpoint and the page agree on the same window
    charts = inline["charts"]
    expected = requests_per_version(demo_store.url)
    requests = {s["label"]: sum(s["values"]) for s in charts["requests"]["series"]}
    assert requests == expected
    errors = {s["label"]: sum(s["values"]) for s in charts["errors"]["series"]}
    assert errors == {"v1": 0, "v2": len(demo_store.error_trace_ids)}
    (cost,) = sql(
        demo_store.url,
        "select sum(l.cost_usd) from spans l join spans r on r.trace_id = l.trace_id "
        "and r.parent_span_id is null where l.kind = 'llm' and (r.internal is null or r.internal = false)",
    )[0:1]
    assert sum(sum(s["values"]) for s in charts["cost"]["series"]) == pytest.approx(float(cost[0]))
    x = charts["requests"]["x"]
    assert x == sorted(x) and len(set(x)) == len(x) and all(b % inline["step_s"] == 0 for b in x)
    for chart in ("adoption", "models"):
        for i in range(len(x)):
            shares = [s["values"][i] for s in charts[chart]["series"] if s["values"][i] is not None]
            if shares:
                assert sum(shares) == pytest.approx(1.0)
    # p95 latency per version over the window, as TraceStore.summary computes it
    store = TraceStore(demo_store.url, read_only=True)
    try:
        summary = store.summary(by="prompt_version")
    finally:
        store.close()
    table = re.findall(r'<tr data-version="([^"]+)">(.*?)</tr>', page.text, re.S)
    for version, row in table:
        p95_cell = re.findall(r'<td class="num">([^<]*)</td>', row)[2]  # errors, p50, p95
        assert p95_cell == f"{summary.loc[version, 'p95_latency_ms'] / 1000:.2f} s"


def test_branch_shares_sum_to_100_percent_within_each_graph_and_node(
    client: TestClient, demo_store: DemoStore
) -> None:
    text = with_panels(client)
    tables = re.findall(
        r'<table class="list branch" data-graph="([^"]+)" data-node="([^"]+)">(.*?)</figure>', text, re.S
    )
    assert tables
    expected: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for graph, node, to, n in sql(
        demo_store.url,
        "select graph, from_node, to_node, count(*) from branch_decisions group by graph, from_node, to_node",
    ):
        expected[(graph, node)][to] = int(n)
    assert {(g, n) for g, n, _ in tables} == set(expected)
    for graph, node, body in tables:
        shares = [float(s) for s in cells(body, "data-share")]
        assert sum(shares) == pytest.approx(1.0)
        counts = {
            to: int(n) for to, n in re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">(\d+)</td>", body)
        }
        assert counts == expected[(graph, node)]
        # and per time bucket: the routes' shares of each bucket with decisions sum to 1
        chart = json.loads(html.unescape(re.search(r"data-chart-json='([^']*)'", body).group(1)))
        for i in range(len(chart["x"])):
            shares = [s["values"][i] for s in chart["series"] if s["values"][i] is not None]
            assert not shares or sum(shares) == pytest.approx(1.0)
        assert {s["label"] for s in chart["series"]} == set(expected[(graph, node)])


def test_tools_retrieval_and_quality_panels_match_the_store(
    client: TestClient, demo_store: DemoStore
) -> None:
    text = with_panels(client)
    tools = sql(
        demo_store.url,
        "select name, count(*), sum(case when status = 'error' then 1 else 0 end) "
        "from spans where kind = 'tool' group by name",
    )
    for name, calls, failures in tools:
        row = re.search(
            rf'<tr data-tool="{name}"><td>{name}</td><td class="num">(\d+)</td><td class="num">(\d+)</td>',
            text,
        )
        assert row is not None and (int(row.group(1)), int(row.group(2))) == (calls, failures)
    assert sum(int(f) for _, _, f in tools) == len(demo_store.error_trace_ids)
    empty = re.search(
        r'<tr data-retriever="_EmptyRetriever">.*?<td class="num">(\d+)</td><td class="num">(\d+)</td>', text
    )
    assert empty is not None and int(empty.group(1)) == int(empty.group(2)) == 3  # every call found nothing
    scored = re.search(
        r'<tr data-retriever="ScoredRetriever">.*?<td class="num">(\d+)</td><td class="num">(\d+)</td>', text
    )
    assert scored is not None and int(scored.group(2)) == 0
    # quality: 0-1 judge scores and thumbs apart from the 1-5 ratings
    scales = dict(re.findall(r'<table class="list quality" data-scale="([^"]+)">(.*?)</table>', text, re.S))
    assert set(scales) == {"0-1", "1-5"}
    assert 'data-score="helpfulness"' in scales["1-5"] and 'data-score="helpfulness"' not in scales["0-1"]
    assert 'data-score="faithfulness"' in scales["0-1"] and 'data-score="user_feedback"' in scales["0-1"]
    means = dict(
        ((v, n), float(m))
        for v, n, m in sql(
            demo_store.url,
            "select r.prompt_version, s.name, avg(s.value) from scores s join spans r "
            "on r.trace_id = s.trace_id and r.parent_span_id is null where s.superseded_at is null "
            "group by r.prompt_version, s.name",
        )
    )
    for scale in scales.values():
        for name, version, mean in re.findall(
            r'<tr data-score="([^"]+)" data-version="([^"]+)">.*?<td class="num">([\d.]+)</td>', scale, re.S
        ):
            assert float(mean) == pytest.approx(means[(version, name)], abs=5e-4)


def test_spend_per_day_is_the_bill_of_every_priced_call(client: TestClient, demo_store: DemoStore) -> None:
    text = with_panels(client)
    days = re.findall(r"<tr><td>(\d{4}-\d\d-\d\d)</td><td class=\"num\">\$([\d.,]+)</td></tr>", text)
    (total,) = sql(demo_store.url, "select sum(cost_usd) from spans where cost_usd is not null")[0]
    assert [d for d, _ in days] == ["2026-11-02"]  # the demo's day
    assert float(days[0][1]) == pytest.approx(float(total), abs=5e-5)  # shown with 4 decimals


def test_overview_panels_bad_name_or_window_give_one_line(client: TestClient) -> None:
    missing = client.get("/fragments/overview/nope")
    assert missing.status_code == 404
    assert one_line_error(missing.text) == "no overview panel 'nope'; known: branches, tools, spend"
    bad = client.get("/fragments/overview/tools?range=2h")
    assert bad.status_code == 400 and one_line_error(bad.text).startswith("range='2h': expected one of")


def test_custom_range_and_presets(client: TestClient, demo_store: DemoStore) -> None:
    start = demo_store.replay.start
    first_half = client.get(
        "/",
        params={
            "range": "custom",
            "since": start.isoformat(),
            "until": (start + timedelta(hours=3)).isoformat(),
        },
    )
    assert first_half.status_code == 200
    versions = re.findall(
        r'<tr data-version="([^"]+)"><td>[^<]*</td><td class="num" data-requests="(\d+)"', first_half.text
    )
    assert dict(versions) == {"v1": str(demo_store.replay.by_version["v1"])}
    assert "showing the" not in first_half.text  # custom bounds are taken as given
    hour = client.get("/?range=1h")
    assert hour.status_code == 200 and "No requests in the last 1h" in hour.text
    assert 'class="preset active" href="/?range=1h"' in hour.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("range=bogus", "range='bogus': expected one of 1h, 24h, 7d, 30d, custom"),
        ("since=yesterday", "not a time: 'yesterday'"),
        ("since=2026-11-03&until=2026-11-02", "since must be before until"),
    ],
)
def test_overview_bad_parameters_give_one_line(client: TestClient, query: str, message: str) -> None:
    page = client.get("/?" + query)
    assert page.status_code == 400
    assert message in one_line_error(page.text)
    charts = client.get("/api/charts/overview?" + query)
    assert charts.status_code == 400 and message in charts.json()["error"]


def test_mounted_under_a_prefix_links_follow(demo_store: DemoStore) -> None:
    outer = Starlette(routes=[Mount("/llmobs", app=create_app(demo_store.url))])
    with TestClient(outer) as c:
        page = c.get("/llmobs/")
        assert page.status_code == 200
        assert 'href="/llmobs/static/insights.css"' in page.text
        assert 'src="/llmobs/static/charts.js"' in page.text
        assert 'data-src="/llmobs/api/charts/overview?' in page.text
        sessions = c.get("/llmobs/sessions").text
        assert 'href="/llmobs/sessions/s-' in sessions
        turn = c.get(f"/llmobs/sessions/{HOSTILE_SESSION}").text
        assert f'href="/llmobs/traces/{demo_store.hostile_trace_id}"' in turn


def test_with_a_token_every_insights_page_and_fragment_needs_it(demo_store: DemoStore) -> None:
    paths = [
        *("/", "/api/charts/overview", "/fragments/overview/tools", "/fragments/anomalies", "/sessions"),
        *(f"/sessions/{HOSTILE_SESSION}", "/prompts", "/anomalies", "/gate?baseline=v1&candidate=v2"),
    ]
    with TestClient(create_app(demo_store.url, token="s3cret"), follow_redirects=False) as c:
        for path in paths:
            denied = c.get(path)
            assert denied.status_code in (303, 401), path
            if denied.status_code == 303:
                assert denied.headers["location"].startswith("/login?")
            assert c.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200, path
        assert c.get("/fragments/overview/spend", headers={"HX-Request": "true"}).status_code == 401


# -- anomalies ----------------------------------------------------------------------------------


def test_anomalies_page_lists_what_the_store_finds(
    client: TestClient, store: TraceStore, demo_store: DemoStore
) -> None:
    page = client.get("/anomalies")
    assert page.status_code == 200
    now = demo_store.last_request + timedelta(seconds=1)
    expected = store.anomalies(now=now)
    assert expected, "the regression of v2 is an anomaly"
    assert cells(page.text, "data-type") == [a.type for a in expected]
    assert "quality_drop" in cells(page.text, "data-type")
    fragment = client.get("/fragments/anomalies", params={"now": now.isoformat(), "limit": 2})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert cells(fragment.text, "data-type") == [a.type for a in expected[:2]]
    bad = client.get("/anomalies?window=soon")
    assert bad.status_code == 400 and "not a duration: 'soon'" in one_line_error(bad.text)


# -- sessions -----------------------------------------------------------------------------------


def test_sessions_list_counts_turns_and_filters_and_pages(client: TestClient, demo_store: DemoStore) -> None:
    expected = {
        s: int(n)
        for s, n in sql(
            demo_store.url,
            "select session_id, count(*) from spans where parent_span_id is null and session_id is not null "
            "group by session_id",
        )
    }
    seen: dict[str, int] = {}
    page_no = 1
    while True:
        page = client.get(f"/sessions?page={page_no}")
        assert page.status_code == 200
        rows = re.findall(r'<tr data-session="([^"]+)">.*?data-turns="(\d+)"', page.text, re.S)
        seen.update({html.unescape(s): int(n) for s, n in rows})
        if 'rel="next"' not in page.text:
            break
        assert len(rows) == 50
        page_no += 1
    assert page_no == -(-len(expected) // 50) and seen == expected
    user = client.get("/sessions?user=u-extra").text
    assert set(cells(user, "data-session")) == {HOSTILE_SESSION, *(f"s-extra-{i}" for i in range(4))}
    since = demo_store.replay.end.isoformat()  # only the extra requests are after the replay
    assert set(cells(client.get("/sessions", params={"since": since}).text, "data-session")) == set(
        cells(user, "data-session")
    )
    bad = client.get("/sessions?page=0")
    assert bad.status_code == 400 and "page='0'" in one_line_error(bad.text)


def test_a_content_off_store_says_content_was_not_captured(tmp_path_factory: pytest.TempPathFactory) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('content-off') / 'llmobs.db'}"
    scenario = Scenario(
        start=ui_support.DEMO_START, hours=1, requests_per_hour=10, switch_at_hour=0.5, seed=2
    )
    simulate(url, scenario, prometheus_registry=None, capture_content=False)
    (session,) = sql(
        url, "select session_id from spans where parent_span_id is null order by start_time limit 1"
    )[0]
    with TestClient(create_app(url)) as c:
        turn = c.get(f"/sessions/{session}")
        assert turn.status_code == 200
        assert "input not captured" in turn.text and "output not captured" in turn.text
        assert 'class="text"' not in turn.text  # no empty bubble
        prompts = c.get("/prompts").text
        assert prompts.count("template not captured") == 3  # v1 (two templates), v2
        assert 'id="template-diff"' in prompts and 'href="/gate?baseline=v1&amp;candidate=v2"' in prompts


def test_an_empty_store_renders_every_page(tmp_path_factory: pytest.TempPathFactory) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('empty') / 'llmobs.db'}"
    engine = make_engine(url)
    ensure_schema(engine)
    engine.dispose()
    with TestClient(create_app(url)) as c:
        overview = c.get("/")
        assert overview.status_code == 200 and "No requests in this window." in overview.text
        charts = c.get("/api/charts/overview").json()["charts"]
        assert all(sum(sum(v or 0 for v in s["values"]) for s in ch["series"]) == 0 for ch in charts.values())
        for path in (
            "/fragments/overview/branches",
            "/fragments/overview/tools",
            "/fragments/overview/spend",
        ):
            assert c.get(path).status_code == 200
        assert "No anomalies." in c.get("/anomalies").text
        assert "no sessions" in c.get("/sessions").text
        assert "No prompt versions in the store" in c.get("/prompts").text
        gate = c.get("/gate?baseline=v1&candidate=v2")
        assert gate.status_code == 400
        assert one_line_error(gate.text) == "no requests for prompt_version 'v1', 'v2'; known: none"


def test_session_conversation_escapes_stored_text_and_links_each_trace(
    client: TestClient, demo_store: DemoStore
) -> None:
    page = client.get(f"/sessions/{HOSTILE_SESSION}")
    assert page.status_code == 200
    text = page.text
    assert "<script>alert(1)</script>" not in text and "<img src=x" not in text
    assert html.escape(HOSTILE_INPUT, quote=False) in text  # the question, shown as text
    assert f'href="/traces/{demo_store.hostile_trace_id}"' in text
    assert text.count('class="bubble user"') == 1 and text.count('class="bubble assistant') == 1
    assert 'class="feedback" data-value="0.0"' in text  # the thumbs down given to it, with its comment
    # a replayed two-turn session: turns in order with their costs
    two = next(
        s
        for s, n in sql(
            demo_store.url,
            "select session_id, count(*) from spans where parent_span_id "
            "is null group by session_id having count(*) = 2 order by session_id",
        )
    )
    turns = client.get(f"/sessions/{two}").text
    ids = [
        t
        for (t,) in sql(
            demo_store.url,
            "select trace_id from spans where parent_span_id is null and session_id = :s order by start_time",
            s=two,
        )
    ]
    assert cells(turns, "data-trace") == ids
    missing = client.get("/sessions/no-such-session")
    assert missing.status_code == 404 and "no session 'no-such-session'" in one_line_error(missing.text)


# -- prompts and gate ---------------------------------------------------------------------------


def test_prompts_lists_versions_diffs_templates_and_links_the_gate(
    client: TestClient, demo_store: DemoStore
) -> None:
    page = client.get("/prompts")
    assert page.status_code == 200
    text = page.text
    assert 'data-prompt="support"' in text
    counts = dict(re.findall(r'<tr data-version="([^"]+)">.*?data-requests="(\d+)"', text, re.S))
    assert {v: int(n) for v, n in counts.items()} == requests_per_version(demo_store.url)
    # default comparison: the two newest versions, side by side, with the gate one click away
    assert 'id="template-diff"' in text
    assert 'href="/gate?baseline=v1&amp;candidate=v2"' in text
    diff = re.search(r'<table class="diff" id="template-diff">(.*?)</table>', text, re.S).group(1)
    assert "d-replace" in diff and "d-equal" in diff
    assert "You are a support assistant. Answer briefly" in diff and "You are a friendly, thorough" in diff
    same = client.get("/prompts?name=support&a=v2&b=v2").text
    assert "d-replace" not in same and "d-equal" in same
    bad = client.get("/prompts?name=support&a=v1&b=v9")
    assert bad.status_code == 400
    assert one_line_error(bad.text) == "no version 'v9' of prompt 'support'; known: v1, v2"


def test_gate_verdict_equals_the_store_gate(client: TestClient, store: TraceStore) -> None:
    result = store.gate("v1", "v2")
    page = client.get("/gate?baseline=v1&candidate=v2")
    assert page.status_code == 200
    verdict = re.search(r'id="verdict"><b>([^<]+)</b>', page.text).group(1)
    assert verdict == result.verdict == "FAIL"  # v2 regresses by design
    statuses = dict(re.findall(r'data-criterion="([^"]+)" data-status="([^"]+)"', page.text))
    assert statuses == {html.escape(r.criterion): r.status for r in result.rows}
    assert html.escape(result.summary) in page.text
    assert "significantly worse, and not shown within the limit" in page.text


def test_gate_over_a_window_equals_the_store_gate_over_it(
    client: TestClient, store: TraceStore, demo_store: DemoStore
) -> None:
    since = demo_store.replay.start + timedelta(hours=1)
    result = store.gate("v1", "v2", since=since)
    page = client.get("/gate", params={"baseline": "v1", "candidate": "v2", "since": since.isoformat()})
    assert page.status_code == 200
    assert re.search(r'id="verdict"><b>([^<]+)</b>', page.text).group(1) == result.verdict
    assert f"({result.baseline_requests} requests)" in page.text
    assert result.baseline_requests < demo_store.replay.by_version["v1"]  # the window left some out
    bad = client.get("/gate?baseline=v1&candidate=v2&until=tomorrow")
    assert bad.status_code == 400 and one_line_error(bad.text).startswith("not a time: 'tomorrow'")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("baseline=v1&candidate=v9", "no requests for prompt_version 'v9'; known: v1, v2"),
        ("baseline=v1", "give both baseline and candidate (missing candidate); known: v1, v2"),
        ("baseline=%3Cb%3E&candidate=v2", "no requests for prompt_version '<b>'; known: v1, v2"),
    ],
)
def test_gate_bad_versions_give_one_line_listing_the_known(
    client: TestClient, query: str, message: str
) -> None:
    page = client.get("/gate?" + query)
    assert page.status_code == 400
    assert one_line_error(page.text) == message
    assert "<b>'" not in page.text  # the echoed value is escaped
