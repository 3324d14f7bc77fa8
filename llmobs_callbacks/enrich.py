"""Old import path of ``prepare/preparer.py``: this name is that module (kept for existing imports)."""

import sys

from .prepare import preparer as _module

sys.modules[__name__] = _module
