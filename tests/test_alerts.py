"""Alert delivery: a webhook to a loopback HTTP server, logging, callables, de-duplication and
the background checker, on stores written through the real handler."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from anomaly_support import T0, Clock, Traffic, noisy

from llmobs_callbacks import LLMObs
from llmobs_callbacks.alerts import Alert, Deduplicator, LoggingNotifier, WebhookNotifier
from llmobs_callbacks.cli import main

NOW = T0 + timedelta(hours=25)


class Hook:
    """A loopback webhook receiver: records JSON bodies; answers ``fail_first`` requests with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict] = []
        self.attempts = 0
        self.fail_first = fail_first
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.attempts += 1
                if hook.attempts <= hook.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                hook.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def regressed(db_url: str) -> Iterator[LLMObs]:
    """A day of v1, then an hour of v2 with twice the tokens; the clock stands at NOW."""
    clock = Clock(T0)
    obs = LLMObs(db_url, prometheus_registry=None, clock=clock)
    traffic = Traffic(obs, clock)
    traffic.hours(T0, 24, 20, noisy("v1"))
    traffic.hours(T0 + timedelta(hours=24), 1, 20, noisy("v2", scale=2.0), seed=2)
    assert obs.flush()
    clock.at(NOW)
    yield obs
    obs.shutdown()


def test_webhook_gets_new_anomalies_once(regressed: LLMObs, hook: Hook) -> None:
    manager = regressed.alerts(notify=[WebhookNotifier(hook.url, backoff_s=0.01)])
    found = manager.check(now=NOW)
    assert manager.flush()
    assert len(hook.bodies) == 1
    body = hook.bodies[0]
    sent = body["llmobs"]["alerts"]
    # min_severity="warning": the info anomaly (v2 is new) is found but not sent.
    assert {a.type for a in found} == {"token_spike", "cost_spike", "new_prompt_version"}
    assert {a["anomaly"]["type"] for a in sent} == {"token_spike", "cost_spike"}
    assert all(a["anomaly"]["prompt_version"] == "v2" for a in sent)
    assert "token_spike" in body["text"] and "v2" in body["text"]  # Slack shows `text`
    # Five minutes later the same anomalies are still there: nothing is sent again.
    assert {a.fingerprint for a in manager.check(now=NOW + timedelta(minutes=5))} >= {
        a["fingerprint"] for a in sent
    }
    assert manager.flush()
    assert len(hook.bodies) == 1
    # Once repeat_after has passed, they are sent again, marked as repeats.
    manager.configure(repeat_after="10m")
    manager.check(now=NOW + timedelta(minutes=15))
    assert manager.flush()
    assert len(hook.bodies) == 2
    assert {a["repeat"] for a in hook.bodies[1]["llmobs"]["alerts"]} == {True}
    assert manager.stats()["notify_errors"] == 0


def test_webhook_retries_server_errors() -> None:
    hook = Hook(fail_first=2)
    try:
        alert = Alert("budget", "warning", "budget day", "80% used", NOW, "budget|day|0.8")
        WebhookNotifier(hook.url, retries=2, backoff_s=0.01).send([alert])
        assert hook.attempts == 3 and len(hook.bodies) == 1
        assert hook.bodies[0]["llmobs"]["alerts"][0]["fingerprint"] == "budget|day|0.8"
    finally:
        hook.close()


def test_failing_notifier_does_not_stop_the_others(regressed: LLMObs, caplog) -> None:
    received: list[Alert] = []
    dead = WebhookNotifier("http://127.0.0.1:9/nothing-listens-here", retries=0, timeout_s=1.0)
    manager = regressed.alerts(notify=[dead, LoggingNotifier(), received.append], min_severity="info")
    with caplog.at_level(logging.INFO, logger="llmobs_callbacks.alerts"):
        manager.check(now=NOW)
        assert manager.flush()
    assert {a.anomaly.type for a in received if a.anomaly} == {
        "token_spike",
        "cost_spike",
        "new_prompt_version",
    }
    assert manager.stats()["notify_errors"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("token_spike" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert any("failed" in m and "WebhookNotifier" in m for m in messages)


def test_resolved_alerts_and_state_file(tmp_path) -> None:
    from llmobs_callbacks.analysis.anomalies import Anomaly

    a = Anomaly("token_spike", "critical", "tokens_per_request", 600.0, 300.0, 2.0, "x", "v2→ 2.0×", "v2")
    dedup = Deduplicator(repeat_after=None)
    sent, resolved = dedup.filter([a], NOW)
    assert [s.fingerprint for s in sent] == [a.fingerprint] and resolved == []
    path = str(tmp_path / "state.json")
    dedup.save(path)
    again = Deduplicator.load(path, None)
    assert again.filter([a], NOW + timedelta(hours=30))[0] == []  # never repeats
    sent, resolved = again.filter([], NOW + timedelta(hours=31))
    assert sent == [] and [r.kind for r in resolved] == ["resolved"]
    escalated = Anomaly("token_spike", "critical", "tokens_per_request", 900.0, 300.0, 3.0, "x", "3×", "v2")
    dedup = Deduplicator(repeat_after=None)
    dedup.filter([Anomaly("token_spike", "warning", "tokens_per_request", 1, 1, 1, "x", "", "v2")], NOW)
    assert len(dedup.filter([escalated], NOW)[0]) == 1  # a rise in severity is sent at once


def test_cli_webhook_with_state_file(regressed: LLMObs, hook: Hook, tmp_path, capsys) -> None:
    state = str(tmp_path / "state.json")
    args = ["anomalies", "--database-url", regressed.database_url, "--now", NOW.isoformat()]
    args += ["--webhook", hook.url, "--state", state]
    assert main(args) == 0
    assert main(args) == 0  # a cron run five minutes later: nothing new to post
    capsys.readouterr()
    assert len(hook.bodies) == 1
    assert {a["anomaly"]["type"] for a in hook.bodies[0]["llmobs"]["alerts"]} == {"token_spike", "cost_spike"}


def test_background_checker(db_url: str) -> None:
    """LLMObs(anomaly_check_every=...) checks the store on its own thread at the clock's time."""
    clock = Clock(T0)
    received: list[Alert] = []
    obs = LLMObs(db_url, prometheus_registry=None, clock=clock, anomaly_check_every=0.2)
    try:
        obs.alerts(notify=[received.append])
        traffic = Traffic(obs, clock)
        traffic.hours(T0, 24, 20, noisy("v1"))
        traffic.hours(T0 + timedelta(hours=24), 1, 20, noisy("v2", scale=2.0), seed=2)
        assert obs.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(a.anomaly.type == "token_spike" for a in received):
            time.sleep(0.05)
        spikes = [a for a in received if a.anomaly is not None and a.anomaly.type == "token_spike"]
        assert len(spikes) == 1 and spikes[0].anomaly.prompt_version == "v2"
        assert obs.alerts().stats()["checks"] >= 1
    finally:
        obs.shutdown()
    checks = obs.alerts().stats()["checks"]
    time.sleep(0.5)
    assert obs.alerts().stats()["checks"] == checks  # the checker stopped with the LLMObs
