# ruff: noqa: F811 - the shared fixtures are imported from ui_support and used as arguments
"""The traces pages in a real browser (Playwright driving Debian's Chromium) over the live UI:
filter by prompt version, search a text, open a trace, expand a span and read its tokens and
cost (the store's numbers), send feedback and see it on the trace, hostile text stays inert.
Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from ui_support import (  # noqa: F401
    HOSTILE_INPUT,
    DemoStore,
    browser,
    live_server,
    page,
    screenshot,
    sqlite_demo_store,
)

from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.ui.data import money, tokens

pytest.importorskip("playwright")


def query(url: str, statement: str, **params: Any) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(statement), params).mappings()]
    finally:
        engine.dispose()


def column(page: Any, index: int) -> list[str]:
    return page.locator(f"#trace-table tbody tr td:nth-child({index})").all_inner_texts()


def test_filter_by_prompt_version_and_search(
    page: Any, live_server: str, sqlite_demo_store: DemoStore
) -> None:
    page.goto(f"{live_server}/traces")
    assert set(column(page, 3)) == {"v2"}  # the newest 50 are all v2
    page.select_option("select[name=prompt_version]", "v1")
    page.wait_for_url(re.compile(r"/traces\?prompt_version=v1$"))  # the filters in use, in the URL
    page.wait_for_function(
        "() => [...document.querySelectorAll('#trace-table tbody tr td:nth-child(3)')]"
        ".every(td => td.textContent.trim() === 'v1')"
    )
    versions = column(page, 3)
    expected = query(
        sqlite_demo_store.url,
        "select count(*) as n from spans where parent_span_id is null and prompt_version = 'v1'"
        " and (internal is null or internal = 0)",
    )[0]["n"]
    assert set(versions) == {"v1"} and len(versions) == min(expected, 50)
    screenshot(page, "traces-filtered-v1")
    page.fill("input[name=search]", "warranty")
    page.press("input[name=search]", "Enter")
    page.wait_for_url(re.compile(r"/traces\?prompt_version=v1&search=warranty$"))
    with TraceStore(sqlite_demo_store.url) as ts:
        expected_ids = list(ts.find_traces(prompt_version="v1", search="warranty", limit=50).trace_id)
    assert expected_ids
    page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('#trace-table tbody tr')]"
        ".map(tr => tr.dataset.traceId)) === JSON.stringify(ids)",
        arg=expected_ids,
    )
    previews = column(page, 11)
    assert any("warranty" in p.lower() for p in previews)
    assert set(column(page, 3)) == {"v1"}  # the version filter stays
    screenshot(page, "traces-search")
    # the URL is the state: reloading it shows the same list
    page.reload()
    assert column(page, 11) == previews
    assert page.js_errors == []


def test_open_a_trace_expand_a_span_and_read_its_numbers(
    page: Any, live_server: str, sqlite_demo_store: DemoStore
) -> None:
    page.goto(f"{live_server}/traces?search=refund")
    page.locator("#trace-table tbody tr").first.locator("td a").first.click()
    page.wait_for_url(re.compile(r"/traces/[0-9a-f-]{36}$"))
    trace_id = page.url.rsplit("/", 1)[1]
    llm = query(
        sqlite_demo_store.url,
        "select span_id, input_tokens, output_tokens, cost_usd from spans"
        " where trace_id = :t and kind = 'llm'",
        t=trace_id,
    )[0]
    row = page.locator(f"#span-{llm['span_id']}")
    assert row.get_attribute("open") is None
    assert not row.locator(".span-details").is_visible()
    row.locator(":scope > summary").click()
    assert row.get_attribute("open") is not None and row.locator(".span-details").is_visible()
    assert row.locator(".tok-in").inner_text() == tokens(llm["input_tokens"])
    assert row.locator(".tok-out").inner_text() == tokens(llm["output_tokens"])
    assert row.locator(".span-cost-detail").inner_text().startswith(money(llm["cost_usd"], 8))
    assert row.locator(":scope > summary .span-cost").inner_text() == money(llm["cost_usd"])
    assert row.locator(".message .role").first.is_visible()  # chat input shown as messages
    header = page.locator("dd.tokens")
    assert header.get_attribute("data-input") == str(llm["input_tokens"])
    screenshot(page, "trace-span-expanded")
    assert page.js_errors == []


def test_feedback_shows_on_the_trace(page: Any, live_server: str, sqlite_demo_store: DemoStore) -> None:
    trace_id = sqlite_demo_store.error_trace_ids[1]
    page.goto(f"{live_server}/traces/{trace_id}")
    before = page.locator("#scores tr.score").count()
    page.fill("#feedback-form input[name=comment]", "browser says: the tool failed")
    page.click("#feedback-form button[aria-label='thumbs down']")
    page.wait_for_selector("#scores td:text('browser says: the tool failed')")
    assert page.locator("#scores tr.score").count() == before + 1
    assert "feedback stored" in page.inner_text(".feedback-result")
    stored = query(
        sqlite_demo_store.url,
        "select value, source from scores where trace_id = :t and comment = 'browser says: the tool failed'",
        t=trace_id,
    )
    assert stored == [{"value": 0.0, "source": "user"}]
    screenshot(page, "trace-feedback")
    assert page.js_errors == []


def test_hostile_input_renders_inert(page: Any, live_server: str, sqlite_demo_store: DemoStore) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{live_server}/traces?session=s-hostile")
    assert page.locator("#trace-table td.preview").first.inner_text().startswith("<script>alert(1)</script>")
    page.goto(f"{live_server}/traces/{sqlite_demo_store.hostile_trace_id}")
    for details in page.locator("details.span-row").all():
        details.locator(":scope > summary").click()
    page.wait_for_timeout(300)  # time for anything that would run to run
    text = page.inner_text("main")
    assert "<script>alert(1)</script>" in text and "<img src=x onerror=alert(2)>" in text
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    assert dialogs == [] and page.js_errors == []
    screenshot(page, "trace-hostile")
    assert HOSTILE_INPUT in text.replace("\n", "")
