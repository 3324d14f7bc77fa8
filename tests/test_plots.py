"""``ts.plot.*`` figures show themselves in IPython (a PNG), whatever backend is active, and are
still matplotlib ``Figure`` objects."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("langgraph")
formatters = pytest.importorskip("IPython.core.formatters")

from matplotlib.figure import Figure  # noqa: E402

from llmobs_callbacks.analysis import TraceStore  # noqa: E402
from llmobs_callbacks.demo import Scenario, simulate  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (the first one, right after the signature)."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    url = f"sqlite:///{tmp_path_factory.mktemp('plots') / 'demo.db'}"
    simulate(url, Scenario(hours=3, requests_per_hour=10, switch_at_hour=2), prometheus_registry=None)
    with TraceStore(url) as ts:
        yield ts


def figures(ts: TraceStore) -> dict[str, Figure]:
    return {
        "latency": ts.plot.latency(freq="1h"),
        "cost": ts.plot.cost(by="prompt_version", freq="1h"),
        "tokens_by_version": ts.plot.tokens_by_version(),
    }


def test_each_plot_renders_itself_as_a_png(store: TraceStore) -> None:
    for name, fig in figures(store).items():
        png = fig._repr_png_()
        # figsize 8 x 3.5 inches at matplotlib's 100 dpi
        assert png_size(png) == (800, 350), name
        # what IPython (Jupyter, JupyterLab, VS Code) asks an object for when it displays it
        data, _ = formatters.DisplayFormatter().format(fig)
        assert data["image/png"][:8] == PNG_SIGNATURE, name
        assert data["text/plain"].startswith("<InlineFigure size 800x350 with 1 Axes>"), name


def test_a_bare_figure_would_show_no_picture() -> None:
    # why the plots use their own Figure class: without the inline backend's formatter, IPython
    # has only the text repr of a plain Figure
    fig = Figure()
    fig.add_subplot().plot([1, 2])
    data, _ = formatters.DisplayFormatter().format(fig)
    assert list(data) == ["text/plain"]


def test_plots_are_still_figures_that_save(store: TraceStore, tmp_path: Path) -> None:
    fig = store.plot.tokens_by_version()
    assert isinstance(fig, Figure)
    target = tmp_path / "tokens.png"
    fig.savefig(target)
    assert png_size(target.read_bytes()) == (800, 350)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg")
    assert b"<svg" in buffer.getvalue()
    # the versions on the x axis are the store's
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["v1", "v2"]
