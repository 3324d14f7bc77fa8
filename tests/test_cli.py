"""The `llmobs` command line: a user's mistake is one line and exit code 2, never a traceback;
commands that read never create a file; --version, --debug; `llmobs demo`'s next steps run."""

from __future__ import annotations

import os
import re
import shlex
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import _PG_SKIP_REASON, POSTGRES_URL, _fresh_postgres_url

from llmobs_callbacks import LLMObs, __version__
from llmobs_callbacks.analysis import TraceStore
from llmobs_callbacks.cli import main
from llmobs_callbacks.sinks.schema import StoreNotFoundError, open_store_readonly, readonly_sqlite_uri

REPO = Path(__file__).resolve().parents[1]
needs_postgres = pytest.mark.skipif(bool(_PG_SKIP_REASON), reason=_PG_SKIP_REASON or "")


def write_traces(url: str, n: int = 3, version: str = "v1") -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with LLMObs(url, prometheus_registry=None) as obs:
        for i, tid in enumerate(ids):
            meta = {"prompt_version": version, "session_id": f"s-{i}"}
            obs.recorder.start(tid, None, "chain", "app", "manual", input=f"question {i}", metadata=meta)
            obs.recorder.end(tid, output=f"answer {i}")
    return ids


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store with three requests, in its own directory (its writer closed: no -wal left)."""
    directory = tmp_path / "store"
    directory.mkdir()
    url = f"sqlite:///{directory / 'llmobs.db'}"
    write_traces(url)
    assert sorted(p.name for p in directory.iterdir()) == ["llmobs.db"]
    return url


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (so a default ./llmobs.db would show) and no store in the env."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("LLMOBS_DATABASE_URL", raising=False)
    return cwd


def files_under(*roots: Path) -> list[str]:
    return sorted(str(p) for root in roots for p in root.rglob("*"))


def one_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    """Run ``llmobs argv``: exit ``code``, nothing on stdout, one line on stderr; returns it."""
    assert main(argv) == code, argv
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n"), captured.err
    assert "Traceback" not in captured.err
    return captured.err.rstrip("\n")


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


# -- mistakes: one line, exit 2, nothing created --------------------------------------------------


READERS = [
    ["report"],
    ["traces"],
    ["trace", "abc"],
    ["sessions"],
    ["session", "s-1"],
    ["anomalies"],
    ["gate", "--baseline", "v1", "--candidate", "v2"],
    ["serve-metrics", "--port", "0"],
    ["ui"],
    ["judge", "--rules-only"],  # writes scores into an existing store, never creates one
]


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_a_missing_store_is_named_and_nothing_is_created(argv, workdir: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    if argv[0] == "ui":
        pytest.importorskip("llmobs_callbacks.ui")
    err = one_error(capsys, [*argv, "--database-url", f"sqlite:///{missing}"])
    assert err == (
        f"llmobs {argv[0]}: no store at {missing}; run `llmobs demo` or point --database-url at your store"
    )
    # the default store, ./llmobs.db, is just as missing: named, not created
    err = one_error(capsys, argv)
    assert err.startswith(f"llmobs {argv[0]}: no store at {workdir / 'llmobs.db'}; run `llmobs demo`")
    assert files_under(tmp_path) == [str(workdir)]  # no directory, no database, no -wal/-shm


@pytest.mark.parametrize("argv", READERS[:7], ids=lambda a: a[0])
def test_an_empty_database_url_is_a_mistake(argv, workdir: Path, capsys) -> None:
    err = one_error(capsys, [*argv, "--database-url", ""])
    assert err == (
        f"llmobs {argv[0]}: --database-url is empty: give your store's URL (e.g. sqlite:///llmobs.db), "
        "or leave the option out to use $LLMOBS_DATABASE_URL or sqlite:///llmobs.db"
    )
    assert files_under(workdir) == []


def test_bad_urls_are_one_line_with_the_password_masked(workdir: Path, capsys) -> None:
    err = one_error(capsys, ["report", "--database-url", "notaurl"])
    assert err == (
        "llmobs report: not a database URL: 'notaurl' "
        "(e.g. sqlite:///llmobs.db or postgresql+psycopg://user@host:5432/db)"
    )
    err = one_error(capsys, ["traces", "--database-url", "mysql://app:s3cret@localhost/db"])
    assert err.startswith(
        "llmobs traces: the database driver for mysql://app:***@localhost/db is not installed "
        "(no module 'MySQLdb'): install it"
    )
    err = one_error(capsys, ["report", "--database-url", "nosuchdb://x/y"])
    assert err.startswith("llmobs report: unknown database type in nosuchdb://x/y")
    refused = "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test"
    err = one_error(capsys, ["report", "--database-url", refused])
    assert err.startswith(
        "llmobs report: cannot use the store postgresql+psycopg://postgres:***@127.0.0.1:1/test: "
    )
    assert "Connection refused" in err
    assert "s3cret" not in err
    assert files_under(workdir) == []


@needs_postgres
def test_postgres_wrong_database_and_no_tables(capsys) -> None:
    base = sa.engine.make_url(POSTGRES_URL)
    wrong = base.set(database=f"nope_{uuid.uuid4().hex[:8]}").render_as_string(hide_password=False)
    err = one_error(capsys, ["report", "--database-url", wrong])
    assert err.startswith(f"llmobs report: cannot use the store {wrong}: ") and "does not exist" in err
    empty = _fresh_postgres_url()  # a schema with no tables
    err = one_error(capsys, ["traces", "--database-url", empty])
    assert (
        err
        == f"llmobs traces: no llmobs tables in {empty}; run `llmobs demo` or point --database-url at your "
        "store"
    )


def test_stores_that_cannot_be_read(tmp_path: Path, store: str, capsys) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table notes (body text)")
    err = one_error(capsys, ["report", "--database-url", f"sqlite:///{other}"])
    assert err == (
        f"llmobs report: no llmobs tables in sqlite:///{other}; run `llmobs demo` or point --database-url "
        "at your store"
    )
    err = one_error(capsys, ["traces", "--database-url", f"sqlite:///{tmp_path}"])
    assert err.startswith(f"llmobs traces: no store at {tmp_path}: it is a directory, not a SQLite file;")
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some text that is long enough " * 20)
    err = one_error(capsys, ["report", "--database-url", f"sqlite:///{text}"])
    assert err == f"llmobs report: cannot use the store sqlite:///{text}: file is not a database"
    path = store.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:  # as a newer llmobs-callbacks would leave it
        conn.execute("update llmobs_schema set version = 99")
    err = one_error(capsys, ["trace", "abc", "--database-url", store])
    assert err == (
        f"llmobs trace: the store {store} is at schema version 99, newer than this llmobs-callbacks "
        "(version 2); upgrade llmobs-callbacks to read it"
    )


def test_bad_values_are_one_line(store: str, tmp_path: Path, busy_port: int, capsys) -> None:
    db = ["--database-url", store]
    cases = [
        (["report", *db, "--since", "yesterday"],
         "llmobs report: not a time: 'yesterday' (e.g. 30m, 24h, 7d or an ISO time such as 2026-01-15"),
        (["traces", *db, "--until", "soon"], "llmobs traces: not a time: 'soon'"),
        (["traces", *db, "--min-latency", "fast"], "llmobs traces: --min-latency 'fast': expected millis"),
        (["gate", *db, "--baseline", "v1", "--candidate", "v2", "--max-cost-increase", "abc"],
         "llmobs gate: --max-cost-increase 'abc': expected a fraction (0.2), a percentage (20%) or off"),
        (["anomalies", *db, "--set", "nonsense=1"], "llmobs anomalies: --set 'nonsense=1': expected NAME="),
        (["anomalies", *db, "--window", "an hour"], "llmobs anomalies: not a duration: 'an hour'"),
        (["export-grafana", "-o", str(tmp_path / "missing-dir" / "x.json")],
         f"llmobs export-grafana: cannot write {tmp_path / 'missing-dir' / 'x.json'}: no such directory"),
        (["export-alerts", "-o", str(tmp_path)], f"llmobs export-alerts: cannot write {tmp_path}: Is a dir"),
        (["serve-metrics", *db, "--port", str(busy_port)],
         f"llmobs serve-metrics: cannot serve on 127.0.0.1:{busy_port}: the address is already in use"),
        (["serve-metrics", *db, "--since", "last week"], "llmobs serve-metrics: not a time: 'last week'"),
        (["judge", *db, "--since", "yesterday", "--rules-only"], "llmobs judge: not a time: 'yesterday'"),
        (["demo", "--database-url", ""], "llmobs demo: --database-url is empty"),
        (["demo", *db, "--hours", "0"], "llmobs demo: --hours, --requests-per-hour and --traces must be"),
    ]  # fmt: skip
    for argv, start in cases:
        assert one_error(capsys, argv).startswith(start), argv
    assert not (tmp_path / "missing-dir").exists()


def test_usage_errors_are_short(capsys) -> None:
    cases = [
        (["report", "--bogus"], "llmobs report: No such option: --bogus (see 'llmobs report --help')"),
        (["report", "--format", "xml"], "llmobs report: Invalid value for '--format'"),
        (["traces", "--limit", "0"], "llmobs traces: Invalid value for '--limit'"),
        (["gate", "--max-cost-increase", "10%"], "llmobs gate: Missing option '--baseline'"),
        (
            ["export-alerts", "--p99-latency", "abc"],
            "llmobs export-alerts: Invalid value for '--p99-latency'",
        ),
        (["trace"], "llmobs trace: Missing argument 'ID'"),
        (["frobnicate"], "llmobs: No such command 'frobnicate'"),
    ]
    for argv, start in cases:
        err = one_error(capsys, argv)
        assert err.startswith(start) and err.endswith(f"(see '{err.split(':')[0]} --help')"), err


def test_version_help_and_debug(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"llmobs-callbacks {__version__}\n"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "report", "traces", "trace", "sessions", "session", "anomalies", "gate",
                    "judge", "export-grafana", "export-alerts", "serve-metrics", "ui"):  # fmt: skip
        assert re.search(rf"^  {command} ", out, re.M), command
    assert main([]) == 2 and "Commands:" in capsys.readouterr().out
    for argv in (
        ["--debug", "report", "--database-url", "notaurl"],
        ["report", "--database-url", "notaurl", "--debug"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):") and "ArgumentError" in err
        assert err.splitlines()[-1] == (
            "llmobs report: not a database URL: 'notaurl' "
            "(e.g. sqlite:///llmobs.db or postgresql+psycopg://user@host:5432/db)"
        )


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("llmobs_callbacks.ui") is not None, reason="the ui is installed"
)
def test_ui_without_the_extra_says_what_to_install(store: str, capsys) -> None:
    err = one_error(capsys, ["ui", "--database-url", store])
    assert err == "llmobs ui: the web UI needs the ui extra: pip install 'llmobs-callbacks[ui]'"


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """The real command line in its own process (a traceback would reach its stderr)."""
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    environ.pop("LLMOBS_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "llmobs_callbacks.cli", *args],
        capture_output=True, text=True, env=environ, cwd=cwd, timeout=120,
    )  # fmt: skip


def test_no_traceback_reaches_stderr_of_the_process(store: str, workdir: Path, busy_port: int) -> None:
    cases = [
        (["report", "--database-url", "notaurl"], "llmobs report: not a database URL: 'notaurl'"),
        (["report"], f"llmobs report: no store at {workdir / 'llmobs.db'}; run `llmobs demo`"),
        (["report", "--database-url", ""], "llmobs report: --database-url is empty"),
        (["report", "--database-url", store, "--since", "never"], "llmobs report: not a time: 'never'"),
        (["serve-metrics", "--database-url", store, "--port", str(busy_port)],
         f"llmobs serve-metrics: cannot serve on 127.0.0.1:{busy_port}: the address is already in use"),
        (["export-grafana", "-o", "missing-dir/x.json"], "llmobs export-grafana: cannot write missing-dir/"),
        (["traces", "--format", "xml"], "llmobs traces: Invalid value for '--format'"),
    ]  # fmt: skip
    for argv, start in cases:
        done = run_cli(*argv, cwd=workdir)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stdout == "" and done.stderr.count("\n") == 1 and done.stderr.startswith(start), (
            done.stderr
        )
    assert files_under(workdir) == []
    done = run_cli("--debug", "report", "--database-url", "notaurl", cwd=workdir)
    assert done.returncode == 2 and "Traceback (most recent call last)" in done.stderr
    done = run_cli("--version")
    assert (done.returncode, done.stdout) == (0, f"llmobs-callbacks {__version__}\n")


# -- read-only opening ----------------------------------------------------------------------------


def test_readers_create_nothing_next_to_a_store(store: str, capsys) -> None:
    directory = Path(store.removeprefix("sqlite:///")).parent
    ids = TraceStore(store, read_only=True).find_traces()["trace_id"].tolist()
    for argv in (["report"], ["traces"], ["trace", ids[0][:8]], ["sessions"], ["session", "s-1"],
                 ["anomalies"], ["report", "--format", "json"]):  # fmt: skip
        assert main([*argv, "--database-url", store]) == 0, argv
    capsys.readouterr()
    assert files_under(directory) == [str(directory / "llmobs.db")]  # no -wal, no -shm
    # the same through the helper: SQLAlchemy and ADBC reads, nothing written
    engine = open_store_readonly(store)
    with engine.connect() as conn, pytest.raises(sa.exc.OperationalError, match="readonly"):
        conn.execute(sa.text("delete from spans"))
    engine.dispose()
    with TraceStore(store, read_only=True) as ts:
        statements: list[str] = []
        if ts.reader == "adbc-sqlite":
            ts._reader.trace = statements.append  # type: ignore[union-attr]
        assert len(ts.find_traces()) == 3
        assert statements or ts.reader == "sqlalchemy"  # read through ADBC when it is installed
    assert files_under(directory) == [str(directory / "llmobs.db")]
    with pytest.raises(StoreNotFoundError, match="no store at"):
        TraceStore(store + "-missing", read_only=True)


def test_readers_on_either_database(db_url: str, capsys) -> None:
    """The read-only opening on SQLite and PostgreSQL: the same rows through every reader."""
    import json

    ids = write_traces(db_url, 3, version="v7")
    assert main(["traces", "--database-url", db_url, "--format", "json"]) == 0
    assert sorted(r["trace_id"] for r in json.loads(capsys.readouterr().out)) == sorted(ids)
    assert main(["report", "--database-url", db_url, "--format", "json"]) == 0
    assert [(r["group"], r["requests"]) for r in json.loads(capsys.readouterr().out)] == [("v7", 3)]
    assert main(["trace", ids[0], "--database-url", db_url]) == 0
    assert capsys.readouterr().out.startswith(f"trace {ids[0]}  ")
    assert main(["session", "s-1", "--database-url", db_url]) == 0
    assert "       user: question 1" in capsys.readouterr().out.splitlines()


WRITER = """
import os, sys, time, uuid
from llmobs_callbacks import LLMObs
url, stop = sys.argv[1], sys.argv[2]
total = 0
with LLMObs(url, prometheus_registry=None) as obs:
    while not os.path.exists(stop):
        for _ in range(25):
            tid = str(uuid.uuid4())
            obs.recorder.start(tid, None, "chain", "app", "manual", input="q", metadata={"user_id": "u"})
            obs.recorder.end(tid, output="a")
        assert obs.flush(10)
        total += 25
        print(total, flush=True)
        time.sleep(0.02)
"""


def test_reading_a_store_while_an_llmobs_writes_it(tmp_path: Path, capsys) -> None:
    """An LLMObs in another process writes batches until told to stop; each read (the CLI, and
    TraceStore through ADBC) sees at least every batch committed before it, never fewer than the
    read before it, through the writer's WAL; nothing is left by the readers."""
    import json

    path = tmp_path / "live.db"
    url = f"sqlite:///{path}"
    script, stop = tmp_path / "writer.py", tmp_path / "stop"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen(
        [sys.executable, str(script), url, str(stop)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert writer.stdout is not None
    counts, uris = [], set()
    try:
        for _ in range(6):
            committed = int(writer.stdout.readline())  # a batch is stored
            uris.add(readonly_sqlite_uri(path))
            assert main(["traces", "--database-url", url, "--format", "json", "--limit", "100000"]) == 0
            counts.append(len(json.loads(capsys.readouterr().out)))
            assert counts[-1] >= committed
            with TraceStore(url, read_only=True) as ts:
                assert len(ts.find_traces(limit=None)) >= counts[-1]
    finally:
        stop.touch()
        rest = writer.stdout.read().split()
        writer.wait(60)
    assert writer.returncode == 0
    assert counts == sorted(counts), counts
    assert uris == {f"file:{path}?mode=ro"}  # read through the writer's WAL, not around it
    total = int(rest[-1]) if rest else committed
    assert main(["traces", "--database-url", url, "--format", "json", "--limit", "100000"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == total  # everything, once the writer closed
    before = files_under(tmp_path)
    assert main(["report", "--database-url", url]) == 0
    assert files_under(tmp_path) == before


# -- the demo's next steps ------------------------------------------------------------------------


def test_demo_ends_with_next_steps_that_run(tmp_path: Path, monkeypatch, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    monkeypatch.delenv("LLMOBS_DATABASE_URL", raising=False)
    argv = ["demo", "--database-url", url, "--traces", "80", "--hours", "2", "--switch-at-hour", "1"]
    assert main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    steps = out.split("\nnext, try:\n", 1)[1].splitlines()
    commands = [re.split(r"\s{2,}", line.strip())[0] for line in steps]
    assert commands[0] == f"export LLMOBS_DATABASE_URL='{url}'"  # not the default store: say so
    names = [c.split()[1] for c in commands[1:] if c.startswith("llmobs ")]
    assert names == ["report", "traces", "trace", "sessions", "anomalies", "gate", "ui"]
    monkeypatch.setenv("LLMOBS_DATABASE_URL", url)
    with TraceStore(url, read_only=True) as ts:
        costliest = ts.find_traces(sort="cost", limit=1)["trace_id"].iloc[0]
    expected = {"report": 0, "traces": 0, "trace": 0, "sessions": 0, "anomalies": 0, "gate": 1}
    for command in commands[1:]:
        words = shlex.split(command)
        if words[0] != "llmobs" or words[1] == "ui":  # the ui serves until stopped
            continue
        assert main(words[1:]) == expected[words[1]], command
        printed = capsys.readouterr().out
        if words[1] == "trace":
            assert costliest.startswith(words[2]) and printed.startswith(f"trace {costliest}")
        if words[1] == "gate":
            assert "FAIL" in printed
    page = re.search(r"the web UI at http://127\.0\.0\.1:8790/ \(this request: (/traces/\S+)\)", out)
    assert page, out
    from starlette.testclient import TestClient

    from llmobs_callbacks.ui import create_app

    with TestClient(create_app(url)) as client:
        shown = client.get(page.group(1))
    assert shown.status_code == 200 and costliest in shown.text
    session = re.search(r"`llmobs session (\S+)` prints one", out)
    assert session and main(["session", session.group(1)]) == 0
    assert session.group(1) in capsys.readouterr().out


def test_progress_does_not_reach_stdout(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert (
        main(["demo", "--database-url", url, "--traces", "10", "--hours", "1", "--switch-at-hour", "-1"]) == 0
    )
    captured = capsys.readouterr()
    assert "replaying a day" in captured.err and "10/10" in captured.err
    assert "replaying a day" not in captured.out and captured.out.startswith("replayed 10 demo requests")
