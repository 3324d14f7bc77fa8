"""Old import path of ``prepare/prompts.py``: this name is that module (kept for existing imports)."""

import sys

from .prepare import prompts as _module

sys.modules[__name__] = _module
