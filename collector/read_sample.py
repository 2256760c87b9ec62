"""What an SQLite store answers for reports over large windows: figures over every request, and a sample.

``StoreReader.entry_groups`` and ``sample_traces`` (the same methods as
``clickhouse_read.ClickHouseReader``'s, see ``analyzers/traces/sampling.py``)
read the root span of every trace in the window once, a compact row each
(service, method, route, path, kind, start, duration, status), and count them
here: SQLite has no percentile aggregate. The sample is then read whole, by
the traces' keys (the spans table's primary key), so reading it costs the same
whatever the store's size; the one pass over the roots grows with the window
(a 20th of the spans, in the usual trace of 20).

The random share is picked by a CRC-32 of the trace id: the same traces each
time for the same window.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterator, Optional
from urllib.parse import urlsplit

from takealook.collector.model import EntryGroup

KIND_SERVER = 2
STATUS_ERROR = 2

_ROOTS = """
SELECT t.tkey, t.trace_id, {load}, s.resource_id, s.attrs_id, s.name, s.kind, s.start_ns, s.duration_ns, s.status
FROM traces AS t JOIN spans AS s ON s.tkey = t.tkey
WHERE s.parent_span_id IS NULL AND t.start_ns >= ? AND t.start_ns < ? {filters}
ORDER BY t.start_ns, t.tkey
"""


class Root:
    """One trace's root span, as the grouping needs it."""

    __slots__ = ("tkey", "trace_id", "label", "service", "method", "route", "path", "name", "server", "start",
                 "duration", "failed", "client_error")

    def group(self, by_path: Callable[[str], bool], paged: dict) -> tuple:
        route = self.route
        if route not in paged:
            paged[route] = not route or by_path(route)
        page = self.path if paged[route] else ""
        label = self.name if not self.server or (not route and not self.path) else ""
        return (self.service, self.server, self.method, route, page, label)


def roots(reader, since_ns: int, until_ns: int, service: Optional[str], load) -> list[Root]:
    """The root spans of the traces that started in the window (``iter_traces``'s filters), oldest first."""
    from takealook.collector.read import _trace_filters

    filters, params = _trace_filters(service, None)
    load_filter, load_params = reader._load_filter(load, "t.load")
    sql = _ROOTS.format(load="t.load" if reader._has_load else "NULL",
                        filters=filters.replace("services", "t.services") + load_filter)
    rows = reader._conn.execute(sql, (since_ns, until_ns, *params, *load_params)).fetchall()
    reader._load_attrset_ids({r[4] for r in rows})
    try:
        origins = [reader._resources[r[3]][0] for r in rows]
    except KeyError:
        reader._load_origins()
        origins = [reader._resources.get(r[3], ("unknown_service",))[0] for r in rows]
    out = []
    attrsets = reader._attrsets
    for row, origin in zip(rows, origins):
        method, route, status, path, full = attrsets[row[4]][:5]
        root = Root()
        root.tkey, root.trace_id, root.label, root.service, root.name = row[0], row[1], row[2], origin, row[5]
        root.method, root.route = method or "", route or ""
        root.path = path or (_path(full) if full else "")
        root.server = row[6] == KIND_SERVER
        root.start, root.duration = row[7], row[8]
        root.failed = row[9] == STATUS_ERROR or (root.server and status is not None and status >= 500)
        root.client_error = not root.failed and status is not None and 400 <= status < 500
        out.append(root)
    return out


def entry_groups(listed: list[Root], by_path: Callable[[str], bool]) -> list[EntryGroup]:
    """Server roots grouped and counted as ``ClickHouseReader.entry_groups`` does in SQL."""
    groups: dict[tuple, list[Root]] = {}
    paged: dict = {}
    for root in listed:
        if root.server:
            groups.setdefault(root.group(by_path, paged), []).append(root)
    out = []
    for (service, _, method, route, page, label), members in groups.items():
        durations = sorted(r.duration for r in members)
        out.append(EntryGroup(service, method, route, page, label, len(members), sum(r.failed for r in members),
                              sum(r.client_error for r in members), sum(durations),
                              tuple(_quantile(durations, q) for q in (0.5, 0.95, 0.99)),
                              min(r.start for r in members), max(r.start + r.duration for r in members)))
    out.sort(key=lambda g: -g.requests)
    return out


def sample(listed: list[Root], by_path: Callable[[str], bool], slowest: int, failed: int,
           share: int) -> list[Root]:
    """Per group: its ``slowest`` slowest, up to ``failed`` failed and ``share`` more by hash; oldest first."""
    groups: dict[tuple, list[Root]] = {}
    paged: dict = {}
    for root in listed:
        groups.setdefault(root.group(by_path, paged), []).append(root)
    chosen: dict[int, Root] = {}
    for members in groups.values():
        by_hash = sorted(members, key=lambda r: zlib.crc32(r.trace_id.encode()))
        picks = (sorted(members, key=lambda r: -r.duration)[:slowest]
                 + [r for r in by_hash if r.failed][:failed] + by_hash[:share])
        for root in picks:
            chosen[root.tkey] = root
    return sorted(chosen.values(), key=lambda r: (r.start, r.tkey))


def read(reader, listed: list[Root], batch: int) -> Iterator:
    """The whole traces of ``listed`` roots, in that order, each with its load label."""
    for at in range(0, len(listed), batch):
        page = listed[at:at + batch]
        by_trace = reader._spans_of({r.tkey: r.trace_id for r in page})
        for root in page:
            spans = by_trace.get(root.tkey)
            if spans:
                spans.load = root.label
                yield spans


def _quantile(ordered: list[int], q: float) -> float:
    """Interpolated between ranks, as ClickHouse's quantileExactInclusive and the analyses' percentiles."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _path(url: str) -> str:
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "/"
