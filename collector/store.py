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

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from takealook.collector.schema import ATTRSET_COLUMNS, METRIC_COLUMNS, SPAN_COLUMNS, connect_writer

ATTRSET_CACHE = 100_000  # attribute-set ids remembered by the writer
METRIC_RESOURCE_INDEX = METRIC_COLUMNS.index("resource_id")


@dataclass
class TraceInfo:
    """What one batch knows about one trace; merged into the ``traces`` table."""

    start_ns: int
    end_ns: int
    services: set[str] = field(default_factory=set)
    endpoints: set[tuple[str, str]] = field(default_factory=set)  # (service, route) of server spans
    load: Optional[str] = None  # the load-test run label its spans were marked with


@dataclass
class IngestBatch:
    """Rows converted from one request, not yet stored.

    ``spans`` holds groups ``(resource digest, scope name, rows)``: the spans
    of one resource and instrumentation scope. A row is a tuple in
    ``schema.SPAN_COLUMNS`` order without resource_id and scope_id, with the
    trace id (hex) in the tkey column and the converter's *set id* of its
    attribute set in attrs_id ('' for NULL in ``NULLABLE_SPAN_COLUMNS``);
    ``attrsets`` maps set id -> the rest of an ``attrsets`` row
    (``schema.ATTRSET_COLUMNS`` after id). Set ids are unique in the process,
    so the store inserts each set once and reuses its row.
    ``metrics`` rows follow ``schema.METRIC_COLUMNS``, with the resource digest
    in resource_id; ``resources`` maps digest -> (service, attributes JSON).
    """

    spans: list[tuple[str, str, list[tuple]]] = field(default_factory=list)
    attrsets: dict[int, tuple] = field(default_factory=dict)
    traces: dict[str, TraceInfo] = field(default_factory=dict)
    metrics: list[list] = field(default_factory=list)
    resources: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def span_count(self) -> int:
        return sum(len(rows) for _, _, rows in self.spans)

    @property
    def size(self) -> int:
        return self.span_count + len(self.metrics)


@dataclass(frozen=True)
class WriteResult:
    spans_new: int  # spans stored by this write
    spans_duplicate: int  # spans the store already had
    points_new: int
    points_duplicate: int


# NULL travels as '': Python's sqlite3 binds None through its adapter
# protocol, several times slower than a str, and NULLIF restores NULL.
NULLABLE_SPAN_COLUMNS = ("parent_span_id", "status_message", "events", "links")
_INSERT_SPAN = (f"INSERT OR IGNORE INTO spans ({', '.join(SPAN_COLUMNS)}) VALUES "
                f"({', '.join('NULLIF(?, %s)' % repr('') if c in NULLABLE_SPAN_COLUMNS else '?' for c in SPAN_COLUMNS)})")
_INSERT_SCOPE = "INSERT OR IGNORE INTO scopes (name) VALUES (?)"
_SCOPE_ID = "SELECT id FROM scopes WHERE name = ?"
_INSERT_ATTRSET = (f"INSERT INTO attrsets ({', '.join(ATTRSET_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(ATTRSET_COLUMNS))})")
_INSERT_POINT = (f"INSERT OR IGNORE INTO metric_points ({', '.join(METRIC_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(METRIC_COLUMNS))})")
_INSERT_RESOURCE = "INSERT OR IGNORE INTO resources (digest, service, attributes) VALUES (?, ?, ?)"
_RESOURCE_ID = "SELECT id FROM resources WHERE digest = ?"
_TRACES_OF = ("SELECT tkey, trace_id, start_ns, end_ns, services, endpoints, load FROM traces "
              "WHERE trace_id IN ({marks})")
_UPSERT_TRACE = """
INSERT INTO traces (tkey, trace_id, start_ns, end_ns, services, endpoints, received_ns, load)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tkey) DO UPDATE SET start_ns = excluded.start_ns, end_ns = excluded.end_ns,
    services = excluded.services, endpoints = excluded.endpoints, received_ns = excluded.received_ns,
    load = excluded.load
"""
_MAX_TKEY = "SELECT max(tkey) FROM traces"
_MAX_ATTRSET = "SELECT max(id) FROM attrsets"


class SpanStore:
    """The single writer of one store file.

    ``synchronous`` is SQLite's: with "FULL" every commit waits for the disk
    (``write`` returns durable spans). The collector uses "NORMAL" instead and
    calls ``sync`` from another thread before it acknowledges a group: the same
    guarantee, without the writer thread waiting for the disk (see writer.py).
    """

    def __init__(self, path: str | Path, synchronous: str = "FULL"):
        self.path = Path(path)
        self.conn: sqlite3.Connection = connect_writer(self.path, synchronous)
        self._resource_ids: dict[str, int] = {}
        self._scope_ids: dict[str, int] = {}
        self._attrset_ids: dict[int, int] = {}  # converter's set id -> row id; cleared at ATTRSET_CACHE
        self._wal_path = f"{self.path.resolve()}-wal"
        self._wal_fd: Optional[int] = None

    def close(self) -> None:
        try:
            # Fold the WAL back into the database so the file is whole on its own.
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # a reader holds an old snapshot; the WAL is still valid, just not folded
        self.conn.close()
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

    def sync(self) -> None:
        """Make every commit so far durable (fsync the write-ahead log); any thread may call it.

        Commits made with ``synchronous=NORMAL`` are in the OS page cache (they
        survive a killed process) until this returns; then they survive a power
        loss too. Frames that a checkpoint already copied into the database file
        were synced by the checkpoint. Raises OSError if the disk refuses.
        """
        fd = self._wal_fd
        try:
            current = os.stat(self._wal_path).st_ino
        except FileNotFoundError:
            return  # no log: nothing committed since the last full checkpoint
        if fd is None or os.fstat(fd).st_ino != current:
            if fd is not None:
                os.close(fd)
            self._wal_fd = fd = os.open(self._wal_path, os.O_RDONLY)
            _sync_folder(self.path)  # the log's directory entry, once per log file
        os.fdatasync(fd)

    def forget_ids(self) -> None:
        """Drop the cached row ids of resources and attribute sets (after a rollback or a cleanup)."""
        self._attrset_ids.clear()
        self._resource_ids.clear()
        self._scope_ids.clear()

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
            self.forget_ids()  # ids handed out inside the rolled-back transaction do not exist
            raise
        return result

    def _write(self, batches: Sequence[IngestBatch]) -> WriteResult:
        conn = self.conn
        ids = self._resolve_resources(batches)
        sets = self._resolve_attrsets(batches)
        scopes = self._scope_ids
        traces: dict[str, TraceInfo] = {}
        for batch in batches:
            for trace_id, info in batch.traces.items():
                _merge(traces, trace_id, info)
        tkeys = self._merge_traces(traces) if traces else {}
        spans: list[tuple] = []
        points: list[list] = []
        # New rows are built, the batches are not changed: a write that fails
        # is retried with the same batches, and the ids given out by the failed
        # transaction do not exist.
        for batch in batches:
            for digest, scope_name, rows in batch.spans:
                resource = ids[digest]
                scope = scopes.get(scope_name)
                if scope is None:
                    scope = self._scope_id(scope_name)
                spans += [(tkeys[r[0]], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], sets[r[9]], resource, scope,
                           r[10], r[11]) for r in rows]
            for row in batch.metrics:
                row = row.copy()
                row[METRIC_RESOURCE_INDEX] = ids[row[METRIC_RESOURCE_INDEX]]
                points.append(row)
        before = conn.total_changes
        conn.executemany(_INSERT_SPAN, spans)
        spans_new = conn.total_changes - before
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

    def _scope_id(self, name: str) -> int:
        self.conn.execute(_INSERT_SCOPE, (name,))
        number = self._scope_ids[name] = self.conn.execute(_SCOPE_ID, (name,)).fetchone()[0]
        return number

    def _resolve_attrsets(self, batches: Sequence[IngestBatch]) -> dict[int, int]:
        """Row ids of the batches' attribute sets, inserting the ones this writer has not stored."""
        ids = self._attrset_ids
        if len(ids) > ATTRSET_CACHE:
            ids.clear()
        rows = []
        next_id = None
        for batch in batches:
            for set_id, rest in batch.attrsets.items():
                if set_id not in ids:
                    if next_id is None:
                        # We hold the write lock, so numbering new rows ourselves
                        # is safe and lets one executemany insert them all.
                        next_id = (self.conn.execute(_MAX_ATTRSET).fetchone()[0] or 0) + 1
                    ids[set_id] = next_id
                    rows.append((next_id, *rest))
                    next_id += 1
        if rows:
            self.conn.executemany(_INSERT_ATTRSET, rows)
        return ids

    def _merge_traces(self, traces: dict[str, TraceInfo]) -> dict[str, int]:
        """Merge the batches' trace summaries into the traces table; returns trace id -> tkey."""
        # Read-modify-write is safe: we hold the write lock (BEGIN IMMEDIATE).
        tkeys: dict[str, int] = {}
        keys = list(traces)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            sql = _TRACES_OF.format(marks=",".join("?" * len(chunk)))
            for tkey, trace_id, start_ns, end_ns, services, endpoints, load in self.conn.execute(sql, chunk):
                tkeys[trace_id] = tkey
                info = traces[trace_id]
                info.load = info.load or load
                info.start_ns = min(info.start_ns, start_ns)
                info.end_ns = max(info.end_ns, end_ns)
                info.services.update(s for s in services.split("\n") if s)
                info.endpoints.update(tuple(e.split("\t", 1)) for e in endpoints.split("\n") if e)
        if len(tkeys) < len(traces):
            next_key = (self.conn.execute(_MAX_TKEY).fetchone()[0] or 0) + 1
            for trace_id in traces:  # new traces get the next keys, in arrival order
                if trace_id not in tkeys:
                    tkeys[trace_id] = next_key
                    next_key += 1
        now = time.time_ns()
        self.conn.executemany(_UPSERT_TRACE, (
            (tkeys[trace_id], trace_id, info.start_ns, info.end_ns, _join(sorted(_clean(s) for s in info.services)),
             _join(sorted(f"{_clean(s)}\t{_clean(r)}" for s, r in info.endpoints)), now, info.load)
            for trace_id, info in traces.items()
        ))
        return tkeys


def _sync_folder(path: Path) -> None:
    fd = os.open(path.resolve().parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _merge(into: dict[str, TraceInfo], trace_id: str, info: TraceInfo) -> None:
    known = into.get(trace_id)
    if known is None:
        into[trace_id] = TraceInfo(info.start_ns, info.end_ns, set(info.services), set(info.endpoints), info.load)
        return
    known.load = known.load or info.load
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
