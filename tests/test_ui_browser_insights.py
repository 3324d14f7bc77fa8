"""The overview, sessions and prompt pages in a real browser (Playwright driving Debian's
Chromium) over the SQLite demo store served live: charts drawn, the range changed, a session
opened, two prompt versions compared and gated. Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import ui_support
from conftest import sql
from ui_support import HOSTILE_SESSION, DemoStore, screenshot

from llmobs_callbacks.analysis import TraceStore

sqlite_demo_store = ui_support.sqlite_demo_store
live_server = ui_support.live_server
browser, page = ui_support.browser, ui_support.page

# Per canvas: how many pixels are not (almost) white; a drawn chart has its lines and axes.
INK = """
() => Array.from(document.querySelectorAll('#charts canvas')).map(c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 0; i < d.length; i += 4)
    if (d[i + 3] > 0 && (d[i] < 200 || d[i + 1] < 200 || d[i + 2] < 200)) ink++;
  return ink;
})
"""


def _charts_ready(pg: Any) -> None:
    pg.wait_for_selector("#charts[data-ready='1']", timeout=10_000)


def test_overview_draws_every_chart_and_the_range_picker_changes_the_window(
    page: Any, live_server: str, sqlite_demo_store: DemoStore
) -> None:
    page.goto(live_server + "/")
    _charts_ready(page)
    boxes = page.locator(".chart[data-chart]")
    assert boxes.count() == 8
    assert page.locator("#charts .chart[data-drawn='1']").count() == 8  # every chart has data in the window
    ink = page.evaluate(INK)
    assert len(ink) == 8 and all(n > 500 for n in ink), ink
    for panel in (
        "#anomalies table.anomalies",
        "#panel-branches table.branch",
        "#tools-table",
        "#spend-table",
    ):
        page.wait_for_selector(panel, timeout=15_000)  # the htmx fragments arrived
    assert "quality_drop" in page.locator("#anomalies").inner_text()
    # the branch mix over time arrives in its fragment and is drawn there
    page.wait_for_selector("#panel-branches .chart[data-drawn='1'] canvas", timeout=10_000)
    assert "showing the 24h up to the newest request" in page.locator("#window-note").inner_text()
    screenshot(page, "insights-overview")
    # 1 h: the last hour of the store (the idle store's note), still drawn; fewer requests
    page.click("a.preset[data-range='1h']")
    page.wait_for_url("**/?range=1h")
    _charts_ready(page)
    assert "No requests in the last 1h" in page.locator("#window-note").inner_text()
    hour_requests = int(page.locator("[data-kpi='requests'] .kpi-value").inner_text().replace(",", ""))
    (expected,) = sql(
        sqlite_demo_store.url,
        "select count(*) from spans where parent_span_id is null and start_time >= :since",
        since=str(sqlite_demo_store.last_request.replace(tzinfo=None) - timedelta(hours=1)),
    )[0]
    assert 0 < hour_requests <= expected + 1
    assert min(page.evaluate(INK)) > 0
    # a custom window through the form: the first simulated hour only (v1)
    start = sqlite_demo_store.replay.start
    page.fill("input[name=since]", start.strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=until]", (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.click("form.range-picker button[type=submit]")
    page.wait_for_url("**range=custom**")
    _charts_ready(page)
    assert page.locator("#latency-table tr[data-version]").all_inner_texts()[0].startswith("v1")
    assert page.locator("#latency-table tr[data-version]").count() == 1
    screenshot(page, "insights-overview-custom")
    assert page.js_errors == []


def test_open_a_session_from_the_list(page: Any, live_server: str, sqlite_demo_store: DemoStore) -> None:
    page.goto(live_server + "/sessions?user=u-extra")
    screenshot(page, "insights-sessions")
    page.click(f"a[href='/sessions/{HOSTILE_SESSION}']")
    page.wait_for_url(f"**/sessions/{HOSTILE_SESSION}")
    question = page.locator(".bubble.user .text").inner_text()
    assert question == ui_support.HOSTILE_INPUT  # shown as text, never run
    assert page.evaluate("() => document.querySelectorAll('main img, main script').length") == 0
    assert page.locator(".bubble.assistant .text").count() == 1
    assert "👎" in page.locator(".feedback").inner_text()
    screenshot(page, "insights-session")
    page.click(".turn-meta a:has-text('trace')")
    page.wait_for_url(f"**/traces/{sqlite_demo_store.hostile_trace_id}")
    assert page.js_errors == []


def test_compare_two_prompt_versions_and_gate_them(
    page: Any, live_server: str, sqlite_demo_store: DemoStore
) -> None:
    page.goto(live_server + "/prompts")
    page.select_option("select[name=a]", "v1")
    page.select_option("select[name=b]", "v2")
    page.click("#compare-form button[type=submit]")
    page.wait_for_url("**/prompts?name=support&a=v1&b=v2")
    diff = page.locator("#template-diff")
    changed = diff.locator("tr.d-replace td.r").all_inner_texts()
    assert any("You are a friendly, thorough support assistant" in t for t in changed), changed
    screenshot(page, "insights-prompts")
    page.click("#gate-link")
    page.wait_for_url("**/gate?baseline=v1&candidate=v2")
    store = TraceStore(sqlite_demo_store.url, read_only=True)
    try:
        expected = store.gate("v1", "v2").verdict
    finally:
        store.close()
    assert page.locator("#verdict").inner_text() == expected
    assert page.locator("#gate-table tr[data-criterion]").count() >= 5
    screenshot(page, "insights-gate")
    page.goto(live_server + "/anomalies")
    assert page.locator("table.anomalies tr[data-type]").count() > 0
    screenshot(page, "insights-anomalies")
    assert page.js_errors == []
