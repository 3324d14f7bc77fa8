"""Overview, sessions, prompts, anomalies and gate pages (engineer "insights" fills this in)."""

from __future__ import annotations

routes: list = []
