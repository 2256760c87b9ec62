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

Backpressure: ``submit`` refuses a body (returns None) when the queue already
holds ``max_queued_bytes``, or when, at the rate the writer has been storing,
the bodies ahead of it would not be stored within the submitter's ack
timeout; the receiver answers 429 / RESOURCE_EXHAUSTED with a retry delay.
A submitter whose body is still queued when its timeout comes *withdraws*
it (``withdraw``): it is taken off the queue and never stored, so a request
is either acknowledged or refused, never stored and then refused (its
client would send it again). A body the writer has already taken is
waited for: its outcome comes within one write. A store that cannot be
written for a while (locked by another program, disk full) is retried with
backoff; meanwhile bodies wait and are withdrawn.

One request never fails the others committed with it: when the store
refuses a group for what a request contains (not for a lock or a full disk),
each request is written alone and only the guilty one fails.

After a failed fsync nothing more is acknowledged (``broken``), as
PostgreSQL does: the kernel may have dropped the pages it could not write
and a later fsync could succeed without them, so no later answer could be
trusted. Every request from then on is refused, saying the collector must be
restarted.

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

from takealook.collector.convert import Converter
from takealook.collector.retention import Retention
from takealook.collector.store import SpanStore
from takealook.collector.syncer import Syncer
from takealook.collector.ticket import COMMITTED, QUEUED, WITHDRAWN, WRITING, DurabilityLost, Ticket

log = logging.getLogger("takealook.collector")

_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0
_BUSY_TIMEOUT_MS = 250  # one write attempt on a locked store: short, the writer retries anyway
_RATE_DECAY = 0.8  # weight of the past in the storing rate (per group)
_PRIOR_RATE = 8 << 20  # bytes/s of protobuf bodies stored, before any is measured
# SQLite extended result codes of a failed fsync (sqlite3.h): SQLITE_IOERR_FSYNC, SQLITE_IOERR_DIR_FSYNC.
_FSYNC_ERRORS = (1034, 1290)
TRACES, METRICS = "traces", "metrics"
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
    isolated_failures: int = 0  # requests the store refused, written alone so the others were stored
    last_error: str = ""
    traces_expired: int = 0


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
        self.broken_error: Optional[DurabilityLost] = None
        self._converter = Converter()
        self._queue: deque[Ticket] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._deadline = 0.0
        # Bytes stored and seconds spent storing them, both decayed per group: the storing rate.
        # It starts from a modest guess (a third of what one core does) until groups are measured.
        self._rate_bytes, self._rate_seconds = float(_PRIOR_RATE), 1.0
        self._thread = threading.Thread(target=self._run, name="takealook-writer", daemon=True)
        self._syncer = Syncer(self) if durable else None
        store.conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")

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

    def expected_wait(self, size: int) -> float:
        """Seconds until a body of ``size`` bytes submitted now would be stored, at the recent rate
        (0 when the writer is idle: such a body is always taken)."""
        if not self._queued:
            return 0.0
        rate = self._rate_bytes / self._rate_seconds
        return (self._queued + size) / rate + (self._syncer.seconds if self._syncer else 0.0)

    def submit(self, kind: str, body: bytes, within: Optional[float] = None) -> Optional[Ticket]:
        """Queue a serialized Export*ServiceRequest; None when the queue is full, the body would not
        be stored ``within`` seconds, or the writer is stopping or broken."""
        ticket = Ticket(kind, body)
        with self._cond:
            if self._stopping or self.broken_error is not None:
                return None
            # A body larger than the whole queue is still taken when the queue is empty.
            if self._queued and (self._queued + ticket.size > self.max_queued_bytes
                                 or within is not None and self.expected_wait(ticket.size) > within):
                return None
            self._queue.append(ticket)
            self._queued += ticket.size
            self._cond.notify_all()
        return ticket

    def withdraw(self, ticket: Ticket) -> bool:
        """Take a body that its submitter gave up on off the queue: True if it will never be stored;
        False if it is already stored (or failed): ``ticket.wait`` for the outcome."""
        with self._cond:
            while ticket.state == WRITING:  # one write attempt: it ends within the busy timeout
                self._cond.wait(1.0)
            if ticket.state != QUEUED:
                return False
            self._queue.remove(ticket)
            self._queued -= ticket.size
            ticket.state = WITHDRAWN
            ticket.body = b""
            return True

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new bodies, commit the queued ones (for up to ``timeout`` s), close the store."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout + 5)
        if self._syncer is not None:
            self._syncer.stop(timeout + 5)
        self.store.close()

    def lose_durability(self, failure: BaseException) -> DurabilityLost:
        """Stop acknowledging for good (a failed fsync); returns the error every request now gets."""
        with self._cond:
            if self.broken_error is None:
                self.broken_error = DurabilityLost(
                    f"the span store {self.store.path} is no longer durable: an fsync failed ({failure}); "
                    "nothing more is acknowledged: restart the collector")
                log.error("%s", self.broken_error)
                self.stats.last_error = str(self.broken_error)
            self._cond.notify_all()
            return self.broken_error

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
            if self.broken_error is not None:
                self.finish(self._dequeue(group), self.broken_error)
                continue
            try:
                retry = self._store_group(group)
            except Exception as error:  # a bug of ours: answer the group, keep the thread alive
                log.exception("cannot store a group of requests")
                self.finish(self._dequeue([t for t in group if t.state == WRITING]), error)
                retry = False
            if retry:
                time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            else:
                backoff = _BACKOFF_MIN
                self._retention_step()

    def _next_group(self) -> Optional[list[Ticket]]:
        """Queued tickets to write, marked WRITING (left in the queue until done); [] for idle time;
        None to exit."""
        with self._cond:
            if not self._queue and not self._stopping:
                self._cond.wait(timeout=1.0 if self.retention else None)
            if not self._queue:
                return None if self._stopping else []
            group, size = [], 0
            for ticket in self._queue:
                if group and size + ticket.size > self.max_group_bytes:
                    break
                ticket.state = WRITING
                group.append(ticket)
                size += ticket.size
            return group

    def _store_group(self, group: list[Ticket]) -> bool:
        """Convert and store ``group``; True when the store is locked or full and the group waits."""
        began = time.monotonic()
        valid = self._convert(group)
        if not valid:
            self.finish(self._dequeue(group), None)
            return False
        try:
            result = self.store.write([t.converted.batch for t in valid])
        except sqlite3.OperationalError as error:  # locked, busy, disk full: try again
            if getattr(error, "sqlite_errorcode", None) in _FSYNC_ERRORS:
                self.finish(self._dequeue(group), self.lose_durability(error))
                return False
            self._note_error(error)
            if self._give_up():
                self.finish(self._dequeue(group), error)
                return False
            self._requeue(group)
            return True
        except Exception as error:  # a request the store refuses: write each alone, only it fails
            self._note_error(error)
            self._store_alone(group, valid)
            return False
        self._count(result)
        self._measure(sum(t.size for t in group), time.monotonic() - began)
        self._committed(self._dequeue(group))
        return False

    def _store_alone(self, group: list[Ticket], valid: list[Ticket]) -> None:
        stored = []
        for ticket in valid:
            try:
                self._count(self.store.write([ticket.converted.batch]))
            except sqlite3.OperationalError:
                break  # the store itself is failing: the rest waits for the next attempt
            except Exception as error:  # what this request holds: it alone is refused
                ticket.invalid = f"the span store cannot take this request: {error}"
            else:
                stored.append(ticket)
                continue
            self.stats.isolated_failures += 1
            log.warning("%s", ticket.invalid)
        done = {id(t) for t in stored} | {id(t) for t in group if t.invalid is not None}
        self._requeue([t for t in group if id(t) not in done])
        finished = self._dequeue([t for t in group if id(t) in done])
        self.finish([t for t in finished if t.invalid is not None], None)
        self._committed(stored)

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
            except (ValueError, TypeError, OverflowError, RecursionError) as error:
                # Decoded, but a value the converter does not expect: this request alone is refused.
                log.warning("cannot convert a request: %s: %s", type(error).__name__, error)
                stats.invalid_requests += 1
                ticket.invalid = f"cannot read this OTLP {ticket.kind} request: {type(error).__name__}: {error}"
                continue
            ticket.converted = converted
        return [t for t in group if t.converted is not None]

    def _count(self, result) -> None:
        stats = self.stats
        stats.spans_stored += result.spans_new
        stats.spans_duplicate += result.spans_duplicate
        stats.points_stored += result.points_new
        stats.commits += 1
        stats.last_error = "" if self.broken_error is None else stats.last_error

    def _measure(self, size: int, seconds: float) -> None:
        self._rate_bytes = self._rate_bytes * _RATE_DECAY + size
        self._rate_seconds = self._rate_seconds * _RATE_DECAY + max(seconds, 1e-6)

    def _committed(self, tickets: list[Ticket]) -> None:
        """Acknowledge committed tickets: now, or once the syncer has made them durable."""
        if not tickets:
            return
        if self._syncer is not None:
            with self._cond:
                for ticket in tickets:
                    ticket.state = COMMITTED
                self._cond.notify_all()
            self._syncer.add(tickets)
        else:
            self.finish(tickets, None)

    def _requeue(self, tickets: list[Ticket]) -> None:
        """Tickets whose write attempt failed: queued again (their submitters may withdraw them)."""
        with self._cond:
            for ticket in tickets:
                ticket.state = QUEUED
            self._cond.notify_all()

    def _dequeue(self, tickets: list[Ticket]) -> list[Ticket]:
        """Take ``tickets`` off the queue; their bodies are no longer needed."""
        members = {id(t) for t in tickets}
        with self._cond:
            queue = self._queue
            while queue and id(queue[0]) in members:
                members.discard(id(queue.popleft()))
            if members:  # not all at the front (a group partly stored): the rare, slow way
                self._queue = queue = deque(t for t in queue if id(t) not in members)
            self._queued -= sum(t.size for t in tickets)
        for ticket in tickets:
            ticket.body = b""
            if ticket.converted is not None:
                ticket.converted.batch = None  # its rows are stored; the answer needs only the counts
        return tickets

    def finish(self, group: list[Ticket], error: Optional[BaseException]) -> None:
        """Wake the submitters of ``group`` (committed, invalid, or failed with ``error``)."""
        if error is not None:
            self.stats.failed_writes += 1
        with self._cond:
            for ticket in group:
                if ticket.invalid is None and ticket.error is None:
                    ticket.error = error
                ticket._finish()
            self._cond.notify_all()

    def _note_error(self, error: BaseException) -> None:
        message = f"cannot write the span store {self.store.path}: {error}"
        if message != self.stats.last_error:
            log.warning("%s (retrying)", message)
        self.stats.last_error = message

    def _give_up(self) -> bool:
        return self._stopping and time.monotonic() > self._deadline

    def _retention_step(self) -> None:
        if self.retention is None or self.broken_error is not None:
            return
        try:
            self.stats.traces_expired += self.retention.step(self.store)
        except sqlite3.Error as error:
            self._note_error(error)
