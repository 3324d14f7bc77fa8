"""Old import path of ``prepare/secrets.py``: this name is that module (kept for existing imports)."""

import sys

from .prepare import secrets as _module

sys.modules[__name__] = _module
