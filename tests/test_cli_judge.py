"""`llmobs judge` says why evaluations failed (grouped by reason) and exits 1 when all of them did."""

from __future__ import annotations

import json
import uuid

import pytest
from fake_openai import FakeOpenAIServer, fake_openai  # noqa: F401 - the fixture
from judge_fakes import GOOD, scripted

from llmobs_callbacks import Judge, LLMObs
from llmobs_callbacks.cli import main
from llmobs_callbacks.cli.judge import failure_lines
from llmobs_callbacks.judge.backfill import stored_tasks

VERDICT = {"faithfulness": 5, "relevance": 4, "completeness": 4, "hallucination": "no", "reason": "fine"}


def store_traces(url: str, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with LLMObs(url, prometheus_registry=None) as obs:
        for tid in ids:
            obs.recorder.start(
                tid, None, "chain", "app", "manual", input="Why?", metadata={"prompt_version": "v1"}
            )
            obs.recorder.end(tid, output="Because.")
    return ids


def judge_argv(url: str, server: FakeOpenAIServer, *extra: str) -> list[str]:
    return [
        "judge", "--database-url", url, "--since", "1h", "--model", "gpt-4o-mini",
        "--base-url", server.base_url, "--max-retries", "0", "--concurrency", "1", *extra,
    ]  # fmt: skip


def test_no_api_key_every_evaluation_fails_with_its_reason(
    sqlite_url: str,
    fake_openai: FakeOpenAIServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    store_traces(sqlite_url, 7)
    for _ in range(7):
        fake_openai.enqueue_error(401, "Incorrect API key provided: not-set.")
    assert main(judge_argv(sqlite_url, fake_openai)) == 1
    captured = capsys.readouterr()
    posts = [c for c in fake_openai.calls if c.method == "POST"]
    assert len(posts) == 7 and {c.headers["authorization"] for c in posts} == {"Bearer not-set"}  # no key
    assert captured.out.splitlines()[1].split()[:6] == [
        "v1",
        "7",
        "0",
        "0",
        "7",
        "0",
    ]  # judged ok invalid error
    lines = captured.err.splitlines()
    assert lines[0] == "7 trace(s) to judge, 0 already judged (skipped)"
    failed = lines.index("7 of 7 evaluation(s) failed:")
    assert lines[failed + 1].startswith("  7 × OpenAIAuthenticationError: Error code: 401 - ")
    assert "Incorrect API key provided: not-set." in lines[failed + 1]
    assert lines[failed + 2] == "  (an API key is needed: --api-key or $OPENAI_API_KEY)"
    assert "Traceback" not in captured.err


def test_every_answer_unparseable_exits_1(
    sqlite_url: str,
    fake_openai: FakeOpenAIServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    store_traces(sqlite_url, 3)
    for _ in range(3):
        fake_openai.enqueue_chat("I would rather not answer in JSON.")
    assert main(judge_argv(sqlite_url, fake_openai, "--api-key", "test")) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].split()[:6] == ["v1", "3", "0", "3", "0", "0"]
    lines = captured.err.splitlines()
    failed = lines.index("3 of 3 evaluation(s) failed:")
    assert lines[failed + 1 :] == ["  3 × unparseable answer: no JSON object in the answer"]


def test_some_failures_are_listed_and_exit_0(
    sqlite_url: str,
    fake_openai: FakeOpenAIServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    store_traces(sqlite_url, 3)
    fake_openai.enqueue_chat(json.dumps(VERDICT))
    fake_openai.enqueue_error(500)
    fake_openai.enqueue_chat(json.dumps(VERDICT))
    assert main(judge_argv(sqlite_url, fake_openai, "--api-key", "test")) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].split()[:6] == ["v1", "3", "2", "0", "1", "0"]
    lines = captured.err.splitlines()
    failed = lines.index("1 of 3 evaluation(s) failed:")
    assert lines[failed + 1].startswith(
        "  1 × OpenAIAPIError: Error code: 500 - "
    )  # as langchain-openai says
    assert len(lines) == failed + 2
    # resumable: the two judged traces are skipped, the failed one is tried again
    fake_openai.enqueue_chat(json.dumps(VERDICT))
    assert main(judge_argv(sqlite_url, fake_openai, "--api-key", "test")) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == "1 trace(s) to judge, 2 already judged (skipped)"
    assert "failed" not in captured.err


def test_failures_are_grouped_by_reason(sqlite_url: str) -> None:
    """The scripted judge raising twice, answering unparseably once and well once."""
    store_traces(sqlite_url, 4)
    judge = Judge(
        scripted(RuntimeError("judge down"), "not json", RuntimeError("judge down"), GOOD),
        sample_rate=0.0,
        workers=1,
    )
    with LLMObs(sqlite_url, prometheus_registry=None, judge=judge) as obs:
        tasks, _ = stored_tasks(obs.sql.engine, metric_names=[m.name for m in judge.rubric.metrics])
        results = [judge.evaluate(task) for task in tasks]
    assert [r.status for r in results] == ["error", "invalid", "error", "ok"]
    assert failure_lines([r for r in results if r.status != "ok"], len(results)) == [
        "3 of 4 evaluation(s) failed:",
        "  2 × RuntimeError: judge down",
        "  1 × unparseable answer: no JSON object in the answer",
    ]
    assert failure_lines([], 4) == []


def test_judge_needs_an_existing_store(tmp_path, capsys) -> None:
    missing = tmp_path / "none.db"
    assert main(["judge", "--database-url", f"sqlite:///{missing}", "--rules-only"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"llmobs judge: no store at {missing}; run `llmobs demo` or point --database-url at your store\n"
    )
    assert list(tmp_path.iterdir()) == []
