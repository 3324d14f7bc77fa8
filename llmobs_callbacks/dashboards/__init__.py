"""A Grafana dashboard and Prometheus alerting rules for the ``llmobs_*`` metrics, as code.

Both are generated from :class:`Thresholds`, so budgets and limits are configurable
(``llmobs export-grafana`` / ``llmobs export-alerts``); the files generated with the defaults
ship in the package (``llmobs_callbacks/assets/``, see :func:`asset_path`). Regenerate them
after changing this package: ``python -m llmobs_callbacks.dashboards``. Metric names come from
``llmobs_callbacks.sinks.metric_names``, as the exporter's do.

Every PromQL expression here is checked against a real Prometheus by the test-suite
(``tests/test_prometheus_integration.py``) and every alert by ``promtool test rules``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from .grafana import (
    DASHBOARD_UID,
    DEFAULT_VARIABLES,
    dashboard_queries,
    grafana_dashboard,
    resolve,
    variable_queries,
)
from .promql import RATING_METRICS, Thresholds
from .rules import alert_rules, alerts_yaml

DASHBOARD_FILE = "grafana-dashboard.json"
ALERTS_FILE = "prometheus-alerts.yml"

__all__ = [
    "ALERTS_FILE",
    "DASHBOARD_FILE",
    "DASHBOARD_UID",
    "DEFAULT_VARIABLES",
    "RATING_METRICS",
    "Thresholds",
    "alert_rules",
    "alerts_yaml",
    "asset_path",
    "dashboard_json",
    "dashboard_queries",
    "grafana_dashboard",
    "resolve",
    "variable_queries",
    "write_default_assets",
]


def dashboard_json(t: Thresholds | None = None, **kwargs: Any) -> str:
    """The dashboard for thresholds ``t`` as JSON text (``kwargs``: ``grafana_dashboard``'s)."""
    return json.dumps(grafana_dashboard(t, **kwargs), indent=2) + "\n"


def asset_path(name: str) -> Path:
    """Path of a shipped asset (``grafana-dashboard.json``, ``prometheus-alerts.yml``)."""
    return Path(str(resources.files("llmobs_callbacks") / "assets" / name))


def write_default_assets(directory: Path | None = None) -> list[Path]:
    """(Re)generate the shipped files with the default thresholds."""
    directory = directory or asset_path(DASHBOARD_FILE).parent
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in ((DASHBOARD_FILE, dashboard_json()), (ALERTS_FILE, alerts_yaml())):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
