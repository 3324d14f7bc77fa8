# ruff: noqa: F811 - the shared fixtures are imported from ui_support and used as arguments
"""The web UI through Starlette's ASGI test client, on the demo store (SQLite and PostgreSQL):
the trace list's filters, search, sort and paging; a trace as a tree with the store's exact
tokens and cost; prefixes and 404s; the summary; feedback (201/202/422) and the signed
per-trace endpoint; the token (bearer, cookie login, 401/redirect, CSRF); escaping of hostile
text; read-only serving; mounting under a prefix; the ``llmobs ui`` command's errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("pandas")

import sqlalchemy as sa
from langchain_core.runnables import RunnableLambda
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient
from ui_support import (  # noqa: F401
    DEMO_START,
    HOSTILE_INPUT,
    HOSTILE_SESSION,
    DemoStore,
    demo_store,
    free_port,
    postgres_demo_store,
    sqlite_demo_store,
)

from llmobs_callbacks import LLMObs
from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.analysis.queries import (
    TraceFilter,
    request_query,
    requests_query,
    trace_list_query,
    trace_page_query,
)
from llmobs_callbacks.cli import main
from llmobs_callbacks.sinks.schema import StoreNotFoundError
from llmobs_callbacks.ui import create_app, feedback_app, serve, sign_trace
from llmobs_callbacks.ui.data import money


@pytest.fixture(scope="module")
def client(demo_store: DemoStore) -> Iterator[TestClient]:
    with TestClient(create_app(demo_store.url)) as c:
        yield c


def rows(url: str, statement: str, **params: object) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(statement), params).mappings()]
    finally:
        engine.dispose()


def items(client: TestClient, **params: object) -> list[dict]:
    response = client.get("/api/traces", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_page"] is None
    return body["items"]


# -- the list ----------------------------------------------------------------------------------


def test_filters_search_and_sort_select_what_the_store_holds(
    client: TestClient, demo_store: DemoStore
) -> None:
    everything = items(client)
    with TraceStore(demo_store.url) as ts:
        expected = ts.find_traces(limit=None)
        assert [r["trace_id"] for r in everything] == list(expected["trace_id"])
        for version in demo_store.versions:
            got = items(client, prompt_version=version)
            assert got and {r["prompt_version"] for r in got} == {version}
            assert [r["trace_id"] for r in got] == list(
                ts.find_traces(prompt_version=version, limit=None).trace_id
            )
        found = items(client, search="WARRANTY")  # case-insensitive
        assert found and [r["trace_id"] for r in found] == list(
            ts.find_traces(search="warranty", limit=None).trace_id
        )
    # newest first, with the request's columns as the store defines them
    starts = [r["start_time"] for r in everything]
    assert starts == sorted(starts, reverse=True) and starts[0].endswith("Z")
    assert {r["trace_id"] for r in items(client, status="error")} == set(demo_store.error_trace_ids)
    assert [r["trace_id"] for r in items(client, session=HOSTILE_SESSION)] == [demo_store.hostile_trace_id]
    assert len(items(client, user="u-extra")) == 5
    assert len(items(client, model="gpt-4o-mini")) == len(
        [r for r in everything if r["model"] == "gpt-4o-mini"]
    )
    cut = (DEMO_START + timedelta(hours=3)).isoformat()
    late = items(client, since=cut)
    assert late and all(r["start_time"] >= cut[:19] for r in late) and len(late) < len(everything)
    early = items(client, until=cut)
    assert len(early) + len(late) == len(everything)
    by_latency = [r["latency_ms"] for r in items(client, sort="latency")]
    assert by_latency == sorted(by_latency, reverse=True)
    by_cost = [r["cost_usd"] for r in items(client, sort="cost", order="asc")]
    priced = [c for c in by_cost if c is not None]
    assert priced == sorted(priced) and by_cost[: len(priced)] == priced  # unpriced (errors) last
    # the page's rows are input previews too, not only numbers
    assert any("warranty" in r["input_preview"].lower() for r in found)


def test_the_per_page_query_gives_the_rows_of_the_aggregate_one(demo_store: DemoStore) -> None:
    engine = sa.create_engine(demo_store.url)
    filters = [
        TraceFilter(),
        TraceFilter(prompt_version="v1"),
        TraceFilter(status="error"),
        TraceFilter(search="refund", since=DEMO_START + timedelta(hours=2)),
        TraceFilter(min_latency_ms=2000.0, model="gpt-4o-mini"),
        TraceFilter(include_internal=True),
    ]
    try:
        with engine.connect() as conn:
            for where in filters:
                for sort, descending in (("time", True), ("time", False), ("latency", True)):
                    for offset in (0, 7):
                        fast = conn.execute(
                            trace_page_query(where, sort=sort, descending=descending, limit=13, offset=offset)
                        ).all()
                        full = conn.execute(
                            trace_list_query(where, sort=sort, descending=descending, limit=13, offset=offset)
                        ).all()
                        assert fast == full, (where, sort, descending, offset)
                        assert fast or offset, where
            ids = [r[0] for r in conn.execute(sa.text("select distinct trace_id from spans"))]
            for trace_id in ids[::7]:  # internal (judge) traces included: one trace's request row
                one = conn.execute(request_query(trace_id)).all()
                assert one == conn.execute(requests_query(trace_id=trace_id, include_internal=True)).all()
    finally:
        engine.dispose()


def test_paging_fetches_one_more_row_instead_of_counting(client: TestClient) -> None:
    everything = items(client)
    first = client.get("/api/traces", params={"limit": 50}).json()
    second = client.get("/api/traces", params={"limit": 50, "page": 2}).json()
    third = client.get("/api/traces", params={"limit": 50, "page": 3}).json()
    assert (first["next_page"], second["previous_page"], second["next_page"]) == (2, 1, 3)
    got = first["items"] + second["items"] + third["items"]
    assert [r["trace_id"] for r in got] == [r["trace_id"] for r in everything]
    assert third["next_page"] is None and len(third["items"]) == len(everything) - 100
    # small pages: the newest hour holds them (the first window), deeper ones widen it
    ids = [r["trace_id"] for r in everything]
    for limit, page in ((3, 1), (3, 5), (7, 3), (7, 17), (40, 3)):
        body = client.get("/api/traces", params={"limit": limit, "page": page}).json()
        assert [r["trace_id"] for r in body["items"]] == ids[(page - 1) * limit : page * limit], (limit, page)
        assert body["next_page"] == (page + 1 if page * limit < len(ids) else None)
    html = client.get("/traces").text
    assert html.count('<tr data-trace-id="') == 50 and "page=2" in html and "next →" in html
    html = client.get("/traces", params={"page": 3}).text
    assert html.count('<tr data-trace-id="') == len(everything) - 100 and "next →" not in html


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "not a time: 'yesterday'"),
        ({"page": "-1"}, "page=-1: expected 1 to"),
        ({"page": "two"}, "page='two': expected a whole number"),
        ({"sort": "name"}, "sort='name': expected one of time, latency, cost, tokens"),
        ({"status": "fine"}, "status='fine': expected ok or error"),
        ({"since": "2026-11-02T05:00", "until": "2026-11-02T04:00"}, "since must be before until"),
    ],
)
def test_bad_parameters_are_one_line_never_a_traceback(
    client: TestClient, params: dict, message: str
) -> None:
    api = client.get("/api/traces", params=params)
    assert api.status_code == 400 and message in api.json()["error"]
    page = client.get("/traces", params=params)
    assert page.status_code == 400 and "Traceback" not in page.text
    assert page.text.count('class="error-line"') == 1 and message.replace("'", "&#39;") in page.text
    fragment = client.get(
        "/traces", params=params, headers={"HX-Request": "true", "HX-Target": "trace-table"}
    )
    assert (
        fragment.status_code == 200 and "<html" not in fragment.text and 'class="error-line"' in fragment.text
    )


def test_the_htmx_filter_swaps_only_the_table(client: TestClient) -> None:
    full = client.get("/traces", params={"prompt_version": "v1"}).text
    assert (
        '<form class="filters"' in full
        and 'hx-push-url="true"' in full
        and 'hx-target="#trace-table"' in full
    )
    part = client.get(
        "/traces", params={"prompt_version": "v1"}, headers={"HX-Request": "true", "HX-Target": "trace-table"}
    )
    assert "<html" not in part.text and "<table" in part.text and ">v2<" not in part.text


# -- one trace ---------------------------------------------------------------------------------


def _walk(spans: list[dict]) -> Iterator[dict]:
    for span in spans:
        yield span
        yield from _walk(span["children"])


def test_a_trace_is_its_spans_as_a_tree_with_the_stores_numbers(
    client: TestClient, demo_store: DemoStore
) -> None:
    trace_id = rows(
        demo_store.url,
        "select s.trace_id from spans s join retrieved_documents d on d.span_id = s.span_id "
        "where s.kind = 'retriever' order by s.start_time limit 1",
    )[0]["trace_id"]
    body = client.get(f"/api/traces/{trace_id[:8]}").json()  # a unique prefix
    assert body["trace_id"] == trace_id
    stored = {
        r["span_id"]: r for r in rows(demo_store.url, "select * from spans where trace_id = :t", t=trace_id)
    }
    spans = list(_walk(body["spans"]))
    assert len(spans) == len(stored) == body["span_count"] and len(body["spans"]) == 1
    for span in spans:
        row = stored[span["span_id"]]
        assert span["parent_id"] == row["parent_span_id"]
        assert all(child["parent_id"] == span["span_id"] for child in span["children"])
        assert (
            span["tokens"]["input"] == row["input_tokens"]
            and span["tokens"]["output"] == row["output_tokens"]
        )
        assert (
            span["tokens"]["total"] == row["total_tokens"]
            and span["tokens"]["cached"] == row["cached_input_tokens"]
        )
        assert span["cost_usd"] == row["cost_usd"]
        assert span["latency_ms"] == pytest.approx(row["latency_ms"]) and span["offset_ms"] >= 0
        assert (span["model"], span["request_model"], span["response_model"]) == (
            row["model"],
            row["request_model"],
            row["response_model"],
        )
    llm = [stored[s["span_id"]] for s in spans if s["kind"] == "llm"]
    assert body["input_tokens"] == sum(r["input_tokens"] or 0 for r in llm) > 0
    assert body["output_tokens"] == sum(r["output_tokens"] or 0 for r in llm) > 0
    with TraceStore(demo_store.url) as ts:
        request = ts.traces(trace_id=trace_id).iloc[0]
    assert body["cost_usd"] == pytest.approx(float(request["cost_usd"]), rel=1e-12)
    assert body["prompt_version"] == request["prompt_version"] and body["latency_ms"] == pytest.approx(
        request["latency_ms"]
    )
    retriever = next(s for s in spans if s["kind"] == "retriever")
    docs = rows(
        demo_store.url,
        "select * from retrieved_documents where span_id = :s order by rank",
        s=retriever["span_id"],
    )
    assert [(d["rank"], d["score"], d["content"]) for d in retriever["documents"]] == [
        (d["rank"], d["score"], d["content"]) for d in docs
    ]
    root = body["spans"][0]
    assert isinstance(root["input"], dict) and "question" in root["input"]  # decoded JSON
    assert [b["to_node"] for b in body["branch_decisions"]] == [
        r["to_node"]
        for r in rows(
            demo_store.url,
            "select to_node from branch_decisions where trace_id = :t order by created_at",
            t=trace_id,
        )
    ]
    # the page shows the same numbers
    html = client.get(f"/traces/{trace_id}").text
    assert f'data-input="{body["input_tokens"]}"' in html and f'data-output="{body["output_tokens"]}"' in html
    assert money(body["cost_usd"]) in html and html.count('<details class="span-row') == len(stored)
    assert "Retrieved documents" in html and "Branch decisions" in html


def test_session_neighbours_scores_prefixes_and_404(client: TestClient, demo_store: DemoStore) -> None:
    session = rows(
        demo_store.url,
        "select session_id from spans where parent_span_id is null and session_id is not null "
        "group by session_id having count(*) >= 2 order by session_id limit 1",
    )[0]["session_id"]
    turns = [
        r["trace_id"]
        for r in rows(
            demo_store.url,
            "select trace_id from spans where parent_span_id is null and session_id = :s order by start_time",
            s=session,
        )
    ]
    first, second = (client.get(f"/api/traces/{t}").json()["session"] for t in turns[:2])
    assert first["next"] == turns[1] and second["previous"] == turns[0] and first["previous"] is None
    html = client.get(f"/traces/{turns[1]}").text
    assert f'href="/traces/{turns[0]}"' in html and "previous turn of this session" in html
    judged = rows(demo_store.url, "select trace_id from scores where source = 'judge' limit 1")[0]["trace_id"]
    scores = client.get(f"/api/traces/{judged}").json()["scores"]
    assert {"faithfulness", "helpfulness"} <= {s["name"] for s in scores} and all(
        s["current"] for s in scores
    )
    assert client.get(f"/traces/{judged[:10]}").status_code == 200
    for missing in ("nope-" + uuid.uuid4().hex, "0"):  # unknown; "0": none or several start with it
        assert client.get(f"/api/traces/{missing}").status_code == 404
        page = client.get(f"/traces/{missing}")
        assert page.status_code == 404 and "No such trace" in page.text


def test_summary_counts_the_requests(client: TestClient, demo_store: DemoStore) -> None:
    body = client.get("/api/summary").json()
    everything = items(client)
    assert body["requests"] == len(everything) and body["errors"] == len(demo_store.error_trace_ids)
    assert body["error_rate"] == pytest.approx(body["errors"] / body["requests"])
    assert body["tokens"] == sum(r["tokens"] for r in everything)
    assert body["cost_usd"] == pytest.approx(sum(r["cost_usd"] or 0 for r in everything))
    assert body["latency_p50_ms"] <= body["latency_p95_ms"] <= body["latency_p99_ms"]
    versions = {v["prompt_version"]: v for v in body["by_prompt_version"]}
    assert set(versions) == set(demo_store.versions)
    assert sum(v["requests"] for v in versions.values()) == body["requests"]
    late = client.get("/api/summary", params={"since": (DEMO_START + timedelta(hours=3)).isoformat()}).json()
    assert 0 < late["requests"] < body["requests"] and late["since"].startswith("2026-11-02T03:00:00")
    assert client.get("/api/summary", params={"range": "2d"}).status_code == 400


# -- feedback ----------------------------------------------------------------------------------


def test_feedback_201_202_and_422(client: TestClient, demo_store: DemoStore) -> None:
    trace_id = demo_store.error_trace_ids[0]
    r = client.post(
        "/api/feedback", json={"trace_id": trace_id, "score": 0, "comment": "wrong order", "user_id": "u-t"}
    )
    assert r.status_code == 201, r.text
    stored = rows(demo_store.url, "select * from scores where id = :i", i=r.json()["id"])
    assert len(stored) == 1 and (stored[0]["trace_id"], stored[0]["value"], stored[0]["source"]) == (
        trace_id,
        0.0,
        "user",
    )
    assert stored[0]["comment"] == "wrong order" and stored[0]["label"] == "negative"
    # the same user changes their mind: one current score, the first superseded
    r2 = client.post("/api/feedback", json={"trace_id": trace_id, "score": 1, "user_id": "u-t"})
    assert r2.status_code == 201
    scores = [s for s in client.get(f"/api/traces/{trace_id}").json()["scores"] if s["user_id"] == "u-t"]
    assert [(s["value"], s["current"]) for s in scores] == [(0.0, False), (1.0, True)]
    assert "superseded" in client.get(f"/traces/{trace_id}/scores").text
    unknown = "later-" + uuid.uuid4().hex
    r = client.post("/api/feedback", json={"trace_id": unknown, "score": 0.8, "name": "stars"})
    assert r.status_code == 202, r.text
    row = rows(demo_store.url, "select * from scores where id = :i", i=r.json()["id"])[0]
    assert (row["trace_id"], row["label"], row["name"], row["value"]) == (
        unknown,
        "unknown_trace",
        "stars",
        0.8,
    )
    bad = [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"score": 1}).encode(), "trace_id is required"),
        (json.dumps({"trace_id": trace_id}).encode(), "score is required"),
        (json.dumps({"trace_id": trace_id, "score": "good"}).encode(), "score must be a number"),
        (json.dumps({"trace_id": trace_id, "score": True}).encode(), "score must be a number"),
        (b'{"trace_id": "x", "score": NaN}', "finite"),
        (b'{"trace_id": "x", "score": Infinity}', "finite"),
        (json.dumps({"trace_id": 12, "score": 1}).encode(), "trace_id must be a string"),
        (
            json.dumps({"trace_id": trace_id, "score": 1, "comment": ["x"]}).encode(),
            "comment must be a string",
        ),
    ]
    before = rows(demo_store.url, "select count(*) as n from scores")[0]["n"]
    for body, message in bad:
        r = client.post("/api/feedback", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and message in r.json()["error"], (body, r.text)
    assert rows(demo_store.url, "select count(*) as n from scores")[0]["n"] == before


def test_signed_feedback_endpoint(demo_store: DemoStore) -> None:
    secret = "app-secret"
    trace_id, other = demo_store.error_trace_ids
    token = sign_trace(trace_id, secret)
    assert (
        token == sign_trace(trace_id, secret.encode())
        and "=" not in token
        and token != sign_trace(other, secret)
    )
    host = Starlette(
        routes=[
            Mount(
                "/feedback", app=feedback_app(demo_store.url, secret, allow_origins=["https://shop.example"])
            )
        ]
    )
    with TestClient(host) as c:
        ok = c.post("/feedback/", json={"trace_id": trace_id, "token": token, "score": 1, "comment": "👍"})
        assert ok.status_code == 201, ok.text
        assert (
            rows(demo_store.url, "select comment from scores where id = :i", i=ok.json()["id"])[0]["comment"]
            == "👍"
        )
        tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        for given in (sign_trace(other, secret), tampered, sign_trace(trace_id, "another-secret"), None, 5):
            r = c.post("/feedback/", json={"trace_id": trace_id, "token": given, "score": 0})
            assert r.status_code == 403, given
        assert c.post("/feedback/", json={"token": token, "score": 0}).status_code == 422
        pre = c.options(
            "/feedback/",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://shop.example"
        evil = c.options(
            "/feedback/", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in evil.headers
    with pytest.raises(ValueError, match="secret"):
        feedback_app(demo_store.url, "")
    # the app's own LLMObs: the same writer as its spans (and left open for the app)
    with LLMObs(demo_store.url, prometheus_registry=None) as obs:
        with TestClient(feedback_app(obs, secret)) as c:
            r = c.post("/", json={"trace_id": other, "token": sign_trace(other, secret), "score": 0.0})
            assert r.status_code == 201, r.text
        later = obs.feedback(other, 1.0, comment="after the feedback app stopped")
        assert obs.flush(10.0)  # the app's LLMObs still writes: the feedback app did not close it
    assert rows(demo_store.url, "select comment from scores where id = :i", i=later)[0]["comment"] == (
        "after the feedback app stopped"
    )


# -- the token ---------------------------------------------------------------------------------


def test_a_token_guards_every_page_and_api_call(sqlite_demo_store: DemoStore) -> None:
    token = "t-" + uuid.uuid4().hex
    with TestClient(create_app(sqlite_demo_store.url, token=token), follow_redirects=False) as c:
        page = c.get("/traces", params={"prompt_version": "v1"})
        assert (
            page.status_code == 303
            and page.headers["location"] == "/login?next=%2Ftraces%3Fprompt_version%3Dv1"
        )
        for path in ("/api/traces", "/api/summary", f"/api/traces/{sqlite_demo_store.hostile_trace_id}"):
            r = c.get(path)
            assert r.status_code == 401 and "token" in r.json()["error"]
        assert c.get("/api/traces", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/api/feedback", json={"trace_id": "x", "score": 1}).status_code == 401
        assert c.get("/static/style.css").status_code == 200 and c.get("/login").status_code == 200
        assert c.get("/api/traces", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/traces", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        wrong = c.post("/login", data={"token": "nope", "next": "/traces"})
        assert wrong.status_code == 401 and "wrong token" in wrong.text and "set-cookie" not in wrong.headers
        login = c.post("/login", data={"token": token, "next": "//evil.example/x"})
        assert login.status_code == 303 and login.headers["location"] == "/traces"  # never off-site
        cookie = login.headers["set-cookie"]
        assert (
            "HttpOnly" in cookie
            and "SameSite=strict" in cookie.replace("Strict", "strict")
            and token not in cookie
        )
        assert c.get("/traces").status_code == 200 and c.get("/api/traces").status_code == 200
        # with the cookie, a write needs a same-origin marker (a cross-site form cannot add it)
        trace_id = sqlite_demo_store.hostile_trace_id
        assert c.post("/api/feedback", json={"trace_id": trace_id, "score": 1}).status_code == 403
        assert (
            c.post(
                "/api/feedback",
                json={"trace_id": trace_id, "score": 1},
                headers={"Origin": "https://evil.example"},
            ).status_code
            == 403
        )
        assert (
            c.post(
                "/api/feedback", json={"trace_id": trace_id, "score": 1}, headers={"HX-Request": "true"}
            ).status_code
            == 201
        )
        assert (
            c.post(
                "/api/feedback",
                json={"trace_id": trace_id, "score": 1},
                headers={"Origin": "http://testserver"},
            ).status_code
            == 201
        )


def test_serving_off_loopback_needs_a_token(
    sqlite_demo_store: DemoStore, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.delenv("LLMOBS_UI_TOKEN", raising=False)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        with pytest.raises(ValueError, match="give a --token"):
            serve(sqlite_demo_store.url, host=host, port=0)
    with pytest.raises(ValueError, match="empty"):
        create_app(sqlite_demo_store.url, token=" ")
    assert main(["ui", "--database-url", sqlite_demo_store.url, "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "llmobs ui: --host 0.0.0.0 is reachable from other machines"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ui", "--database-url", sqlite_demo_store.url, "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert err == f"llmobs ui: cannot serve on 127.0.0.1:{port}: the address is already in use (pick " + (
            "another --port, or 0 for any)\n"
        )
        # $LLMOBS_UI_TOKEN counts as a token: the host check passes, then the port is taken
        monkeypatch.setenv("LLMOBS_UI_TOKEN", "from-env")
        with pytest.raises(OSError):
            serve(sqlite_demo_store.url, host="0.0.0.0", port=port)


# -- safety ------------------------------------------------------------------------------------


def test_hostile_text_is_escaped_and_scripts_are_confined(client: TestClient, demo_store: DemoStore) -> None:
    for path in (f"/traces/{demo_store.hostile_trace_id}", f"/traces?session={HOSTILE_SESSION}"):
        r = client.get(path)
        assert r.status_code == 200
        assert (
            "<script>alert" not in r.text
            and "<img src=x" not in r.text
            and "onerror=alert" not in r.text.replace("onerror=alert(2)&gt;", "")
        )
        assert (
            "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
            and "&lt;img src=x onerror=alert(2)&gt;" in r.text
        )
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "<script>" not in r.text.replace(" ", "")  # no inline script of ours either
    api = client.get(f"/api/traces/{demo_store.hostile_trace_id}").json()
    assert HOSTILE_INPUT in json.dumps(api, ensure_ascii=False)  # the API returns the text as stored


def test_serving_never_writes_and_follows_a_writer(tmp_path: Path, sqlite_demo_store: DemoStore) -> None:
    missing = tmp_path / "no" / "store.db"
    with pytest.raises(StoreNotFoundError):
        create_app(f"sqlite:///{missing}")
    assert not missing.parent.exists()
    db = Path(sqlite_demo_store.url.removeprefix("sqlite:///"))
    files = sorted(db.parent.glob(db.name + "*"))

    def state() -> tuple:
        counts = rows(
            sqlite_demo_store.url,
            "select (select count(*) from spans) as s, (select count(*) from scores) as c",
        )
        # The database and its WAL; not -shm: SQLite readers of a WAL database mark their
        # snapshot in that shared-memory index (not data).
        data = [f for f in sorted(db.parent.glob(db.name + "*")) if not f.name.endswith("-shm")]
        return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in data], counts

    before = state()
    with TestClient(create_app(sqlite_demo_store.url)) as c:
        trace_id = sqlite_demo_store.hostile_trace_id
        for path in (
            "/traces",
            "/traces?search=refund&sort=cost",
            f"/traces/{trace_id}",
            f"/traces/{trace_id}/scores",
            "/api/traces",
            f"/api/traces/{trace_id[:8]}",
            "/api/summary",
            "/static/style.css",
        ):
            assert c.get(path).status_code == 200, path
        assert state() == before and sorted(db.parent.glob(db.name + "*")) == files
        # another process's writes show up on the next request
        with LLMObs(sqlite_demo_store.url, prometheus_registry=None, synchronous=True) as obs:
            RunnableLambda(lambda x: x.upper()).invoke(
                "a new request", config={"callbacks": [obs.langchain_handler()]}
            )
        newest = c.get("/api/traces", params={"limit": 1}).json()["items"][0]
        assert newest["input_preview"] == "a new request"


def test_content_that_was_not_captured_or_redacted_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'private.db'}"
    with LLMObs(url, prometheus_registry=None, capture_content=False, synchronous=True) as obs:
        RunnableLambda(lambda x: x).invoke("secret text", config={"callbacks": [obs.langchain_handler()]})
    with LLMObs(url, prometheus_registry=None, redact=["email"], synchronous=True) as obs:
        RunnableLambda(lambda x: "mail me").invoke(
            "I am ann@example.com", config={"callbacks": [obs.langchain_handler()]}
        )
    with TestClient(create_app(url)) as c:
        hidden, redacted = sorted(c.get("/api/traces").json()["items"], key=lambda r: r["start_time"])
        page = c.get(f"/traces/{hidden['trace_id']}").text
        assert "content not captured" in page and "secret text" not in page
        page = c.get(f"/traces/{redacted['trace_id']}").text
        assert (
            "[REDACTED:email]" in page
            and "were redacted before storing" in page
            and "ann@example.com" not in page
        )


def test_mounted_under_a_prefix(sqlite_demo_store: DemoStore) -> None:
    host = Starlette(routes=[Mount("/llmobs", app=create_app(sqlite_demo_store.url))])
    with TestClient(host) as c:
        page = c.get("/llmobs/traces")
        assert page.status_code == 200
        assert (
            'href="/llmobs/static/style.css"' in page.text
            and 'src="/llmobs/static/vendor/htmx.min.js"' in page.text
        )
        assert f'href="/llmobs/traces/{sqlite_demo_store.hostile_trace_id}"' in page.text
        assert 'hx-get="/llmobs/traces"' in page.text and 'href="/llmobs/sessions"' in page.text
        assert c.get("/llmobs/static/vendor/htmx.min.js").status_code == 200
        assert c.get(f"/llmobs/api/traces/{sqlite_demo_store.hostile_trace_id}").status_code == 200
        trace = c.get(f"/llmobs/traces/{sqlite_demo_store.hostile_trace_id}").text
        assert 'data-endpoint="/llmobs/api/feedback"' in trace and 'src="/llmobs/static/traces.js"' in trace
    token = "mounted-token"
    host = Starlette(routes=[Mount("/llmobs", app=create_app(sqlite_demo_store.url, token=token))])
    with TestClient(host, follow_redirects=False) as c:
        r = c.get("/llmobs/traces")
        assert r.status_code == 303 and r.headers["location"] == "/llmobs/login?next=%2Ftraces"
        login = c.post("/llmobs/login", data={"token": token, "next": "/traces"})
        assert (
            login.headers["location"] == "/llmobs/traces" and "Path=/llmobs/" in login.headers["set-cookie"]
        )
        assert c.get("/llmobs/traces").status_code == 200


def test_llmobs_ui_serves_until_stopped(sqlite_demo_store: DemoStore, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "LLMOBS_UI_TOKEN": "env-tok",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmobs_callbacks.cli", "ui", "--database-url", sqlite_demo_store.url,
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/traces?limit=1", headers={"Authorization": "Bearer env-tok"}
                )
                with urllib.request.urlopen(request, timeout=2) as response:
                    assert json.load(response)["items"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.1)
        try:  # $LLMOBS_UI_TOKEN is the token: without it, 401
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/traces", timeout=2)
            raise AssertionError("served without the token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.startswith(f"llmobs ui: serving http://127.0.0.1:{port}/ (token required)")
