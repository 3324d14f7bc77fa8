"""The notebooks, executed by a real kernel on a `llmobs demo` store: every plot cell shows a
picture, every table has rows, the demo's store is only read, and without a store the first
store cell says what to run and stops there."""

from __future__ import annotations

import base64
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("langgraph")

from nbclient.exceptions import CellExecutionError  # noqa: E402

from llmobs_callbacks.demo import Scenario, simulate  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
NAMES = ["01_quickstart.ipynb", "02_cost_and_tokens.ipynb", "03_quality_and_drift.ipynb"]
# `llmobs demo --hours 6 --requests-per-hour 20 --switch-at-hour 4`: small, v1 then v2
SMALL_DEMO = Scenario(hours=6, requests_per_hour=20, switch_at_hour=4)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TABLES = ("spans", "scores", "retrieved_documents", "branch_decisions", "prompt_versions")
MISSING = "run `make demo` (or `llmobs demo`) first"


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "llmobs.db"
    simulate(f"sqlite:///{path}", SMALL_DEMO, prometheus_registry=None)
    return path


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the repository's layout: pyproject.toml at the root, the notebooks below it
    (their directory is the kernel's working directory, as in Jupyter)."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'checkout'\n")
    shutil.copytree(NOTEBOOKS[0].parent, tmp_path / "notebooks")
    return tmp_path


def read_only(path: Path) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True))


def copy_store(source: Path, target: Path) -> None:
    with read_only(source) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def store_rows(path: Path) -> dict[str, int]:
    with read_only(path) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def execute(path: Path) -> nbformat.NotebookNode:
    """Run ``path`` from a clean slate (the committed outputs dropped) in a fresh python3 kernel
    with the test's environment, in the notebook's directory."""
    nb = nbformat.read(path, as_version=4)
    for cell in code_cells(nb):
        cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    finally:
        path.with_suffix(".executed.ipynb").write_text(nbformat.writes(nb))  # to look at when it fails
    return nb


def code_cells(nb: nbformat.NotebookNode) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def text(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed or showed as text."""
    parts = []
    for cell in code_cells(nb):
        for output in cell.outputs:
            parts.append(output.get("text", ""))
            parts.extend(output.get("data", {}).get(t, "") for t in ("text/plain", "text/html"))
            parts.extend(output.get("traceback", []))
    return "\n".join(parts)


def images(cell) -> list[bytes]:
    return [
        base64.b64decode(o.data["image/png"])
        for o in cell.outputs
        if o.output_type in ("execute_result", "display_data") and "image/png" in o.data
    ]


def dataframe_rows(cell) -> int:
    """Body rows of the DataFrame the cell showed (pandas' HTML table)."""
    [html] = [o.data["text/html"] for o in cell.outputs if o.output_type == "execute_result"]
    assert 'class="dataframe"' in html, cell.source
    [body] = re.findall(r"<tbody>(.*?)</tbody>", html, re.S)
    return body.count("<tr")


def assert_pictures_and_tables(name: str, nb: nbformat.NotebookNode) -> None:
    cells = code_cells(nb)
    plots = [c for c in cells if "plot" in c.metadata.get("tags", [])]
    assert plots == [c for c in cells if "ts.plot." in c.source], name  # every plot cell is checked
    for cell in plots:
        pngs = images(cell)  # one picture, whatever the backend
        shown = [sorted(o.get("data", {})) for o in cell.outputs]
        assert len(pngs) == 1, f"{name}: {cell.source!r} showed {shown}, not one PNG"
        assert pngs[0].startswith(PNG_SIGNATURE), cell.source
    tables = [c for c in cells if "table" in c.metadata.get("tags", [])]
    assert tables, name
    for cell in tables:
        assert dataframe_rows(cell) > 0, cell.source


def test_notebooks_on_the_store_in_the_environment(
    demo_store: Path, checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$LLMOBS_DATABASE_URL names the store; matplotlib's backend is the kernel's own (inline)."""
    url = f"sqlite:///{demo_store}"
    monkeypatch.setenv("LLMOBS_DATABASE_URL", url)  # the kernel inherits the environment
    monkeypatch.delenv("MPLBACKEND", raising=False)
    copy_store(demo_store, checkout / "llmobs.db")  # a root store too: the environment must win
    rows = store_rows(demo_store)
    assert [p.name for p in NOTEBOOKS] == NAMES
    executed = {p.name: execute(checkout / "notebooks" / p.name) for p in NOTEBOOKS}
    for name, nb in executed.items():
        assert f"TraceStore({url!r})" in text(nb), name
        assert_pictures_and_tables(name, nb)
    assert [len([c for c in code_cells(executed[n]) if "ts.plot." in c.source]) for n in NAMES] == [0, 2, 1]

    quickstart = text(executed["01_quickstart.ipynb"])
    # the chain it instrumented, read back from its own store as a tree
    assert "llm GenericFakeChatModel" in quickstart and "tokens 21→7" in quickstart
    # ... and a trace of the demo's graph
    assert "chain support_bot" in quickstart
    # the demo's store was only read: the quickstart's trace is not in it
    assert store_rows(demo_store) == rows
    with read_only(demo_store) as conn:
        versions = {v for (v,) in conn.execute("SELECT DISTINCT prompt_version FROM spans")}
        services = {s for (s,) in conn.execute("SELECT DISTINCT service FROM spans")}
    assert "q1" not in versions and "quickstart" not in services
    # ... nor anywhere else: its store was a temporary one, nothing was written where Jupyter runs
    written = {p.name for p in (checkout / "notebooks").iterdir()}
    assert written == set(NAMES) | {n.replace(".ipynb", ".executed.ipynb") for n in NAMES}

    drift = executed["03_quality_and_drift.ipynb"]
    [compare] = [c for c in code_cells(drift) if "ts.compare(" in c.source]
    header = re.search(r"<thead>(.*?)</thead>", compare.outputs[0].data["text/html"], re.S).group(1)
    assert re.findall(r"<th>(\w+)</th>", header)[:4] == ["v1", "v2", "delta", "relative"]
    assert "q1" not in text(drift)
    # the drift notebook finds the case study's regression an hour after v2 shipped
    assert "token_spike" in text(drift) and "prompt version v2" in text(drift)


def test_notebooks_find_the_root_store_with_a_non_display_backend(
    demo_store: Path, checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No $LLMOBS_DATABASE_URL: the repository root's llmobs.db (what `make demo` writes), found
    from notebooks/; MPLBACKEND=Agg, as a headless runner would force."""
    monkeypatch.delenv("LLMOBS_DATABASE_URL", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    root_store = checkout / "llmobs.db"
    copy_store(demo_store, root_store)
    (checkout / "notebooks" / "llmobs.db").write_bytes(b"")  # a stale file where Jupyter runs
    rows = store_rows(root_store)
    for name in NAMES[:2]:
        nb = execute(checkout / "notebooks" / name)
        assert f"TraceStore('sqlite:///{root_store.as_posix()}')" in text(nb), name
        assert_pictures_and_tables(name, nb)
    assert store_rows(root_store) == rows


@pytest.mark.parametrize("name", NAMES)
def test_without_a_store_the_notebook_says_what_to_run(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "absent" / "llmobs.db"
    monkeypatch.setenv("LLMOBS_DATABASE_URL", f"sqlite:///{missing}")
    shutil.copy(NOTEBOOKS[0].parent / name, tmp_path / name)
    assert_stops_at_the_store_cell(tmp_path / name, f"No store at {missing}: {MISSING}")
    assert not missing.parent.exists()  # reading never creates a store


def test_without_a_root_store_the_quickstart_names_the_root(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMOBS_DATABASE_URL", raising=False)
    before = sorted(checkout.rglob("*"))
    nb = assert_stops_at_the_store_cell(
        checkout / "notebooks" / NAMES[0], f"No store at {checkout / 'llmobs.db'}: {MISSING}"
    )
    # the live example before it needs no store, and still ran
    assert "llm GenericFakeChatModel" in text(nb)
    after = sorted(p for p in checkout.rglob("*") if not p.name.endswith(".executed.ipynb"))
    assert after == before


def assert_stops_at_the_store_cell(path: Path, message: str) -> nbformat.NotebookNode:
    """The cell that opens the store shows ``message`` (one line, no traceback), and nothing
    after it ran (Jupyter's "Run All" stops there)."""
    with pytest.raises(CellExecutionError) as caught:
        execute(path)
    assert caught.value.ename == "StoreNotFound"
    nb = nbformat.read(path.with_suffix(".executed.ipynb"), as_version=4)
    cells = code_cells(nb)
    [stopped] = [i for i, c in enumerate(cells) if any(o.output_type == "error" for o in c.outputs)]
    assert "find_store()" in cells[stopped].source
    [error] = cells[stopped].outputs
    assert len(error.traceback) == 1 and error.traceback[0].startswith(message)
    assert "Traceback" not in text(nb)
    assert all(not c.outputs and c.execution_count is None for c in cells[stopped + 1 :])
    return nb


def test_the_committed_notebooks_carry_their_outputs() -> None:
    """What a reader on GitHub sees: every code cell executed, in order, without errors; the
    plots as pictures, the tables with rows."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        cells = code_cells(nb)
        assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), path.name
        assert all(c.outputs for c in cells), path.name
        assert not [o for c in cells for o in c.outputs if o.output_type == "error"], path.name
        assert_pictures_and_tables(path.name, nb)
