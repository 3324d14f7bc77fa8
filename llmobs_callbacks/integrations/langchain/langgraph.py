"""LangGraph's knowledge: routes and ``Command``/``Send`` destinations read from a chain's output,
interrupted runs and their resumes, a graph's end."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

from ...recorder import Recorder


def may_route(outputs: Any) -> bool:
    """Cheap pre-check on every chain end: only these output types can carry a route."""
    return isinstance(outputs, (str, list, tuple)) or type(outputs).__name__ in ("Send", "Command")


def _destination(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if type(item).__name__ == "Send":
        node = getattr(item, "node", None)
        return node if isinstance(node, str) else None
    return None


def route_destinations(outputs: Any) -> list[str] | None:
    """Node names a path function returned: a str, a Send, or a list of them."""
    items = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    if not items:
        return None
    names = [_destination(item) for item in items]
    if any(n is None for n in names):
        return None
    return names  # type: ignore[return-value]


def command_destinations(outputs: Any) -> list[str] | None:
    """Destinations of a LangGraph ``Command(goto=...)`` returned by a node."""
    commands = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    names: list[str] = []
    for command in commands:
        if type(command).__name__ != "Command":
            continue
        goto = getattr(command, "goto", None)
        if not goto:
            continue
        routes = route_destinations(goto)
        names.extend(routes or ())
    return names or None


# -- LangGraph interrupts and resumes ------------------------------------------------------------

INTERRUPT_CLASSES = frozenset({"GraphInterrupt", "NodeInterrupt"})
_MAX_INTERRUPTED_SESSIONS = 10_000


class _Interrupted:
    """Per recorder: the last interrupted root trace of each session (bounded, oldest out)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_session: OrderedDict[str, str] = OrderedDict()


_INTERRUPTED: weakref.WeakKeyDictionary[Recorder, _Interrupted] = weakref.WeakKeyDictionary()
_INTERRUPTED_LOCK = threading.Lock()


def _interrupted_sessions(recorder: Recorder) -> _Interrupted:
    state = _INTERRUPTED.get(recorder)
    if state is None:
        with _INTERRUPTED_LOCK:
            state = _INTERRUPTED.setdefault(recorder, _Interrupted())
    return state


def mark_interrupted(recorder: Recorder, run_id: Any) -> None:
    """A run raised LangGraph's interrupt: its trace's root (still open) is marked."""
    span = recorder.get(run_id)
    root = recorder.get(span.trace_id) if span is not None else None
    if root is not None and root.parent_span_id is None:
        if root.metadata is None:
            root.metadata = {}
        root.metadata["interrupted"] = True


def root_ending(recorder: Recorder, run_id: Any, outputs: Any) -> None:
    """Before a root run ends: an interrupted graph run is remembered for its session; a run
    resuming it (input ``Command(resume=...)``) gets ``resumed_from_trace_id`` naming it.

    LangGraph 1.x returns normally from an interrupted run (the node raised ``GraphInterrupt``,
    the result carries ``__interrupt__``); older versions raise it out of the root. The map is
    in this process: a resume served by another process has ``resumed`` but no link."""
    root = recorder.get(run_id)
    if root is None or root.parent_span_id is not None:
        return
    metadata = root.metadata
    interrupted = bool(metadata and metadata.get("interrupted")) or (
        isinstance(outputs, dict) and "__interrupt__" in outputs
    )
    command = root.input
    resumed = type(command).__name__ == "Command" and getattr(command, "resume", None) is not None
    if not (interrupted or resumed):
        return
    if metadata is None:
        metadata = root.metadata = {}
    session = root.session_id
    state = _interrupted_sessions(recorder)
    with state.lock:
        if resumed:
            metadata["resumed"] = True
            earlier = state.by_session.pop(session, None) if session is not None else None
            if earlier is not None:
                metadata["resumed_from_trace_id"] = earlier
        if interrupted:
            metadata["interrupted"] = True
            if session is not None:
                state.by_session[session] = str(root.trace_id)
                state.by_session.move_to_end(session)
                if len(state.by_session) > _MAX_INTERRUPTED_SESSIONS:
                    state.by_session.popitem(last=False)
