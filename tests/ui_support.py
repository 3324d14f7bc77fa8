"""Shared fixtures of the web UI tests: a demo store (SQLite and PostgreSQL), a live server and a
real browser.

The demo store is the demo's case study, small: six simulated hours (prompt v1, then v2 from hour
3, which regresses), sessions, thumbs feedback, LangGraph branches, a tool, retrieval, a
LlamaIndex drafter; then a few extra requests through the same app and handler: a failing tool
(an error), an empty retrieval, a hostile input (``<script>`` / ``<img onerror>``), plus judge
scores on two scales (``faithfulness`` 0-1 and ``helpfulness`` 1-5). Its day is in the past
(``DEMO_START``), so pages must pick a range that shows data for an old store.

Use in a test module (assigned, not imported by name: a fixture's name as a test parameter
would shadow an import)::

    import ui_support

    sqlite_demo_store = ui_support.sqlite_demo_store
    postgres_demo_store = ui_support.postgres_demo_store
    demo_store = ui_support.demo_store  # both stores; or only sqlite_demo_store
    browser, page = ui_support.browser, ui_support.page

Fixtures are module-scoped: a store is built once per module (a few seconds).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import _PG_SKIP_REASON, _fresh_postgres_url, drop_postgres_schema
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from llmobs_callbacks import LLMObs
from llmobs_callbacks.demo import (
    PROMPTS,
    DemoChatModel,
    ReplayResult,
    Scenario,
    SimulatedClock,
    _answers,
    build_app,
    simulate,
)
from llmobs_callbacks.sinks.tables import ScoreRow

DEMO_START = datetime(2026, 11, 2, 0, 0, tzinfo=timezone.utc)
DEMO_SCENARIO = Scenario(
    start=DEMO_START, hours=6, requests_per_hour=20, switch_at_hour=3, v2_regresses=True, seed=5
)
HOSTILE_INPUT = "<script>alert(1)</script><img src=x onerror=alert(2)>"
HOSTILE_SESSION = "s-hostile"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"


@dataclass
class DemoStore:
    """A built demo store: its URL, the replay's result and what was added after it."""

    url: str
    dialect: str  # "sqlite" or "postgresql"
    replay: ReplayResult
    error_trace_ids: list[str]  # requests whose tool failed (status error)
    empty_retrieval_trace_ids: list[str]  # requests whose retriever returned nothing
    hostile_trace_id: str  # a request whose question is HOSTILE_INPUT (session HOSTILE_SESSION)
    last_request: datetime  # start of the newest request

    @property
    def versions(self) -> list[str]:
        return sorted(self.replay.by_version)


class _EmptyRetriever(BaseRetriever):
    """A retriever that finds nothing (the store's retrieval-empty case)."""

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return []


def _extra_requests(url: str, replay: ReplayResult) -> tuple[list[str], list[str], str, datetime]:
    """After the replay: failing tools, empty retrievals and a hostile input, through the demo's
    app and the real handler, on v2 (a regression's errors land on the candidate)."""
    clock = SimulatedClock(replay.end + timedelta(minutes=1))
    llms = {
        v: DemoChatModel(messages=_answers(random.Random(i), v), streaming=True)
        for i, v in enumerate(PROMPTS)
    }
    app = build_app(_EmptyRetriever(), llms)
    errors: list[str] = []
    empty: list[str] = []
    hostile = ""
    requests = [
        ("errors", "Where is my order?", "A113"),  # lookup_order fails for ids ending in 13
        ("errors", "Where is my order?", "A213"),
        ("empty", "How much is the Pro plan?", "A100"),
        ("empty", "Can I cancel my subscription?", "A101"),
        ("hostile", HOSTILE_INPUT, "A102"),
    ]
    with LLMObs(
        url, clock=clock, service="demo-support-bot", environment="demo", prometheus_registry=None
    ) as obs:
        handler = obs.langchain_handler()
        for i, (what, question, order_id) in enumerate(requests):
            clock.advance(60)
            run_id = uuid.uuid4()
            session = HOSTILE_SESSION if what == "hostile" else f"s-extra-{i}"
            config = {
                "callbacks": [handler],
                "run_id": run_id,
                "metadata": {
                    "prompt_name": "support",
                    "prompt_version": "v2",
                    "session_id": session,
                    "user_id": "u-extra",
                },
            }
            with contextlib.suppress(ValueError):
                app.invoke(
                    {"question": question, "version": "v2", "order_id": order_id, "confidence": 0.9}, config
                )
            {"errors": errors, "empty": empty}.get(what, []).append(str(run_id))
            if what == "hostile":
                hostile = str(run_id)
                obs.feedback(run_id, score=0.0, comment=HOSTILE_INPUT, user_id="u-extra")
        if not obs.flush(timeout=60.0):
            raise RuntimeError(f"the extra requests were not all stored: {obs.stats()}")
    return errors, empty, hostile, clock.now


def _judge_scores(url: str) -> None:
    """Judge scores on two scales for every other request (as the judge stores them:
    source 'judge', on the root span): faithfulness 0-1 (v2 a little lower), helpfulness 1-5."""
    rng = random.Random(17)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            roots = conn.execute(
                sa.text(
                    "select trace_id, span_id, prompt_version, start_time from spans "
                    "where parent_span_id is null and (internal is null or internal = false) "
                    "order by start_time"
                )
            ).all()
            rows = []
            for i, (trace_id, span_id, version, start) in enumerate(roots):
                if i % 2:
                    continue
                created = datetime.fromisoformat(str(start)) if isinstance(start, str) else start
                created = (created if created.tzinfo else created.replace(tzinfo=timezone.utc)) + timedelta(
                    seconds=30
                )
                drop = 0.15 if version == "v2" else 0.0
                for name, value in (
                    ("faithfulness", min(1.0, max(0.0, rng.gauss(0.85 - drop, 0.08)))),
                    ("helpfulness", float(min(5, max(1, round(rng.gauss(4.2 - 4 * drop, 0.7)))))),
                ):
                    rows.append(
                        {
                            "id": uuid.uuid4().hex,
                            "trace_id": trace_id,
                            "span_id": span_id,
                            "name": name,
                            "value": value,
                            "label": None,
                            "source": "judge",
                            "comment": f"judged {name}",
                            "judge_model": "gpt-4o-mini",
                            "cost_usd": 0.0001,
                            "created_at": created,
                        }
                    )
            conn.execute(sa.insert(ScoreRow.__table__), rows)
    finally:
        engine.dispose()


def build_demo_store(url: str, dialect: str) -> DemoStore:
    """Replay DEMO_SCENARIO into ``url`` and add the extra requests and judge scores."""
    replay = simulate(url, DEMO_SCENARIO, prometheus_registry=None)
    errors, empty, hostile, _ = _extra_requests(url, replay)
    _judge_scores(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            last = conn.execute(
                sa.text("select max(start_time) from spans where parent_span_id is null")
            ).scalar()
    finally:
        engine.dispose()
    last = datetime.fromisoformat(str(last)) if not isinstance(last, datetime) else last
    last = last if last.tzinfo else last.replace(tzinfo=timezone.utc)
    return DemoStore(url, dialect, replay, errors, empty, hostile, last)


def _postgres_url_or_skip() -> str:
    if _PG_SKIP_REASON:
        if os.environ.get("LLMOBS_REQUIRE_POSTGRES"):
            pytest.fail(_PG_SKIP_REASON)
        pytest.skip(_PG_SKIP_REASON)
    return _fresh_postgres_url()


@pytest.fixture(scope="module")
def sqlite_demo_store(tmp_path_factory: pytest.TempPathFactory) -> DemoStore:
    path = tmp_path_factory.mktemp("ui-demo") / "llmobs.db"
    return build_demo_store(f"sqlite:///{path}", "sqlite")


@pytest.fixture(scope="module")
def postgres_demo_store() -> Iterator[DemoStore]:
    url = _postgres_url_or_skip()
    try:
        yield build_demo_store(url, "postgresql")
    finally:
        drop_postgres_schema(url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def demo_store(request: pytest.FixtureRequest) -> DemoStore:
    """The demo store on SQLite, then on PostgreSQL (built once per module each)."""
    name = "sqlite_demo_store" if request.param == "sqlite" else "postgres_demo_store"
    return request.getfixturevalue(name)


# -- a live server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(app: Any, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port in a daemon thread; yields its
    base URL ("http://127.0.0.1:PORT") and stops it on exit."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="auto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"ui-server-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the UI server did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


@contextlib.contextmanager
def live_app(url: str, token: str | None = None) -> Iterator[str]:
    """``create_app(url, token=token)`` served live; yields the base URL."""
    from llmobs_callbacks.ui import create_app

    with serve_in_thread(create_app(url, token=token)) as base:
        yield base


@pytest.fixture(scope="module")
def live_server(sqlite_demo_store: DemoStore) -> Iterator[str]:
    """The UI over the SQLite demo store, served live without a token; its base URL."""
    with live_app(sqlite_demo_store.url) as base:
        yield base


# -- a real browser -----------------------------------------------------------------------------


def browser_missing() -> str | None:
    """None when Playwright and Chromium are usable, else why not."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc})"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("LLMOBS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"LLMOBS_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's, via Playwright), one per module."""
    reason = browser_missing()
    if reason:
        _skip_or_fail(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        try:
            instance = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - any launch failure is "no browser here"
            _skip_or_fail(f"Chromium at {CHROMIUM} did not start: {type(exc).__name__}: {exc}")
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (own context: no cookies shared between tests) that fails the test on a
    JavaScript error or a CSP violation reported in the console."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.js_errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda exc: pg.js_errors.append(str(exc)))  # type: ignore[attr-defined]
    pg.on(
        "console",
        lambda msg: (
            pg.js_errors.append(msg.text)  # type: ignore[attr-defined]
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    try:
        yield pg
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as test-artifacts/ui/<name>.png; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
