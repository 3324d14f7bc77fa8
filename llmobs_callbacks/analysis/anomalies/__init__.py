"""Anomaly detection over the store: what changed in the last ``window`` against the ``baseline``.

``detect_anomalies(store, now, window="1h", baseline="24h")`` compares the window
``[now - window, now)`` with the baseline just before it, ``[now - window - baseline, now - window)``,
and returns :class:`Anomaly` records (``type``, ``severity``, the group concerned, ``current``,
``baseline``, ``change`` and a one-line ``explanation``).

How groups are compared. Request metrics (tokens, cost, latency, errors), the branch mix and
quality scores are checked per prompt version (and model). A version that was already serving in
the first half of the baseline is *established* and compared with its own baseline. A version
that appeared later is *new*: all its requests since it appeared are compared with the traffic of
the other versions in the baseline (same model first), so a prompt update is named as soon as it
serves ``min_requests`` requests and stays flagged until it is established — what it changed is
then the new normal.

Two detectors per metric, each needing a minimum sample size:

- **rules** — the seed's thresholds (:class:`AnomalyThresholds`), each also required to be
  statistically significant (``rule_alpha``) so small samples cannot trip them;
- **statistics** — a robust z-score of the current value against the baseline's per-``window``
  buckets (median and MAD, so a regression already inside the baseline does not hide itself),
  exact tests for rates and shares (Fisher, binomial) at ``alpha``, with small effect floors.

A finding of both detectors is ``critical``, of one ``warning``; ``new_prompt_version`` is
``info``. Nothing here writes to the store.
"""

from ..queries import LOWER_IS_BETTER
from .data import Data, load, requests, score_values
from .detectors import Detector, backtest, detect_anomalies
from .formatting import format_anomalies
from .model import SEVERITIES, TYPES, Anomaly, AnomalyThresholds, with_thresholds

__all__ = [
    "LOWER_IS_BETTER",
    "SEVERITIES",
    "TYPES",
    "Anomaly",
    "AnomalyThresholds",
    "Data",
    "Detector",
    "backtest",
    "detect_anomalies",
    "format_anomalies",
    "load",
    "requests",
    "score_values",
    "with_thresholds",
]
