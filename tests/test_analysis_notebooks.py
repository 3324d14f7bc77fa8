"""The notebooks run top to bottom on a fresh `llmobs demo` store."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmobs_callbacks.cli import main

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_notebooks_execute_on_a_demo_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert (
        main(
            [
                "demo",
                "--database-url",
                url,
                "--hours",
                "6",
                "--requests-per-hour",
                "20",
                "--switch-at-hour",
                "4",
            ]
        )
        == 0
    )
    capsys.readouterr()
    monkeypatch.setenv("LLMOBS_DATABASE_URL", url)  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "Agg")
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_cost_and_tokens.ipynb",
        "03_quality_and_drift.ipynb",
    ]
    printed = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(
            nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute()
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert any(o.output_type in ("execute_result", "display_data") for o in outputs), path.name
        printed[path.name] = "".join(o.get("text", "") for o in outputs)
    # the quickstart printed a trace tree, whose root is the demo graph
    assert "chain support_bot" in printed["01_quickstart.ipynb"]
    # ... and the chain it instrumented itself, read back from the store as a tree
    assert "GenericFakeChatModel" in printed["01_quickstart.ipynb"]
    # the drift notebook finds the case study's regression an hour after v2 shipped
    assert "token_spike" in printed["03_quality_and_drift.ipynb"]
    assert "prompt version v2" in printed["03_quality_and_drift.ipynb"]
