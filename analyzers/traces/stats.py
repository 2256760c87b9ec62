"""Small numeric helpers shared by the trace analyses."""

from __future__ import annotations

from typing import Sequence


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, interpolated linearly between ranks; 0.0 when empty."""
    if not ordered:
        return 0.0
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, p99 of unsorted values."""
    ordered = sorted(values)
    return percentile(ordered, 0.50), percentile(ordered, 0.95), percentile(ordered, 0.99)


def ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


class TopSlowest:
    """The ids of the k slowest items seen so far (for evidence: slowest traces first)."""

    __slots__ = ("k", "items", "floor")

    def __init__(self, k: int):
        self.k = k
        self.items: list[tuple[float, str]] = []
        self.floor = -1.0  # values at or below it cannot enter: test it before calling add()

    def add(self, value: float, trace_id: str) -> None:
        items = self.items
        if value <= self.floor:
            return
        for i, (known, known_id) in enumerate(items):
            if known_id == trace_id:
                if value <= known:
                    return
                del items[i]
                break
        items.append((value, trace_id))
        items.sort(key=lambda item: -item[0])
        del items[self.k:]
        if len(items) >= self.k:
            self.floor = items[-1][0]

    def ids(self) -> tuple[str, ...]:
        return tuple(t for _, t in self.items)
