"""Retention: drop the oldest traces by age (``--retain 7d``) and size (``--max-size 2GB``).

Whole traces go, oldest first (by their first span's start), with their spans;
metric points go by their own time. Work is done in small transactions
(``chunk`` traces each) from the writer thread, between ingest groups, and is
checked every ``interval_s`` seconds.

Size is the space the store's pages use (``page_count - freelist_count``);
deleting stops when it is under 90% of ``max_bytes`` (so the store does not
hover at the limit), then ``PRAGMA incremental_vacuum`` hands the freed pages
back to the file system. Attribute sets no span uses any more are removed at
the end of a pass (one scan of the spans).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from takealook.collector.store import SpanStore

_LOW_WATER = 0.9

_OLDEST_BEFORE = "SELECT tkey FROM traces WHERE start_ns < ? AND end_ns < ? ORDER BY start_ns LIMIT ?"
_OLDEST = "SELECT tkey, start_ns FROM traces ORDER BY start_ns LIMIT ?"
_DELETE_SPANS = "DELETE FROM spans WHERE tkey IN ({marks})"
_DELETE_TRACES = "DELETE FROM traces WHERE tkey IN ({marks})"
_DELETE_POINTS_BEFORE = ("DELETE FROM metric_points WHERE rowid IN "
                         "(SELECT rowid FROM metric_points WHERE time_ns < ? LIMIT ?)")
_UNUSED_ATTRSETS = "DELETE FROM attrsets WHERE id NOT IN (SELECT attrs_id FROM spans)"
_USED_BYTES = ("SELECT (page_count - freelist_count) * page_size "
               "FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()")


@dataclass
class Retention:
    max_age_ns: Optional[int] = None
    max_bytes: Optional[int] = None
    interval_s: float = 60.0
    chunk: int = 200  # traces per transaction
    _next_check: float = field(default=0.0, repr=False)
    _active: bool = field(default=False, repr=False)
    _deleted_in_pass: int = field(default=0, repr=False)

    def step(self, store: SpanStore) -> int:
        """Do one transaction of retention work if due; returns the traces deleted."""
        now = time.monotonic()
        if not self._active:
            if now < self._next_check:
                return 0
            self._next_check = now + self.interval_s
            self._active, self._deleted_in_pass = True, 0
        deleted = self._chunk(store)
        self._deleted_in_pass += deleted
        if deleted == 0:
            self._active = False
            if self._deleted_in_pass:
                _compact(store)
        return deleted

    def run(self, store: SpanStore) -> int:
        """A whole pass now (for tests and ``traces import``); returns the traces deleted."""
        self._next_check, self._active = 0.0, False
        total = 0
        while True:
            deleted = self.step(store)
            total += deleted
            if not self._active:
                return total

    def _chunk(self, store: SpanStore) -> int:
        conn = store.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            tkeys = self._victims(store)
            if tkeys:
                marks = ",".join("?" * len(tkeys))
                conn.execute(_DELETE_SPANS.format(marks=marks), tkeys)
                conn.execute(_DELETE_TRACES.format(marks=marks), tkeys)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(tkeys)

    def _victims(self, store: SpanStore) -> list[int]:
        conn = store.conn
        if self.max_age_ns is not None:
            cutoff = time.time_ns() - self.max_age_ns
            conn.execute(_DELETE_POINTS_BEFORE, (cutoff, self.chunk * 20))
            ids = [r[0] for r in conn.execute(_OLDEST_BEFORE, (cutoff, cutoff, self.chunk))]
            if ids:
                return ids
        if self.max_bytes is not None:
            used = conn.execute(_USED_BYTES).fetchone()[0]
            limit = self.max_bytes if not self._deleted_in_pass else self.max_bytes * _LOW_WATER
            if used > limit:
                rows = conn.execute(_OLDEST, (self.chunk,)).fetchall()
                if rows:
                    conn.execute(_DELETE_POINTS_BEFORE, (rows[-1][1], self.chunk * 20))
                return [r[0] for r in rows]
        return []


def _compact(store: SpanStore) -> None:
    conn = store.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_UNUSED_ATTRSETS)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    store.forget_ids()  # the writer's cached attribute-set ids may name deleted rows
    conn.execute("PRAGMA incremental_vacuum")
