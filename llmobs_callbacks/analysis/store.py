"""``TraceStore``: the store as pandas DataFrames, trace trees (``reader.StoreReader``), anomalies,
the release gate and plots — the notebook entry point. The analysis modules take a
``StoreReader`` and import nothing from here: the dependency points one way. They are imported
on first use, so ``import llmobs_callbacks.analysis`` costs what it did before the split.
"""

from __future__ import annotations

from typing import Any

from .reader import CONTENT_COLUMNS, SPAN_COLUMNS, StoreReader

__all__ = ["CONTENT_COLUMNS", "SPAN_COLUMNS", "StoreReader", "TraceStore"]


class TraceStore(StoreReader):
    """Read the llmobs store into pandas (``pip install 'llmobs-callbacks[analysis]'``).

    >>> ts = TraceStore("sqlite:///llmobs.db")
    >>> ts.traces(since="24h")                       # one row per request
    >>> ts.summary(by="prompt_version", since="7d")  # p50/p95/p99, tokens, cost, errors, scores
    >>> ts.trace(trace_id)                           # an indented tree; a waterfall in Jupyter
    """

    def anomalies(
        self,
        now: Any = None,
        window: str = "1h",
        baseline: str = "24h",
        thresholds: Any = None,
        types: Any = None,
        include_internal: bool = False,
    ) -> list[Any]:
        """Anomalies of the ``window`` before ``now`` against the ``baseline`` before it (token,
        cost and latency spikes, error rates, tool failures, empty retrievals, branch shifts,
        quality drops, new prompt versions), most severe first. See ``analysis/anomalies/``."""
        from .anomalies import detect_anomalies

        return detect_anomalies(
            self,
            now=now,
            window=window,
            baseline=baseline,
            thresholds=thresholds,
            types=types,
            include_internal=include_internal,
        )

    def gate(self, baseline: str, candidate: str, criteria: Any = None, **options: Any) -> Any:
        """Release gate: ``candidate`` vs ``baseline`` prompt version (``by="model"``: model);
        a ``GateResult`` with per-criterion pass/fail and ``exit_code``. See ``analysis/gate/``."""
        from .gate import run_gate

        return run_gate(self, baseline, candidate, criteria, **options)

    @property
    def plot(self) -> Any:
        """Matplotlib figures: ``ts.plot.latency()``, ``ts.plot.cost()``, ``ts.plot.tokens_by_version()``."""
        from .plots import Plots  # matplotlib is optional: imported on first use

        return Plots(self)
