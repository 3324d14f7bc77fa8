"""Old import path of ``prepare/usage.py``: this name is that module (kept for existing imports)."""

import sys

from .prepare import usage as _module

sys.modules[__name__] = _module
