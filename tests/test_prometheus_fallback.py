"""The batched histogram update relies on prometheus-client's private value cells; without them
in the expected shape it must fall back on the public ``observe`` and give the same samples."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import values as prom_values

from llmobs_callbacks.sinks.prometheus import metrics

VALUES = [(0.005, "t1"), (0.3, None), (0.3, "t2"), (7.0, "t3"), (math.inf, None), (1e9, "t4"), (0.02, None)]


class PublicOnly:
    """A histogram child as its public API shows it: ``observe`` only."""

    def __init__(self, child: Any) -> None:
        self._child = child

    def observe(self, value: float, exemplar: dict[str, str] | None = None) -> None:
        self._child.observe(value, exemplar)


class ChangedCells(PublicOnly):
    """A release that kept the names but changed what they hold (cumulative counts as ints)."""

    def __init__(self, child: Any) -> None:
        super().__init__(child)
        self._upper_bounds = child._upper_bounds
        self._buckets = [0] * len(child._upper_bounds)
        self._sum = 0.0


def _samples(registry: CollectorRegistry) -> list[tuple]:
    out = []
    for metric in registry.collect():
        for s in metric.samples:
            if not s.name.endswith("_created"):
                exemplar = None if s.exemplar is None else (s.exemplar.labels, s.exemplar.value)
                out.append((s.name, tuple(sorted(s.labels.items())), s.value, exemplar))
    return sorted(out, key=repr)


def _histogram() -> tuple[CollectorRegistry, Any]:
    registry = CollectorRegistry()
    return registry, Histogram("llmobs_test_seconds", "test", ["model"], registry=registry).labels("m")


@pytest.mark.parametrize("wrap", [PublicOnly, ChangedCells])
def test_batched_update_falls_back_on_observe_with_equal_samples(wrap: type) -> None:
    batched_registry, batched = _histogram()
    assert metrics._value_cells(batched) is not None  # this prometheus-client: the fast path
    metrics._observe_many(batched, VALUES)

    fallback_registry, child = _histogram()
    wrapped = wrap(child)
    assert metrics._value_cells(wrapped) is None
    metrics._observe_many(wrapped, VALUES)

    got, want = _samples(batched_registry), _samples(fallback_registry)
    assert [s[:3] for s in got] == [s[:3] for s in want]
    count = [s for s in want if s[0] == "llmobs_test_seconds_count"]
    assert count and count[0][2] == len(VALUES)
    # Exemplars: the last one of each bucket in both paths.
    assert [s[3] for s in got] == [s[3] for s in want]


def test_multiprocess_mode_without_the_private_value_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert metrics.multiprocess_mode() is (prom_values.ValueClass is not prom_values.MutexValue)
    monkeypatch.delattr(prom_values, "MutexValue")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert metrics.multiprocess_mode() is False
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/llmobs-prom")
    assert metrics.multiprocess_mode() is True
