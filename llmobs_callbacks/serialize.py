"""Old import path of ``prepare/serialize.py``: this name is that module (kept for existing imports)."""

import sys

from .prepare import serialize as _module

sys.modules[__name__] = _module
