"""``find_store``: the notebooks' store is ``$LLMOBS_DATABASE_URL`` or the project root's
``llmobs.db``; a missing one is a one-line ``StoreNotFound`` and never a new file."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.runnables import RunnableLambda

from llmobs_callbacks import LLMObs
from llmobs_callbacks.analysis import StoreNotFound, TraceStore, find_store
from llmobs_callbacks.analysis.locate import project_root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout: pyproject.toml at its root, the notebooks one level down; no $LLMOBS_DATABASE_URL."""
    monkeypatch.delenv("LLMOBS_DATABASE_URL", raising=False)
    root = tmp_path / "checkout"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return root


def make_store(path: Path) -> None:
    """A store with one traced request, ``support_bot``."""
    with LLMObs(f"sqlite:///{path}", prometheus_registry=None) as obs:
        config = {"callbacks": [obs.langchain_handler()], "run_name": "support_bot"}
        RunnableLambda(lambda x: x).invoke("hi", config=config)


def test_finds_the_root_store_from_the_notebooks_directory(project: Path) -> None:
    make_store(project / "llmobs.db")
    (project / "notebooks" / "llmobs.db").write_bytes(b"stale")  # e.g. left by an older notebook
    url = find_store(project / "notebooks")
    assert url == f"sqlite:///{(project / 'llmobs.db').as_posix()}"
    with TraceStore(url) as ts:
        assert list(ts.traces()["name"]) == ["support_bot"]


def test_a_git_checkout_is_a_root_too(project: Path) -> None:
    (project / "pyproject.toml").unlink()
    (project / ".git").mkdir()
    assert project_root(project / "notebooks" / "deeper") == project


def test_the_working_directory_is_the_default_start(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_store(project / "llmobs.db")
    monkeypatch.chdir(project / "notebooks")
    assert find_store() == f"sqlite:///{(project / 'llmobs.db').as_posix()}"


def test_a_missing_root_store_names_the_path_and_what_to_run(project: Path) -> None:
    before = sorted(project.rglob("*"))
    with pytest.raises(StoreNotFound) as caught:
        find_store(project / "notebooks")
    expected = f"No store at {project / 'llmobs.db'}: run `make demo` (or `llmobs demo`) first"
    assert str(caught.value).startswith(expected)
    assert "$LLMOBS_DATABASE_URL" in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    # IPython shows exactly this instead of a traceback
    assert caught.value._render_traceback_() == [str(caught.value)]
    assert sorted(project.rglob("*")) == before  # nothing created


def test_the_environment_wins(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_store(project / "llmobs.db")
    elsewhere = tmp_path / "elsewhere.db"
    make_store(elsewhere)
    monkeypatch.setenv("LLMOBS_DATABASE_URL", f"sqlite:///{elsewhere}")
    assert find_store(project / "notebooks") == f"sqlite:///{elsewhere}"
    # other databases are not checked here: TraceStore says what is wrong when it connects
    monkeypatch.setenv("LLMOBS_DATABASE_URL", "postgresql+psycopg://u@db.example/llmobs")
    assert find_store() == "postgresql+psycopg://u@db.example/llmobs"


def test_a_missing_store_in_the_environment_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "absent" / "llmobs.db"
    monkeypatch.setenv("LLMOBS_DATABASE_URL", f"sqlite:///{missing}")
    with pytest.raises(StoreNotFound, match=r"^No store at .*absent/llmobs\.db: run `make demo`"):
        find_store()
    assert not missing.parent.exists()


def test_an_empty_file_is_no_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    monkeypatch.setenv("LLMOBS_DATABASE_URL", f"sqlite:///{empty}")
    with pytest.raises(StoreNotFound, match=r"\(the file is empty\)"):
        find_store()


def test_a_relative_url_is_reported_as_the_file_it_means(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMOBS_DATABASE_URL", "sqlite:///llmobs.db")
    with pytest.raises(StoreNotFound, match=f"^No store at {tmp_path / 'llmobs.db'}:"):
        find_store()


def test_a_url_that_is_not_one_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOBS_DATABASE_URL", "notaurl")
    with pytest.raises(ValueError, match=r"^\$LLMOBS_DATABASE_URL is not a database URL: 'notaurl'$"):
        find_store()
