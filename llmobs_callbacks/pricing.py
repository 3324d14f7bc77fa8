"""Old import path of ``prepare/pricing.py``: this name is that module (kept for existing imports)."""

import sys

from .prepare import pricing as _module

sys.modules[__name__] = _module
