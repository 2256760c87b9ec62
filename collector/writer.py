"""The collector's one working thread: a bounded queue of request bodies, conversion, group commit.

Receivers (HTTP and gRPC handler threads) only read bodies: they ``submit``
the serialized OTLP request and wait on the returned ``Ticket``; only when it
is committed do they answer 200. This thread takes every body queued (up to
``max_group_bytes``), converts them (``convert.Converter``), stores them all
in one transaction and wakes their submitters: many concurrent requests share
one commit. With ``durable`` the submitters are woken by a second thread, the
syncer, once it has fsynced the write-ahead log; the writer does not wait for
the disk and goes on with the next group meanwhile (an fsync costs about as
much time as converting and storing a thousand spans on the test machine).
All CPU work happens in this one thread on purpose: with the GIL,
conversion in the handler threads ran no faster and cost more CPU, because
every SQLite call releases the GIL and the threads handed it back and forth.

Backpressure: ``submit`` returns None when the queue already holds
``max_queued_bytes`` of bodies, and the receiver answers 429 /
RESOURCE_EXHAUSTED with a retry delay; memory stays bounded whatever the
clients do. A store that cannot be written for a while (locked by another
program, disk full) keeps the bodies queued and retries with backoff; their
submitters time out and answer 503 (the spans are stored later, and a
client's retry is harmless: the store ignores spans it already has).

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
from typing import Optional

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from takealook.collector.convert import Converted, Converter
from takealook.collector.retention import Retention
from takealook.collector.store import SpanStore

log = logging.getLogger("takealook.collector")

_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0
TRACES, METRICS = "traces", "metrics"


class Ticket:
    """A submitted request body; ``wait`` until it is committed, found invalid, or failed."""

    __slots__ = ("kind", "body", "size", "_done", "converted", "invalid", "error")

    def __init__(self, kind: str, body: bytes):
        self.kind, self.body, self.size = kind, body, len(body)
        self._done = threading.Event()
        self.converted: Optional[Converted] = None  # set once converted
        self.invalid: Optional[str] = None  # why the body is not an OTLP request
        self.error: Optional[BaseException] = None  # the store refused it

    def wait(self, timeout: float) -> bool:
        """True once finished (check ``invalid`` and ``error``); False on timeout."""
        return self._done.wait(timeout)

    def _finish(self) -> None:
        self.body = b""  # the memory goes now, not when the submitter lets go
        self._done.set()


@dataclass
class WriterStats:
    requests: int = 0
    invalid_requests: int = 0
    spans_received: int = 0
    spans_rejected: int = 0
    points_received: int = 0
    points_ignored: int = 0
    spans_stored: int = 0
    spans_duplicate: int = 0
    points_stored: int = 0
    commits: int = 0
    failed_writes: int = 0
    last_error: str = ""
    traces_expired: int = 0


class _Syncer:
    """The thread that makes committed groups durable (``store.sync``) and then acknowledges them.

    Groups committed while an fsync runs share the next one, as requests share
    a commit. An fsync that fails (the disk refused) fails its groups: their
    spans are committed but perhaps not on disk, so their clients hear so.
    """

    def __init__(self, store: SpanStore, finish):
        self._store, self._finish = store, finish
        self._pending: list[list[Ticket]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="takealook-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, group: list[Ticket]) -> None:
        with self._cond:
            self._pending.append(group)
            self._cond.notify()

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                groups, self._pending = self._pending, []
            error: Optional[BaseException] = None
            try:
                self._store.sync()
            except OSError as failure:
                log.error("cannot make the span store durable: %s", failure)
                error = failure
            for group in groups:
                self._finish(group, error)


class Writer:
    """``durable``: acknowledge a group only once ``store.sync()`` made it
    survive a power loss (the store then commits with ``synchronous=NORMAL``
    and a syncer thread does the fsync while this thread goes on with the next
    group); otherwise as soon as it is committed."""

    def __init__(self, store: SpanStore, max_queued_bytes: int = 64 << 20, max_group_bytes: int = 8 << 20,
                 retention: Optional[Retention] = None, durable: bool = False):
        self.store = store
        self.max_queued_bytes = max_queued_bytes
        self.max_group_bytes = max_group_bytes
        self.retention = retention
        self.stats = WriterStats()
        self._converter = Converter()
        self._queue: deque[Ticket] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._deadline = 0.0
        self._thread = threading.Thread(target=self._run, name="takealook-writer", daemon=True)
        self._syncer = _Syncer(store, self._finish) if durable else None

    @property
    def queued_bytes(self) -> int:
        return self._queued

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        self._thread.start()
        if self._syncer is not None:
            self._syncer.start()

    def submit(self, kind: str, body: bytes) -> Optional[Ticket]:
        """Queue a serialized Export*ServiceRequest; None when the queue is full or the writer is stopping."""
        ticket = Ticket(kind, body)
        with self._cond:
            if self._stopping:
                return None
            # A body larger than the whole queue is still taken when the queue is empty.
            if self._queued and self._queued + ticket.size > self.max_queued_bytes:
                return None
            self._queue.append(ticket)
            self._queued += ticket.size
            self._cond.notify()
        return ticket

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new bodies, commit the queued ones (for up to ``timeout`` s), close the store."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout + 5)
        if self._syncer is not None:
            self._syncer.stop(timeout + 5)
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
            valid = self._convert(group)
            if not valid:
                self._finish(self._dequeue(group), None)
                continue
            try:
                result = self.store.write([t.converted.batch for t in valid])
            except sqlite3.OperationalError as error:  # locked, busy, disk full: try again
                self._note_error(error)
                if self._give_up():
                    self._finish(self._dequeue(group), error)
                else:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            except Exception as error:  # a batch the store refuses: do not wedge the queue on it
                self._note_error(error)
                self._finish(self._dequeue(group), error)
                continue
            backoff = _BACKOFF_MIN
            stats = self.stats
            stats.spans_stored += result.spans_new
            stats.spans_duplicate += result.spans_duplicate
            stats.points_stored += result.points_new
            stats.commits += 1
            stats.last_error = ""
            self._dequeue(group)
            if self._syncer is not None:
                self._syncer.add(group)
            else:
                self._finish(group, None)
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
                if group and size + ticket.size > self.max_group_bytes:
                    break
                group.append(ticket)
                size += ticket.size
            return group

    def _convert(self, group: list[Ticket]) -> list[Ticket]:
        """Convert the group's bodies not yet converted (a retried group keeps its conversions)."""
        stats = self.stats
        for ticket in group:
            if ticket.converted is not None or ticket.invalid is not None:
                continue
            stats.requests += 1
            try:
                if ticket.kind == TRACES:
                    converted = self._converter.traces(ticket.body)
                    stats.spans_received += converted.batch.span_count + converted.rejected
                    stats.spans_rejected += converted.rejected
                else:
                    converted = self._converter.metrics(ExportMetricsServiceRequest.FromString(ticket.body))
                    stats.points_received += len(converted.batch.metrics) + converted.rejected
                    stats.points_ignored += converted.ignored
            except DecodeError:
                stats.invalid_requests += 1
                ticket.invalid = f"body is not a valid OTLP {ticket.kind} protobuf message"
                continue
            ticket.converted = converted
        return [t for t in group if t.converted is not None]

    def _dequeue(self, group: list[Ticket]) -> list[Ticket]:
        """Take the group (the queue's first tickets) off the queue; their bodies are no longer needed."""
        with self._cond:
            for _ in group:
                self._queue.popleft()
            self._queued -= sum(t.size for t in group)
        for ticket in group:
            ticket.body = b""
            if ticket.converted is not None:
                ticket.converted.batch = None  # its rows are stored; the answer needs only the counts
        return group

    def _finish(self, group: list[Ticket], error: Optional[BaseException]) -> None:
        """Wake the submitters of ``group`` (committed, invalid, or failed with ``error``)."""
        if error is not None:
            self.stats.failed_writes += 1
        for ticket in group:
            if ticket.invalid is None:
                ticket.error = error
            ticket._finish()

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
