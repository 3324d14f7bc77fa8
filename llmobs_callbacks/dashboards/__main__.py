"""``python -m llmobs_callbacks.dashboards``: regenerate the shipped dashboard and rules."""

from . import write_default_assets

for path in write_default_assets():
    print(f"wrote {path}")
