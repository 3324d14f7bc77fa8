"""Matplotlib figures over a ``TraceStore`` (``Figure`` objects: no pyplot, no display needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .store import TraceStore


def _figure(**kwargs: Any) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'llmobs-callbacks[analysis]'") from exc
    # A bare Figure renders with the Agg canvas on savefig and shows inline in Jupyter,
    # whatever backend pyplot would pick: it works headless.
    return Figure(figsize=kwargs.pop("figsize", (8, 3.5)), layout="constrained", **kwargs)


class Plots:
    def __init__(self, store: TraceStore) -> None:
        self._store = store

    def latency(
        self,
        by: str = "prompt_version",
        freq: str = "1h",
        q: float = 0.95,
        since: Any = None,
        until: Any = None,
    ) -> Figure:
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
    ) -> Figure:
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

    def tokens_by_version(self, since: Any = None, until: Any = None) -> Figure:
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
