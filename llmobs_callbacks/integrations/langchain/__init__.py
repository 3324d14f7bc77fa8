"""LangChain adapter: callback events in, Recorder calls out. Knows LangChain; nothing else does.

Every method is wrapped so that no exception reaches the user's chain: failures are counted
in ``Diagnostics`` and logged once per kind.

``run_inline = True`` on purpose: our methods do no I/O and take microseconds, so running
them in the event-loop thread is cheaper than LangChain's default of a ``run_in_executor``
hop per event during async runs (the thread-pool hand-off costs more than our work, and is a
known source of contention in other tracers). The recorder is locked, so sync runs on many
threads stay safe.


Modules: ``handler`` (the callback handler), ``payloads`` (LangChain objects → span payloads),
``langgraph`` (routes, interrupts and resumes), ``hook`` (process-wide instrumentation).
"""

from ...recorder import GRAPH_END
from .handler import FRAMEWORK, LangChainCallbackHandler
from .hook import call_unrecorded, global_handler, unbind_global

# Imported lazily by LLMObs; re-exported for type checkers and users who subclass it.
__all__ = [
    "FRAMEWORK",
    "GRAPH_END",
    "LangChainCallbackHandler",
    "call_unrecorded",
    "global_handler",
    "unbind_global",
]
