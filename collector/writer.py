"""The collector's single writer thread: a bounded queue and group commit.

Receivers (HTTP and gRPC handler threads) convert a request, ``submit`` its
batch and wait on the returned ``Ticket`` until the batch is committed; only
then do they answer 200. The writer takes every batch queued (up to
``max_group`` items), stores them in one transaction, then wakes their
submitters: many concurrent requests share one fsync.

Backpressure: ``submit`` returns None when the queue already holds
``max_queued`` items (spans plus metric points), and the receiver answers 429
/ RESOURCE_EXHAUSTED with a retry delay; memory stays bounded whatever the
clients do. A store that cannot be written for a while (locked by another
program, disk full) keeps the batches queued and retries with backoff; their
submitters time out and answer 503 (the spans are stored later, and a client's
retry is harmless: the store ignores spans it already has).

Retention runs in this thread too, one small transaction at a time between
groups, so it never stalls ingest for long.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from takealook.collector.retention import Retention
from takealook.collector.store import IngestBatch, SpanStore, WriteResult

log = logging.getLogger("takealook.collector")

_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0


class Ticket:
    """A submitted batch; ``wait`` until it is committed or failed."""

    __slots__ = ("batch", "size", "_done", "error", "result")

    def __init__(self, batch: IngestBatch):
        self.batch = batch
        self.size = batch.size
        self._done = threading.Event()
        self.error: Optional[BaseException] = None
        self.result: Optional[WriteResult] = None

    def wait(self, timeout: float) -> bool:
        """True once committed (or failed: check ``error``); False on timeout."""
        return self._done.wait(timeout)

    def _finish(self, result: Optional[WriteResult], error: Optional[BaseException] = None) -> None:
        self.result, self.error = result, error
        self._done.set()


@dataclass
class WriterStats:
    spans_stored: int = 0
    spans_duplicate: int = 0
    points_stored: int = 0
    commits: int = 0
    failed_writes: int = 0
    last_error: str = ""
    traces_expired: int = 0


class Writer:
    def __init__(self, store: SpanStore, max_queued: int = 65536, max_group: int = 32768,
                 retention: Optional[Retention] = None,
                 on_commit: Optional[Callable[[WriteResult], None]] = None):
        self.store = store
        self.max_queued = max_queued
        self.max_group = max_group
        self.retention = retention
        self.stats = WriterStats()
        self._on_commit = on_commit
        self._queue: deque[Ticket] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._deadline = 0.0
        self._thread = threading.Thread(target=self._run, name="takealook-writer", daemon=True)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: IngestBatch) -> Optional[Ticket]:
        """Queue ``batch``; None when the queue is full or the writer is stopping."""
        ticket = Ticket(batch)
        with self._cond:
            if self._stopping:
                return None
            # A batch larger than the whole queue is still taken when the queue is empty.
            if self._queued and self._queued + ticket.size > self.max_queued:
                return None
            self._queue.append(ticket)
            self._queued += ticket.size
            self._cond.notify()
        return ticket

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new batches, commit the queued ones (for up to ``timeout`` s), close the store."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout + 5)
        self.store.close()

    # -- the thread -----------------------------------------------------------

    def _run(self) -> None:
        backoff = _BACKOFF_MIN
        while True:
            group = self._next_group()
            if group is None:
                return
            if not group:
                self._retention_step()
                continue
            try:
                result = self.store.write([t.batch for t in group])
            except sqlite3.OperationalError as error:  # locked, busy, disk full: try again
                self._note_error(error)
                if self._give_up():
                    self._fail(group, error)
                else:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            except Exception as error:  # a batch the store refuses: do not wedge the queue on it
                self._note_error(error)
                self._fail(group, error)
                continue
            backoff = _BACKOFF_MIN
            self._done(group, result)
            self._retention_step()

    def _next_group(self) -> Optional[list[Ticket]]:
        """Queued tickets to write (left in the queue until done); [] for idle time; None to exit."""
        with self._cond:
            if not self._queue and not self._stopping:
                self._cond.wait(timeout=1.0 if self.retention else None)
            if not self._queue:
                return None if self._stopping else []
            group, size = [], 0
            for ticket in self._queue:
                if group and size + ticket.size > self.max_group:
                    break
                group.append(ticket)
                size += ticket.size
            return group

    def _done(self, group: list[Ticket], result: WriteResult) -> None:
        with self._cond:
            for _ in group:
                self._queue.popleft()
            self._queued -= sum(t.size for t in group)
        stats = self.stats
        stats.spans_stored += result.spans_new
        stats.spans_duplicate += result.spans_duplicate
        stats.points_stored += result.points_new
        stats.commits += 1
        stats.last_error = ""
        for ticket in group:
            ticket._finish(result)
        if self._on_commit:
            self._on_commit(result)

    def _fail(self, group: list[Ticket], error: BaseException) -> None:
        with self._cond:
            for _ in group:
                self._queue.popleft()
            self._queued -= sum(t.size for t in group)
        self.stats.failed_writes += 1
        for ticket in group:
            ticket._finish(None, error)

    def _note_error(self, error: BaseException) -> None:
        message = f"cannot write the span store {self.store.path}: {error}"
        if message != self.stats.last_error:
            log.warning("%s (retrying)", message)
        self.stats.last_error = message

    def _give_up(self) -> bool:
        return self._stopping and time.monotonic() > self._deadline

    def _retention_step(self) -> None:
        if self.retention is None:
            return
        try:
            self.stats.traces_expired += self.retention.step(self.store)
        except sqlite3.Error as error:
            self._note_error(error)

