"""Old import path of ``sinks/prometheus/labels.py``: this name is that module (kept for existing imports)."""

import sys

from .sinks.prometheus import labels as _module

sys.modules[__name__] = _module
