"""Reading the store: ``TraceStore`` (pandas DataFrames, trace trees, plots) and the report."""

from .store import TraceStore
from .tree import TraceTree

__all__ = ["TraceStore", "TraceTree"]
