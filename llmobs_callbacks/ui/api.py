"""The JSON API: /api/traces, /api/traces/{trace_id}, /api/summary, POST /api/feedback."""

from __future__ import annotations

routes: list = []
