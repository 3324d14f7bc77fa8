"""Matplotlib figures over a ``TraceStore``: no pyplot, no display needed, shown inline in notebooks."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

try:
    from matplotlib.figure import Figure
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("plots need matplotlib: pip install 'llmobs-callbacks[analysis]'") from exc

if TYPE_CHECKING:  # pragma: no cover
    from .reader import StoreReader


class InlineFigure(Figure):
    """A matplotlib ``Figure`` that shows itself in Jupyter, JupyterLab and VS Code.

    A bare ``Figure`` made without pyplot has no rich representation: IPython prints
    ``<Figure size 800x350 with 1 Axes>`` unless the inline backend happens to have registered
    its formatter. IPython's display formatter asks an object for ``_repr_png_``, so this one
    renders whatever backend is active (inline, Agg, none). It is still a ``Figure``:
    ``savefig``, ``axes`` and the rest work as usual. When the inline backend has registered
    a formatter for ``Figure`` (``%matplotlib inline``), IPython uses that one instead, with
    the user's ``figure_formats``; either way the picture appears once.
    """

    def _repr_png_(self) -> bytes:
        # savefig draws with the Agg canvas for PNG whatever canvas the figure has: works headless.
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def _figure(**kwargs: Any) -> InlineFigure:
    return InlineFigure(figsize=kwargs.pop("figsize", (8, 3.5)), layout="constrained", **kwargs)


class Plots:
    def __init__(self, store: StoreReader) -> None:
        self._store = store

    def latency(
        self,
        by: str = "prompt_version",
        freq: str = "1h",
        q: float = 0.95,
        since: Any = None,
        until: Any = None,
    ) -> InlineFigure:
        """The ``q`` quantile of request latency per ``freq`` bucket, one line per ``by`` group."""
        traces = self._store.traces(since=since, until=until, scores=False)
        key = {"root": "name"}.get(by, by)
        fig = _figure()
        ax = fig.add_subplot()
        if len(traces):
            import pandas as pd

            traces[key] = traces[key].fillna("(none)")
            series = traces.groupby([key, pd.Grouper(key="start_time", freq=freq)])["latency_ms"].quantile(q)
            for group, values in series.groupby(level=0):
                ax.plot(values.index.get_level_values(1), values.to_numpy(), marker="o", label=str(group))
            ax.legend(title=by)
        ax.set_title(f"p{q * 100:g} latency per {freq}")
        ax.set_ylabel("ms")
        return fig

    def cost(
        self, by: str | None = "model", freq: str = "1h", since: Any = None, until: Any = None
    ) -> InlineFigure:
        """LLM spend per ``freq`` bucket, stacked by ``by``."""
        table = self._store.cost(by=by, freq=freq, since=since, until=until)
        fig = _figure()
        ax = fig.add_subplot()
        if len(table):
            bottom = None
            width = (table.index[1] - table.index[0]) * 0.8 if len(table) > 1 else 0.03
            for column in table.columns:
                ax.bar(table.index, table[column].to_numpy(), width=width, bottom=bottom, label=str(column))
                bottom = table[column].to_numpy() if bottom is None else bottom + table[column].to_numpy()
            ax.legend(title=by)
        ax.set_title(f"LLM cost per {freq}")
        ax.set_ylabel("USD")
        return fig

    def tokens_by_version(self, since: Any = None, until: Any = None) -> InlineFigure:
        """Mean input and output tokens per request, per prompt version."""
        summary = self._store.summary(by="prompt_version", since=since, until=until)
        fig = _figure()
        ax = fig.add_subplot()
        if len(summary):
            x = range(len(summary))
            ax.bar([i - 0.2 for i in x], summary["input_tokens_per_request"], width=0.4, label="input")
            ax.bar([i + 0.2 for i in x], summary["output_tokens_per_request"], width=0.4, label="output")
            ax.set_xticks(list(x), [str(v) for v in summary.index])
            ax.legend()
        ax.set_title("tokens per request by prompt version")
        ax.set_ylabel("tokens")
        return fig
