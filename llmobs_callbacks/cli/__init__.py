"""The ``llmobs`` command line (Typer + Rich): ``main`` is the console script's entry point.

One module per command group: ``report``, ``browse`` (traces, trace, sessions, session),
``demo``, ``judge``, ``anomalies``, ``gate``, ``export`` (export-grafana, export-alerts),
``serve`` (serve-metrics, ui); ``stores`` opens the store (read-only for readers), ``errors``
turns every failure into one line, ``output`` prints tables, JSON and CSV.
"""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
