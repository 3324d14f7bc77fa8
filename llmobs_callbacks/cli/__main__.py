"""``python -m llmobs_callbacks.cli``: the ``llmobs`` command."""

import sys

from .app import main

sys.exit(main())
