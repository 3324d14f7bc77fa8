"""Old import path of ``prepare/redaction.py``: this name is that module (kept for existing imports)."""

import sys

from .prepare import redaction as _module

sys.modules[__name__] = _module
