"""The store's read API: what the analyzers and the load-test generator use.

    from takealook.collector import open_store

    with open_store(".takealook/spans.db") as store:
        print(store.summary())
        for spans in store.iter_traces(since_ns=..., service="orders"):
            ...  # spans: list[Span] of one whole trace, sorted by start time

Readers open the file read-only and never block the collector writing to it
(SQLite WAL): a reader sees the store as of the moment each query starts, and
``iter_traces`` pages through traces with short queries, so a long report does
not pin one old snapshot.

Load-test traffic (requests marked by ``takealook load run``, see
``takealook.loadmark``) is stored like any other, with its run label per trace.
The trace reads take ``load``: ``True`` (the default) returns every trace,
``False`` leaves load tests out, a run label returns that run's traces only.
Analyses pass ``False`` unless the user asks otherwise; ``load_runs()`` says
what they left out. Each trace ``iter_traces`` yields is a ``TraceSpans``: a
list of spans whose ``load`` attribute is its run label (None: real traffic).

Everything returned is a ``takealook.collector.model.Span`` or ``MetricPoint``;
semantic-convention names are already resolved into their typed fields.
Times are nanoseconds since the epoch; ``since_ns`` is inclusive, ``until_ns``
exclusive. Errors are ``InputError`` with one line saying what to do: no store
at the path, a file that is not a store, a store written by a newer takealook,
or (unless ``allow_empty=True``) a store with no spans and no metric points.
"""

from __future__ import annotations

import gc
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

from takealook.collector import read_sample
from takealook.collector.location import StoreURL, parse_store
from takealook.collector.model import KINDS, EntryGroup, STATUSES, MetricPoint, Span, TraceSpans, new_span
from takealook.collector.schema import (
    ATTRSET_SELECT, METRIC_COLUMNS, SPAN_SELECT, SPAN_SELECT_WITH_TRACE_ID, TEMPORALITIES,
    connect_reader,
)
from takealook.errors import InputError

DEFAULT_BATCH = 500  # traces fetched per query by iter_traces
# Which load-test traffic a read returns: True all traffic, False none of it, a run label only that run's.
Load = Union[bool, str]
LOAD_ATTRIBUTE = "takealook.load"  # on the agent's metric points of load-test requests
_ATTRSET_CACHE = 50_000  # attribute sets a reader remembers (cleared when full)


@dataclass(frozen=True)
class StoreSummary:
    path: str
    schema_version: int
    spans: int
    traces: int
    metric_points: int
    services: tuple[str, ...]
    start_ns: Optional[int]  # earliest span start, None when empty
    end_ns: Optional[int]  # latest span end, None when empty
    size_bytes: int  # the database file plus its write-ahead log


def open_store(path: "str | os.PathLike | StoreURL", *, allow_empty: bool = False) -> "StoreReader":
    """Open the span store at ``path`` for reading; InputError if it cannot be used.

    ``path`` is an SQLite file, or a ClickHouse table by URL (``chdb:DIR``, ``clickhouse://...``; see
    ``location.py``), read by ``clickhouse_read.ClickHouseReader`` with the same methods.
    """
    where = parse_store(path)
    if isinstance(where, StoreURL):
        from takealook.collector.clickhouse_read import ClickHouseReader

        reader = ClickHouseReader(where)
    else:
        reader = StoreReader(where)
    if not allow_empty and reader._is_empty():
        reader.close()
        raise InputError(
            f"the span store {path} has no spans yet: send traces to `takealook collect` "
            "or load files with `takealook traces import FILE`"
        )
    return reader


_METRIC_SELECT = "SELECT " + ", ".join(METRIC_COLUMNS) + " FROM metric_points"

# Keyset pagination over traces by (start_ns, tkey): each page is one short query.
_TRACE_PAGE = """
SELECT start_ns, tkey, trace_id, {load} FROM traces
WHERE (start_ns, tkey) > (?, ?) AND start_ns < ? {filters}
ORDER BY start_ns, tkey
LIMIT ?
"""
_TKEY_OF = "SELECT tkey, trace_id, {load} FROM traces WHERE trace_id = ?"
_TRACE_COUNT = "SELECT count(*) FROM traces WHERE start_ns >= ? AND start_ns < ? {filters}"
# services: "\na\nb\n"; endpoints: "\nservice\troute\n" (see schema.py).
_SERVICE_FILTER = " AND instr(services, char(10) || ? || char(10)) > 0"
_ROUTE_FILTER = " AND instr(endpoints, char(9) || ? || char(10)) > 0"
_ENDPOINT_FILTER = " AND instr(endpoints, char(10) || ? || char(9) || ? || char(10)) > 0"

_LOAD_RUNS = ("SELECT load, count(*) FROM traces WHERE load IS NOT NULL AND start_ns >= ? AND start_ns < ? "
              "GROUP BY load ORDER BY load")

_ROOTS = SPAN_SELECT_WITH_TRACE_ID + """
WHERE s.parent_span_id IS NULL AND s.start_ns >= ? AND s.start_ns < ? {filters}
ORDER BY s.start_ns
"""
_ATTRSETS_OF = ATTRSET_SELECT + " WHERE id IN ({marks})"

_MIN_NS = -(2**63)
_MAX_NS = 2**63 - 1


class StoreReader:
    """Read access to one store. Not thread-safe: open one reader per thread."""

    def __init__(self, path: Path):
        self.path = path
        self._conn: sqlite3.Connection = connect_reader(path)
        self._resources: dict[int, tuple[str, str]] = {}  # id -> (service, attributes JSON)
        self._scopes: dict[int, str] = {}
        self._attrsets: dict[int, tuple] = {}  # id -> (http_method, ..., db_fingerprint, attributes)
        # Stores of schema version 1 have no traces.load: everything in them reads as real traffic.
        self._has_load = any(row[1] == "load" for row in self._conn.execute("PRAGMA table_info(traces)"))

    # -- life cycle ---------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- overview -----------------------------------------------------------

    def summary(self) -> StoreSummary:
        q = self._conn.execute
        spans = q("SELECT count(*) FROM spans").fetchone()[0]
        traces = q("SELECT count(*) FROM traces").fetchone()[0]
        points = q("SELECT count(*) FROM metric_points").fetchone()[0]
        services = tuple(r[0] for r in q("SELECT DISTINCT service FROM resources ORDER BY service"))
        start, end = q("SELECT min(start_ns), max(end_ns) FROM traces").fetchone()
        size = sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        version = q("PRAGMA user_version").fetchone()[0]
        return StoreSummary(str(self.path), version, spans, traces, points, services, start, end, size)

    def services(self) -> list[str]:
        """Every service that sent spans or metric points."""
        return [r[0] for r in self._conn.execute("SELECT DISTINCT service FROM resources ORDER BY service")]

    def count_traces(self, since_ns: Optional[int] = None, until_ns: Optional[int] = None,
                     service: Optional[str] = None, route: Optional[str] = None, load: Load = True) -> int:
        """How many traces ``iter_traces`` with the same filters yields (for progress bars)."""
        filters, params = _trace_filters(service, route)
        load_filter, load_params = self._load_filter(load)
        sql = _TRACE_COUNT.format(filters=filters + load_filter)
        return self._conn.execute(sql, (_lo(since_ns), _hi(until_ns), *params, *load_params)).fetchone()[0]

    def load_runs(self, since_ns: Optional[int] = None, until_ns: Optional[int] = None) -> dict[str, int]:
        """Traces of load tests that started in the window, per run label (sorted by label)."""
        if not self._has_load:
            return {}
        return dict(self._conn.execute(_LOAD_RUNS, (_lo(since_ns), _hi(until_ns))).fetchall())

    def _load_filter(self, load: Load, column: str = "load") -> tuple[str, list]:
        if load is True:
            return "", []
        if not self._has_load:  # nothing in the store is marked
            return ("", []) if load is False else (" AND 0", [])
        if load is False:
            return f" AND {column} IS NULL", []
        if not isinstance(load, str) or not load:
            raise ValueError("load must be True, False or a run label")
        return f" AND {column} = ?", [load]

    # -- traces -------------------------------------------------------------

    def iter_traces(self, since_ns: Optional[int] = None, until_ns: Optional[int] = None,
                    service: Optional[str] = None, route: Optional[str] = None,
                    batch: int = DEFAULT_BATCH, load: Load = True) -> Iterator[TraceSpans]:
        """Whole traces that started in [since_ns, until_ns), oldest first.

        ``service``: traces with at least one span of that service. ``route``:
        traces with a server span whose http_route is ``route`` (of ``service``
        when both are given). ``load``: see the module docstring. Each item is
        one trace's spans sorted by start time (a trace may still be arriving
        while you read it), a list with the trace's load-test run label as
        ``.load``. ``batch`` is how many traces are fetched per query; memory
        stays about ``batch`` traces.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        filters, params = _trace_filters(service, route)
        load_filter, load_params = self._load_filter(load)
        page_sql = _TRACE_PAGE.format(filters=filters + load_filter, load="load" if self._has_load else "NULL")
        last: tuple[int, int] = (_lo(since_ns), -1)
        hi = _hi(until_ns)
        while True:
            page = self._conn.execute(page_sql, (*last, hi, *params, *load_params, batch)).fetchall()
            if not page:
                return
            trace_ids = {tkey: trace_id for _, tkey, trace_id, _ in page}
            by_trace = self._spans_of(trace_ids)
            for _, tkey, _, label in page:
                spans = by_trace.get(tkey)
                if spans:  # retention may have removed it between the two queries
                    spans.load = label
                    yield spans
            if len(page) < batch:
                return
            last = page[-1][:2]

    def trace(self, trace_id: str) -> TraceSpans:
        """The spans of one trace sorted by start time (load tests' too); empty when the store does not have it."""
        row = self._conn.execute(_TKEY_OF.format(load="load" if self._has_load else "NULL"),
                                 (trace_id.strip().lower(),)).fetchone()
        if row is None:
            return TraceSpans()
        spans = self._spans_of({row[0]: row[1]}).get(row[0], TraceSpans())
        spans.load = row[2]
        return spans

    def _spans_of(self, trace_ids: dict[int, str]) -> dict[int, TraceSpans]:
        """Spans of the traces ``trace_ids`` (tkey -> trace id), grouped by tkey and sorted by start."""
        # Building thousands of tuples and spans triggers the cycle collector
        # over and over (it scans everything the caller holds, each time), which
        # doubled the time to read a million spans. None of these objects form
        # cycles, so collection is paused while a page is built.
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._build_page(trace_ids)
        finally:
            if paused:
                gc.enable()

    def _build_page(self, trace_ids: dict[int, str]) -> dict[int, TraceSpans]:
        keys = list(trace_ids)
        # Rows come grouped by trace (the IN lookup walks the (tkey, span_id)
        # index in order); sorting by start inside a trace is cheap in SQLite.
        sql = f"{SPAN_SELECT} WHERE tkey IN ({','.join('?' * len(keys))}) ORDER BY tkey, start_ns"
        rows = self._conn.execute(sql, keys).fetchall()
        spans = self._build(rows, trace_ids)
        out: dict[int, TraceSpans] = {}
        current, group = None, None
        for row, span in zip(rows, spans):
            if row[0] != current:
                current = row[0]
                group = out[current] = TraceSpans()
            group.append(span)
        return out

    def _build(self, rows: list[tuple], trace_ids: Optional[dict[int, str]] = None) -> list[Span]:
        """Spans from rows of SPAN_SELECT (with ``trace_ids``: tkey -> trace id) or of
        SPAN_SELECT_WITH_TRACE_ID; attribute sets, resources and scopes come from caches."""
        self._load_attrsets(rows)
        try:
            return self._build_cached(rows, trace_ids)
        except KeyError:  # a resource or scope this reader has not seen yet
            self._load_origins()
            return self._build_cached(rows, trace_ids)

    def _build_cached(self, rows: list[tuple], trace_ids: Optional[dict[int, str]]) -> list[Span]:
        attrsets, resources, scopes, kinds, statuses = (self._attrsets, self._resources, self._scopes, KINDS,
                                                        STATUSES)
        trace_of = trace_ids.__getitem__ if trace_ids is not None else _same
        # Field order of model.Span; r follows schema.SPAN_COLUMNS. resources[id] = (service, JSON).
        return [new_span(trace_of(r[0]), r[1], r[2], resources[r[10]][0], r[3], kinds[r[4]], r[5], r[6],
                         statuses[r[7]], r[8] or "", *attrsets[r[9]], resources[r[10]][1], r[12] or "[]",
                         r[13] or "[]", scopes[r[11]])
                for r in rows]

    def _load_origins(self) -> None:
        self._resources.update((r[0], (r[1], r[2])) for r in self._conn.execute(_RESOURCES))
        self._scopes.update(self._conn.execute("SELECT id, name FROM scopes"))

    # -- reports over large windows (read_sample.py) ------------------------

    def entry_groups(self, since_ns: Optional[int], until_ns: Optional[int], service: Optional[str], load,
                     by_path) -> list[EntryGroup]:
        """Root server spans of the window grouped by service, method, route (and path where ``by_path(route)``
        or there is no route), with each group's requests, failures, 4xx answers and percentiles."""
        self._roots = read_sample.roots(self, _lo(since_ns), _hi(until_ns), service, load)
        return read_sample.entry_groups(self._roots, by_path)

    def sample_traces(self, since_ns: Optional[int], until_ns: Optional[int], service: Optional[str], load,
                      by_path, slowest: int, failed: int, share: int) -> list:
        """A bounded, stratified sample of the window's traces per entry group, for ``read_traces``."""
        listed = getattr(self, "_roots", None)
        if listed is None:
            listed = read_sample.roots(self, _lo(since_ns), _hi(until_ns), service, load)
        self._roots = None
        return read_sample.sample(listed, by_path, slowest, failed, share)

    def read_traces(self, listed: list, batch: int = DEFAULT_BATCH) -> Iterator[TraceSpans]:
        """The whole traces of ``sample_traces``' items, in that order."""
        return read_sample.read(self, listed, batch)

    def whole_traces(self, roots: list, batch: int = DEFAULT_BATCH) -> Iterator[TraceSpans]:
        """The whole traces of ``roots`` (spans of ``root_spans``), in that order; a trace retention removed since
        is skipped. Each page is two lookups by key, so the cost is per trace read, not per trace stored."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        load = "load" if self._has_load else "NULL"
        for at in range(0, len(roots), min(batch, 900)):
            page = roots[at:at + min(batch, 900)]
            ids = list({root.trace_id for root in page})
            found = {row[1]: row for row in self._conn.execute(
                f"SELECT tkey, trace_id, {load} FROM traces WHERE trace_id IN ({','.join('?' * len(ids))})", ids)}
            by_trace = self._spans_of({row[0]: row[1] for row in found.values()})
            for root in page:
                row = found.get(root.trace_id)
                spans = by_trace.get(row[0]) if row is not None else None
                if spans:
                    spans.load = row[2]
                    yield spans

    # -- spans --------------------------------------------------------------

    def root_spans(self, since_ns: Optional[int] = None, until_ns: Optional[int] = None,
                   service: Optional[str] = None, route: Optional[str] = None, load: Load = True) -> Iterator[Span]:
        """Spans without a parent (the user-facing requests), by start time, filtered by
        their own service and http_route, and by their trace's ``load`` mark."""
        filters, params = self._load_filter(load, "t.load")
        if service is not None:
            filters += " AND s.resource_id IN (SELECT id FROM resources WHERE service = ?)"
            params.append(service)
        if route is not None:
            filters += " AND s.attrs_id IN (SELECT id FROM attrsets WHERE http_route = ?)"
            params.append(route)
        cursor = self._conn.execute(_ROOTS.format(filters=filters), (_lo(since_ns), _hi(until_ns), *params))
        while True:
            rows = cursor.fetchmany(2000)
            if not rows:
                return
            yield from self._build(rows)

    def _load_attrsets(self, rows: list[tuple]) -> None:
        """Fetch the attribute sets of ``rows`` that the cache does not have."""
        self._load_attrset_ids({r[9] for r in rows})

    def _load_attrset_ids(self, wanted: set) -> None:
        cache = self._attrsets
        missing = {i for i in wanted if i not in cache}
        if not missing:
            return
        if len(cache) + len(missing) > _ATTRSET_CACHE:
            cache.clear()
            missing = set(wanted)
        ids = list(missing)
        for start in range(0, len(ids), 900):
            chunk = ids[start:start + 900]
            for row in self._conn.execute(_ATTRSETS_OF.format(marks=",".join("?" * len(chunk))), chunk):
                cache[row[0]] = row[1:]

    # -- metrics ------------------------------------------------------------

    def metric_points(self, name: Optional[str] = None, since_ns: Optional[int] = None,
                      until_ns: Optional[int] = None, service: Optional[str] = None,
                      load: Load = True) -> Iterator[MetricPoint]:
        """Histogram points (e.g. ``http.server.request.duration``) whose time is in the window,
        ordered by time. ``unit`` says whether sum and bounds are seconds or milliseconds.

        ``load``: the agent records load-test requests in series of their own, with the run
        label as attribute ``takealook.load``; False leaves them out, a label keeps only its own.
        """
        where, params = ["time_ns >= ?", "time_ns < ?"], [_lo(since_ns), _hi(until_ns)]
        if load is not True:  # the attribute's key in the stored JSON; the label is checked below
            where.append("instr(attributes, ?) " + ("= 0" if load is False else "> 0"))
            params.append(f'"{LOAD_ATTRIBUTE}"')
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if service is not None:
            where.append("service = ?")
            params.append(service)
        sql = f"{_METRIC_SELECT} WHERE {' AND '.join(where)} ORDER BY time_ns"
        for r in self._conn.execute(sql, params):
            if r[14] not in self._resources:
                self._load_origins()
            origin = self._resources.get(r[14], (_UNKNOWN, "{}"))
            if isinstance(load, str) and json.loads(r[13]).get(LOAD_ATTRIBUTE) != load:
                continue
            yield MetricPoint(r[0], r[1], r[2], TEMPORALITIES[r[3]], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                              tuple(json.loads(r[11])), tuple(json.loads(r[12])), r[13], origin[1])

    def _is_empty(self) -> bool:
        q = self._conn.execute
        return (q("SELECT 1 FROM spans LIMIT 1").fetchone() is None
                and q("SELECT 1 FROM metric_points LIMIT 1").fetchone() is None)


_UNKNOWN = "unknown_service"
_RESOURCES = "SELECT id, service, attributes FROM resources"


def _same(value):
    return value


def _lo(ns: Optional[int]) -> int:
    return _MIN_NS if ns is None else int(ns)


def _hi(ns: Optional[int]) -> int:
    return _MAX_NS if ns is None else int(ns)


def _trace_filters(service: Optional[str], route: Optional[str]) -> tuple[str, list]:
    if service is not None and route is not None:
        return _SERVICE_FILTER + _ENDPOINT_FILTER, [service, service, route]
    if service is not None:
        return _SERVICE_FILTER, [service]
    if route is not None:
        return _ROUTE_FILTER, [route]
    return "", []
