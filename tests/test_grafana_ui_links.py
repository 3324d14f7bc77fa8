"""``llmobs export-grafana --ui-url URL``: exemplars and trace-id cells of the dashboard open the
web UI's trace page, and that page answers for a real trace of the demo store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ui_support
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient
from ui_support import DemoStore

from llmobs_callbacks.cli import main
from llmobs_callbacks.dashboards import dashboard_json, grafana_dashboard
from llmobs_callbacks.ui import create_app

sqlite_demo_store = ui_support.sqlite_demo_store


def trace_links(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, url) of every link set on the ``trace_id`` field."""
    out = []
    for panel in dashboard["panels"]:
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            if override["matcher"] == {"id": "byName", "options": "trace_id"}:
                for prop in override["properties"]:
                    assert prop["id"] == "links"
                    out += [(panel["title"], link["url"]) for link in prop["value"]]
    return out


def test_without_ui_url_the_dashboard_is_unchanged() -> None:
    plain = grafana_dashboard()
    assert trace_links(plain) == [] and "links" not in plain
    assert dashboard_json(ui_url=None) == dashboard_json()


def test_ui_url_links_every_panel_trace_id_to_the_trace_page() -> None:
    dash = grafana_dashboard(ui_url="https://obs.example.com:8443/llmobs/")
    links = trace_links(dash)
    assert {title for title, _ in links} == {p["title"] for p in dash["panels"] if p["type"] != "row"}
    assert {url for _, url in links} == {"https://obs.example.com:8443/llmobs/traces/${__value.raw}"}
    exemplar_panels = [p for p in dash["panels"] if any(t.get("exemplar") for t in p.get("targets", []))]
    assert exemplar_panels, "the latency and token panels draw exemplars"
    assert all(p["title"] in {t for t, _ in links} for p in exemplar_panels)
    assert dash["links"] == [
        {
            "title": "llmobs UI",
            "type": "link",
            "url": "https://obs.example.com:8443/llmobs/",
            "icon": "external link",
            "targetBlank": True,
        }
    ]


def test_export_grafana_ui_url_opens_a_real_trace_page(
    tmp_path: Path, sqlite_demo_store: DemoStore, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dash.json"
    assert main(["export-grafana", "-o", str(out), "--ui-url", "http://testserver/llmobs"]) == 0
    dash = json.loads(out.read_text())
    (url,) = {u for _, u in trace_links(dash)}
    # Grafana puts the clicked exemplar's trace_id where ${__value.raw} is: the UI serves it
    trace_id = sqlite_demo_store.error_trace_ids[0]
    target = url.replace("${__value.raw}", trace_id)
    assert target == f"http://testserver/llmobs/traces/{trace_id}"
    outer = Starlette(routes=[Mount("/llmobs", app=create_app(sqlite_demo_store.url))])
    with TestClient(outer) as client:
        page = client.get(target)
        assert page.status_code == 200 and trace_id in page.text
        assert client.get(dash["links"][0]["url"]).status_code == 200  # the overview
    capsys.readouterr()


@pytest.mark.parametrize("bad", ["ftp://example.com", "127.0.0.1:8790", "http://", "http://h/?x=1"])
def test_bad_ui_url_is_one_line_and_writes_nothing(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dash.json"
    assert main(["export-grafana", "-o", str(out), "--ui-url", bad]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"llmobs export-grafana: --ui-url {bad!r}: expected an http(s) URL such as http://127.0.0.1:8790\n"
    )
    assert not out.exists()
