"""`llmobs traces` / `trace` / `sessions` / `session` on a store the real LangChain handler wrote."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from lc_fakes import ai, chat

from llmobs_callbacks import LLMObs
from llmobs_callbacks.cli import main

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=timezone.utc)
LONG_ANSWER = "You can cancel from Settings > Billing. " * 10 + "TAIL-MARKER"
# (trace id, minutes after T0, prompt version, model, question, answer or None to fail, session, user)
REQUESTS = [
    ("aaaa1111-0000-4000-8000-000000000001", 0, "v1", "gpt-4o-mini", "How long do refunds take?",
     "Refunds take 5 business days.", "s-a", "u-1"),
    ("aaaa2222-0000-4000-8000-000000000002", 10, "v2", "gpt-4o", "Where is parcel ZX-42?",
     "Parcel ZX-42 ships tomorrow.", "s-a", "u-1"),
    ("bbbb3333-0000-4000-8000-000000000003", 20, "v2", "gpt-4o-mini", "How do I cancel [my plan]?",
     LONG_ANSWER, "s-b", "u-2"),
    ("cccc4444-0000-4000-8000-000000000004", 30, "v1", "gpt-4o-mini", "Where is order A13?",
     None, "s-b", "u-2"),
]  # fmt: skip
USAGE = {"gpt-4o-mini": (100, 20), "gpt-4o": (400, 80)}
WAIT_MS = [100, 900, 300, 50]  # simulated time each request spends before its model: distinct latencies


class Clock:
    """Simulated time (epoch ns): each reading advances 5 ms; ``at`` jumps to a moment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ns = int(T0.timestamp() * 1e9)

    def at(self, moment: datetime) -> None:
        with self._lock:
            self.ns = int(moment.timestamp() * 1e9)

    def __call__(self) -> int:
        with self._lock:
            self.ns += 5_000_000
            return self.ns

    def wait(self, ms: int) -> None:
        with self._lock:
            self.ns += ms * 1_000_000


def lookup_order(_: object) -> str:
    raise ValueError("order A13 not found")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Four requests through real LangChain runnables and the handler: two sessions, two prompt
    versions, two models, one failure, a long answer, a user's thumbs up."""
    path = tmp_path_factory.mktemp("browse") / "llmobs.db"
    store = f"sqlite:///{path}"
    clock = Clock()
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    with LLMObs(store, prometheus_registry=None, clock=clock) as obs:
        handler = obs.langchain_handler()
        for (trace_id, minutes, version, model, question, answer, session, user), ms in zip(
            REQUESTS, WAIT_MS, strict=True
        ):
            clock.at(T0 + timedelta(minutes=minutes))
            wait = RunnableLambda(lambda x, ms=ms: clock.wait(ms) or x)
            if answer is None:
                chain = prompt | wait | RunnableLambda(lookup_order)
            else:
                chain = prompt | wait | chat(ai(answer, *USAGE[model]), model_name=model) | StrOutputParser()
            config = {
                "callbacks": [handler],
                "run_id": uuid.UUID(trace_id),
                "metadata": {"prompt_version": version, "session_id": session, "user_id": user},
            }
            with contextlib.suppress(ValueError):  # the failing lookup: recorded as an error trace
                chain.invoke({"question": question}, config=config)
        assert obs.flush()
        obs.feedback(REQUESTS[0][0], score=1.0, user_id="u-1")
        assert obs.flush()
    return store


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def listed(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> list[dict]:
    code, out, err = run(capsys, "traces", "--database-url", url, "--format", "json", *args)
    assert (code, err) == (0, "")
    return json.loads(out)


def ids(rows: list[dict]) -> list[str]:
    return [r["trace_id"] for r in rows]


def test_traces_table_lists_the_newest_first(url: str, capsys) -> None:
    code, out, err = run(capsys, "traces", "--database-url", url)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "time", "(UTC)", "trace", "root", "version", "model", "status", "latency", "tokens", "cost",
        "session",
    ]  # fmt: skip
    rows = [line.split() for line in lines[2:6]]
    # newest first: the failed lookup (no model, no tokens), the long answer, the parcel, the refund
    assert [r[2] for r in rows] == ["cccc4444", "bbbb3333", "aaaa2222", "aaaa1111"]
    assert rows[0][:2] == ["2025-06-02", "09:30:00"]
    assert rows[0][4:7] == ["v1", "—", "error"] and rows[0][-1] == "s-b"
    assert rows[2][4:7] == ["v2", "gpt-4o", "ok"] and rows[2][-3] == "480"
    assert lines[6] == "4 trace(s), newest first. `llmobs trace ID` shows one."


def test_traces_filters(url: str, capsys) -> None:
    every = listed(capsys, url)
    assert ids(every) == [r[0] for r in reversed(REQUESTS)]
    assert ids(listed(capsys, url, "--prompt-version", "v2")) == [REQUESTS[2][0], REQUESTS[1][0]]
    assert ids(listed(capsys, url, "--prompt-version", "v1", "--prompt-version", "v2")) == ids(every)
    assert ids(listed(capsys, url, "--model", "gpt-4o")) == [REQUESTS[1][0]]
    assert ids(listed(capsys, url, "--status", "error")) == [REQUESTS[3][0]]
    assert ids(listed(capsys, url, "--session", "s-a")) == [REQUESTS[1][0], REQUESTS[0][0]]
    assert ids(listed(capsys, url, "--user", "u-2")) == [REQUESTS[3][0], REQUESTS[2][0]]
    # gpt-4o costs more than gpt-4o-mini for 4x the tokens: the one request at or above the cheap ones
    costs = {r["trace_id"]: r["cost_usd"] for r in every}
    assert costs[REQUESTS[1][0]] > costs[REQUESTS[0][0]] > 0 and costs[REQUESTS[3][0]] is None
    threshold = str(costs[REQUESTS[0][0]] * 1.5)
    assert ids(listed(capsys, url, "--min-cost", threshold)) == [REQUESTS[1][0]]
    latency = {r["trace_id"]: r["latency_ms"] for r in every}
    assert latency[REQUESTS[1][0]] > 900 > latency[REQUESTS[2][0]] > 300 > latency[REQUESTS[0][0]] > 100
    assert ids(listed(capsys, url, "--min-latency", "0.9s")) == [REQUESTS[1][0]]
    assert ids(listed(capsys, url, "--min-latency", "300")) == [REQUESTS[2][0], REQUESTS[1][0]]
    assert ids(listed(capsys, url, "--sort", "latency", "--limit", "1")) == [REQUESTS[1][0]]
    assert ids(listed(capsys, url, "--since", "2025-06-02T09:15", "--until", "2025-06-02T09:25")) == [
        REQUESTS[2][0]
    ]
    assert ids(listed(capsys, url, "--limit", "2")) == ids(every)[:2]
    assert ids(listed(capsys, url, "--sort", "tokens", "--limit", "1")) == [REQUESTS[1][0]]
    code, out, _ = run(capsys, "traces", "--database-url", url, "--session", "nobody")
    assert (code, out) == (0, "no traces match these filters\n")


def test_traces_search_finds_inputs_outputs_and_errors(url: str, capsys) -> None:
    assert ids(listed(capsys, url, "--search", "zx-42")) == [REQUESTS[1][0]]  # input and output, any case
    assert ids(listed(capsys, url, "--search", "TAIL-MARKER")) == [REQUESTS[2][0]]  # an output only
    assert ids(listed(capsys, url, "--search", "A13 not found")) == [REQUESTS[3][0]]  # an error message
    assert ids(listed(capsys, url, "--search", "[my plan]")) == [REQUESTS[2][0]]  # brackets are text
    assert listed(capsys, url, "--search", "50%_off") == []  # LIKE wildcards are escaped


def test_traces_json_and_csv_carry_every_request_column(url: str, capsys) -> None:
    rows = listed(capsys, url, "--model", "gpt-4o")
    (row,) = rows
    assert row["trace_id"] == REQUESTS[1][0] and row["name"] == "RunnableSequence"
    assert (row["input_tokens"], row["output_tokens"], row["tokens"]) == (400, 80, 480)
    assert row["start_time"].startswith("2025-06-02T09:10:00") and row["session_id"] == "s-a"
    assert row["prompt_version"] == "v2" and row["status"] == "ok" and row["llm_calls"] == 1
    code, out, _ = run(capsys, "traces", "--database-url", url, "--format", "csv")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["trace_id"] for r in table] == ids(listed(capsys, url))
    assert table[0]["status"] == "error" and table[0]["error_type"] == "ValueError"
    assert table[0]["cost_usd"] == "" and table[2]["tokens"] == "480"


def test_trace_by_unique_prefix_shows_inputs_and_outputs(url: str, capsys) -> None:
    code, out, err = run(capsys, "trace", "aaaa2", "--database-url", url)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"trace {REQUESTS[1][0]}  2025-06-02 09:10:00  ok  ")
    assert "480 tokens" in lines[0] and "session s-a  user u-1" in lines[0]
    assert lines[1].startswith("└── chain RunnableSequence  ")
    assert "    in:  Where is parcel ZX-42?" in lines
    assert "    out: Parcel ZX-42 ships tomorrow." in lines
    llm = next(line for line in lines if "llm " in line)
    assert "tokens 400→80" in llm and "gpt-4o" in llm and "$0.00" in llm


def test_trace_cuts_long_texts_unless_full(url: str, capsys) -> None:
    code, out, _ = run(capsys, "trace", "bbbb", "--database-url", url)
    assert code == 0
    answer = next(line for line in out.splitlines() if line.startswith("    out: "))
    assert "TAIL-MARKER" not in out and answer.endswith(f"… (+{len(LONG_ANSWER) - 160} chars)")
    assert "How do I cancel [my plan]?" in out  # user text is never read as markup
    code, out, _ = run(capsys, "trace", "bbbb", "--database-url", url, "--full")
    words = out.split()  # whole, wrapped at the console's width
    assert code == 0 and "TAIL-MARKER" in words and "chars)" not in words
    assert " ".join(words).count("You can cancel from Settings > Billing.") >= 10


def test_trace_shows_the_error(url: str, capsys) -> None:
    code, out, _ = run(capsys, "trace", "cccc4444-0000-4000-8000-000000000004", "--database-url", url)
    assert code == 0
    failing = [line for line in out.splitlines() if "ERROR ValueError: order A13 not found" in line]
    assert len(failing) == 2  # the lambda that raised and the root it failed
    assert out.splitlines()[0].split("  ")[2] == "error"


def test_trace_prefix_ambiguous_or_unknown(url: str, capsys) -> None:
    code, out, err = run(capsys, "trace", "aaaa", "--database-url", url)
    assert code == 2 and out == ""
    assert err == (
        f"llmobs trace: trace id prefix 'aaaa' is ambiguous: {REQUESTS[0][0]}, {REQUESTS[1][0]}; "
        "give more of the id\n"
    )
    code, out, err = run(capsys, "trace", "ffff", "--database-url", url)
    assert code == 1 and out == ""
    assert err == (
        f"llmobs trace: no trace 'ffff' in {url}: no trace id starts with it (`llmobs traces` lists them)\n"
    )


def test_sessions_and_session(url: str, capsys) -> None:
    code, out, err = run(capsys, "sessions", "--database-url", url, "--format", "json")
    assert (code, err) == (0, "")
    rows = {r["session_id"]: r for r in json.loads(out)}
    assert list(rows) == ["s-b", "s-a"]  # most recently active first
    assert (rows["s-a"]["requests"], rows["s-a"]["errors"], rows["s-a"]["user_id"]) == (2, 0, "u-1")
    assert (rows["s-a"]["feedback"], rows["s-a"]["feedback_count"]) == (1.0, 1)
    assert (rows["s-b"]["requests"], rows["s-b"]["errors"], rows["s-b"]["feedback"]) == (2, 1, None)
    code, out, _ = run(capsys, "sessions", "--database-url", url)
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["session", "user", "requests", "errors"]
    assert lines[2].split()[:4] == ["s-b", "u-2", "2", "1"] and lines[3].split()[-1] == "(1)"
    assert (
        run(capsys, "sessions", "--database-url", url, "--user", "u-1", "--format", "csv")[1].count("\n") == 2
    )

    code, out, err = run(capsys, "session", "s-a", "--database-url", url)
    assert (code, err) == (0, "")
    lines = [line for line in out.splitlines() if line]
    assert lines[0].startswith("session s-a  2 request(s)  user u-1  $")
    assert lines[1].startswith("[1] 2025-06-02 09:00:00  aaaa1111  ok  ")
    assert lines[1].endswith("user_feedback=1")
    assert lines[2:4] == [
        "       user: How long do refunds take?",
        "  assistant: Refunds take 5 business days.",
    ]
    assert lines[4].startswith("[2] 2025-06-02 09:10:00  aaaa2222  ok  ")
    assert lines[5:7] == ["       user: Where is parcel ZX-42?", "  assistant: Parcel ZX-42 ships tomorrow."]
    code, out, _ = run(capsys, "session", "s-b", "--database-url", url)
    assert "  assistant: (failed: ValueError)" in out.splitlines()
    code, out, err = run(capsys, "session", "s-zzz", "--database-url", url)
    assert (
        code == 1 and err == f"llmobs session: no session 's-zzz' in {url} (`llmobs sessions` lists them)\n"
    )


def test_browsing_writes_nothing(url: str, capsys) -> None:
    directory = Path(url.removeprefix("sqlite:///")).parent
    before = sorted(p.name for p in directory.iterdir())
    for args in (["traces"], ["trace", "aaaa1"], ["sessions"], ["session", "s-a"], ["report"]):
        assert run(capsys, *args, "--database-url", url)[0] == 0
    assert sorted(p.name for p in directory.iterdir()) == before == ["llmobs.db"]
