"""Deterministic sampling by trace id: the same trace is in or out in every process."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict


def sample_fraction(trace_id: object) -> float:
    """``sha256(str(trace_id))`` mapped onto [0, 1): stable across processes and runs."""
    digest = hashlib.sha256(str(trace_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class Sampler:
    """Decides which finished traces are judged.

    A trace is judged when ``sample_fraction(trace_id) < rate``, where ``rate`` is
    ``sample_rate``, raised to ``error_sample_rate`` for traces whose root failed and to
    ``new_prompt_sample_rate`` for prompt versions this process first saw less than
    ``new_prompt_window_h`` hours ago. Because every rate compares the same fraction, a trace
    sampled at 5 % is also sampled at 20 %.
    """

    def __init__(
        self,
        sample_rate: float,
        *,
        error_sample_rate: float | None = None,
        new_prompt_sample_rate: float | None = None,
        new_prompt_window_h: float = 24.0,
        clock: object = time.time,
        max_prompt_versions: int = 10_000,
    ) -> None:
        for name, value in (
            ("sample_rate", sample_rate),
            ("error_sample_rate", error_sample_rate),
            ("new_prompt_sample_rate", new_prompt_sample_rate),
        ):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        self.sample_rate = sample_rate
        self.error_sample_rate = error_sample_rate
        self.new_prompt_sample_rate = new_prompt_sample_rate
        self.new_prompt_window_s = new_prompt_window_h * 3600.0
        self._clock = clock
        self._first_seen: OrderedDict[str, float] = OrderedDict()
        self._max_versions = max_prompt_versions
        self._lock = threading.Lock()

    @property
    def max_rate(self) -> float:
        """The highest rate any trace can get (traces above it are never judged)."""
        return max(self.sample_rate, self.error_sample_rate or 0.0, self.new_prompt_sample_rate or 0.0)

    def might_sample(self, trace_id: object) -> bool:
        return sample_fraction(trace_id) < self.max_rate

    def see_prompt_version(self, prompt_version: str | None, at: float | None = None) -> float | None:
        """Remember when a prompt version was first seen; returns that time."""
        if prompt_version is None:
            return None
        with self._lock:
            first = self._first_seen.get(prompt_version)
            if first is None:
                first = self._first_seen[prompt_version] = at if at is not None else self._clock()  # type: ignore[operator]
                if len(self._first_seen) > self._max_versions:
                    self._first_seen.popitem(last=False)
            return first

    def rate_for(self, *, is_error: bool = False, prompt_version: str | None = None) -> float:
        rate = self.sample_rate
        if is_error and self.error_sample_rate is not None:
            rate = max(rate, self.error_sample_rate)
        if self.new_prompt_sample_rate is not None and prompt_version is not None:
            first = self.see_prompt_version(prompt_version)
            if first is not None and self._clock() - first < self.new_prompt_window_s:  # type: ignore[operator]
                rate = max(rate, self.new_prompt_sample_rate)
        return rate

    def should_sample(
        self, trace_id: object, *, is_error: bool = False, prompt_version: str | None = None
    ) -> bool:
        return sample_fraction(trace_id) < self.rate_for(is_error=is_error, prompt_version=prompt_version)
