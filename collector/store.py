"""The store's write API: what the receiver and ``traces import`` use.

    store = SpanStore(path)            # creates the file and schema if needed
    result = store.write([batch, ...])  # one transaction; durable when it returns
    store.close()

An ``IngestBatch`` is what ``convert`` makes of one OTLP request: span rows,
per-trace summaries, metric rows, and the resources they reference by digest.
``write`` stores several batches in one transaction (the receiver's group
commit), resolving resource digests to row ids, merging trace summaries, and
ignoring spans the store already has (same trace and span id), so clients that
retry and files imported twice never duplicate a span.

Only one ``SpanStore`` should write a file at a time; a second writer (an
import while the collector runs) waits for SQLite's lock, which is safe.
Retention lives in ``retention.py``; readers use ``read.py``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from takealook.collector.schema import METRIC_COLUMNS, SPAN_COLUMNS, connect_writer

RESOURCE_INDEX = SPAN_COLUMNS.index("resource_id")
METRIC_RESOURCE_INDEX = METRIC_COLUMNS.index("resource_id")


@dataclass
class TraceInfo:
    """What one batch knows about one trace; merged into the ``traces`` table."""

    start_ns: int
    end_ns: int
    services: set[str] = field(default_factory=set)
    endpoints: set[tuple[str, str]] = field(default_factory=set)  # (service, route) of server spans


@dataclass
class IngestBatch:
    """Rows converted from one request, not yet stored.

    ``spans`` rows follow ``schema.SPAN_COLUMNS`` and ``metrics`` rows
    ``schema.METRIC_COLUMNS``, with the resource *digest* in the resource_id
    column; ``resources`` maps digest -> (service, attributes JSON).
    """

    spans: list[list] = field(default_factory=list)
    traces: dict[str, TraceInfo] = field(default_factory=dict)
    metrics: list[list] = field(default_factory=list)
    resources: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.spans) + len(self.metrics)


@dataclass(frozen=True)
class WriteResult:
    spans_new: int  # spans stored by this write
    spans_duplicate: int  # spans the store already had
    points_new: int
    points_duplicate: int


_INSERT_SPAN = f"INSERT OR IGNORE INTO spans ({', '.join(SPAN_COLUMNS)}) VALUES ({', '.join('?' * len(SPAN_COLUMNS))})"
_INSERT_POINT = (f"INSERT OR IGNORE INTO metric_points ({', '.join(METRIC_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(METRIC_COLUMNS))})")
_INSERT_RESOURCE = "INSERT OR IGNORE INTO resources (digest, service, attributes) VALUES (?, ?, ?)"
_RESOURCE_ID = "SELECT id FROM resources WHERE digest = ?"
_TRACES_OF = "SELECT trace_id, start_ns, end_ns, services, endpoints FROM traces WHERE trace_id IN ({marks})"
_UPSERT_TRACE = """
INSERT INTO traces (trace_id, start_ns, end_ns, services, endpoints, received_ns) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (trace_id) DO UPDATE SET start_ns = excluded.start_ns, end_ns = excluded.end_ns,
    services = excluded.services, endpoints = excluded.endpoints, received_ns = excluded.received_ns
"""


class SpanStore:
    """The single writer of one store file."""

    def __init__(self, path: str | Path, synchronous: str = "FULL"):
        self.path = Path(path)
        self.conn: sqlite3.Connection = connect_writer(self.path, synchronous)
        self._resource_ids: dict[str, int] = {}

    def close(self) -> None:
        try:
            # Fold the WAL back into the database so the file is whole on its own.
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # a reader holds an old snapshot; the WAL is still valid, just not folded
        self.conn.close()

    def write(self, batches: Sequence[IngestBatch]) -> WriteResult:
        """Store ``batches`` in one transaction; when this returns they are committed."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = self._write(batches)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _write(self, batches: Sequence[IngestBatch]) -> WriteResult:
        conn = self.conn
        ids = self._resolve_resources(batches)
        spans: list[list] = []
        points: list[list] = []
        traces: dict[str, TraceInfo] = {}
        for batch in batches:
            for row in batch.spans:
                row[RESOURCE_INDEX] = ids[row[RESOURCE_INDEX]]
            spans.extend(batch.spans)
            for row in batch.metrics:
                row[METRIC_RESOURCE_INDEX] = ids[row[METRIC_RESOURCE_INDEX]]
            points.extend(batch.metrics)
            for trace_id, info in batch.traces.items():
                _merge(traces, trace_id, info)
        before = conn.total_changes
        conn.executemany(_INSERT_SPAN, spans)
        spans_new = conn.total_changes - before
        if traces:
            self._merge_traces(traces)
        before = conn.total_changes
        if points:
            conn.executemany(_INSERT_POINT, points)
        points_new = conn.total_changes - before
        return WriteResult(spans_new, len(spans) - spans_new, points_new, len(points) - points_new)

    def _resolve_resources(self, batches: Sequence[IngestBatch]) -> dict[str, int]:
        ids = self._resource_ids
        for batch in batches:
            for digest, (service, attributes) in batch.resources.items():
                if digest not in ids:
                    self.conn.execute(_INSERT_RESOURCE, (digest, service, attributes))
                    ids[digest] = self.conn.execute(_RESOURCE_ID, (digest,)).fetchone()[0]
        return ids

    def _merge_traces(self, traces: dict[str, TraceInfo]) -> None:
        # Read-modify-write is safe: we hold the write lock (BEGIN IMMEDIATE).
        keys = list(traces)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            sql = _TRACES_OF.format(marks=",".join("?" * len(chunk)))
            for trace_id, start_ns, end_ns, services, endpoints in self.conn.execute(sql, chunk):
                info = traces[trace_id]
                info.start_ns = min(info.start_ns, start_ns)
                info.end_ns = max(info.end_ns, end_ns)
                info.services.update(s for s in services.split("\n") if s)
                info.endpoints.update(tuple(e.split("\t", 1)) for e in endpoints.split("\n") if e)
        now = time.time_ns()
        self.conn.executemany(_UPSERT_TRACE, (
            (trace_id, info.start_ns, info.end_ns, _join(sorted(_clean(s) for s in info.services)),
             _join(sorted(f"{_clean(s)}\t{_clean(r)}" for s, r in info.endpoints)), now)
            for trace_id, info in traces.items()
        ))


def _merge(into: dict[str, TraceInfo], trace_id: str, info: TraceInfo) -> None:
    known = into.get(trace_id)
    if known is None:
        into[trace_id] = TraceInfo(info.start_ns, info.end_ns, set(info.services), set(info.endpoints))
        return
    known.start_ns = min(known.start_ns, info.start_ns)
    known.end_ns = max(known.end_ns, info.end_ns)
    known.services |= info.services
    known.endpoints |= info.endpoints


def _join(items) -> str:
    """Newline-delimited with newlines at both ends, so instr() matches whole items."""
    items = list(items)
    return "\n" + "\n".join(items) + "\n" if items else ""


def _clean(item: str) -> str:
    # The delimiters of the traces table's lists may not appear inside an item.
    return item.replace("\n", " ").replace("\t", " ")
