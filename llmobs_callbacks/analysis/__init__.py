"""Reading the store: ``TraceStore`` (pandas DataFrames, trace trees, plots) and the report."""

from .locate import StoreNotFound, find_store
from .store import TraceStore
from .tree import TraceTree

__all__ = ["StoreNotFound", "TraceStore", "TraceTree", "find_store"]
