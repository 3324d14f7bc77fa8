"""`llmobs judge` through the loopback OpenAI-compatible server: backfill, resumable, summary."""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import fetch
from fake_openai import FakeOpenAIServer, fake_openai  # noqa: F401 - the fixture

from llmobs_callbacks import LLMObs
from llmobs_callbacks.cli import main

VERDICT = {"faithfulness": 5, "relevance": 4, "completeness": 4, "hallucination": "no", "reason": "fine"}


def test_cli_judge_backfill_with_openai_compatible_model(
    sqlite_url: str,
    fake_openai: FakeOpenAIServer,  # noqa: F811
    capsys: pytest.CaptureFixture,
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    with LLMObs(sqlite_url, prometheus_registry=None) as obs:
        for i, tid in enumerate(ids):
            meta = {"prompt_version": "v1" if i < 2 else "v2"}
            obs.recorder.start(tid, None, "chain", "app", "manual", input="Why?", metadata=meta)
            obs.recorder.end(tid, output="Because.")
    for _ in ids:
        fake_openai.enqueue_chat(
            "```json\n" + json.dumps(VERDICT) + "\n```", prompt_tokens=200, completion_tokens=30
        )
    argv = ["judge", "--database-url", sqlite_url, "--since", "1h", "--sample", "1.0"]
    argv += [
        "--model",
        "gpt-4o-mini",
        "--base-url",
        fake_openai.base_url,
        "--api-key",
        "test",
        "--max-retries",
        "0",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "prompt_version", "judged", "ok", "invalid", "error", "budget",
        "faithfulness", "relevance", "completeness", "hallucination", "cost_usd",
    ]  # fmt: skip
    assert out.splitlines()[1].split()[:10] == ["v1", "2", "2", "0", "0", "0", "5.00", "4.00", "4.00", "0.00"]
    scores = fetch(sqlite_url, "scores")
    assert len(scores) == 12 and {s["trace_id"] for s in scores} == set(ids)
    judge_spans = fetch(sqlite_url, "spans", kind="judge")
    assert len(judge_spans) == 3
    for span in judge_spans:
        assert (span["input_tokens"], span["output_tokens"]) == (200, 30)
        assert (span["model"], span["request_model"], span["response_model"]) == (
            "gpt-4o-mini",
            "gpt-4o-mini",
            "gpt-4o-mini-2024-07-18",
        )
        assert span["cost_usd"] > 0
    assert sum(s["cost_usd"] for s in scores) == pytest.approx(sum(s["cost_usd"] for s in judge_spans))
    # resumable: a second run judges nothing and calls no model
    requests = len(fake_openai.requests)
    assert main(argv) == 0
    assert "nothing to judge" in capsys.readouterr().out
    assert len(fake_openai.requests) == requests
    assert len(fetch(sqlite_url, "scores")) == 12
