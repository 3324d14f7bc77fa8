"""The /traces list and the /traces/{trace_id} page."""

from __future__ import annotations

routes: list = []
