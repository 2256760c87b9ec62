"""Small numeric helpers shared by the trace analyses."""

from __future__ import annotations

from typing import Callable, Optional, Sequence


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

    def merge(self, other: "TopSlowest") -> None:
        for value, trace_id in other.items:
            self.add(value, trace_id)

    def ids(self) -> tuple[str, ...]:
        return tuple(t for _, t in self.items)


def merge_into(into: dict, other: dict, maxima: frozenset = frozenset()) -> None:
    """Add the tallies of ``other`` (an aggregator's table from another process) into ``into``.

    Numbers add (or take the larger, for keys in ``maxima``), lists extend, sets unite,
    nested dicts merge, ``TopSlowest`` keeps the slowest of both; text keeps the first seen.
    """
    for key, value in other.items():
        if key in into:
            into[key] = _combine(into[key], value, key in maxima, maxima)
        else:
            into[key] = value


def rekey(table: dict, fold: Callable[[tuple], tuple], position: Optional[int] = 0) -> dict:
    """``table`` with the entry key at ``position`` of each key (the key itself if None) passed through ``fold``.

    Rows whose keys meet are combined as ``merge_into`` combines them: used to fold the
    pages of a catch-all route past the cap into the route's one "other" row.
    """
    out: dict = {}
    for key, value in table.items():
        new = fold(key) if position is None else key[:position] + (fold(key[position]),) + key[position + 1:]
        out[new] = _combine(out[new], value, False, frozenset()) if new in out else value
    return out


def _combine(mine, theirs, take_max: bool, maxima: frozenset):
    if isinstance(mine, TopSlowest) or hasattr(mine, "merge"):
        mine.merge(theirs)
        return mine
    if mine is None or isinstance(mine, (str, bool, tuple)):
        return theirs if mine is None else mine
    if isinstance(mine, (int, float)):
        return max(mine, theirs) if take_max else mine + theirs
    if isinstance(mine, list):
        mine.extend(theirs)
        return mine
    if isinstance(mine, set):
        mine |= theirs
        return mine
    if isinstance(mine, dict):
        merge_into(mine, theirs, maxima)
        return mine
    raise TypeError(f"cannot merge {type(mine).__name__}")
