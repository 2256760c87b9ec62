"""What both receivers (HTTP and gRPC) do with a request body: queue it, wait for the commit.

``Ingest.traces(body)`` / ``Ingest.metrics(body)`` take a serialized
Export*ServiceRequest and return an ``Answer`` whose ``outcome`` the receiver
maps to its protocol:

- ``ok``: committed (the answer carries OTLP partial-success counts);
- ``invalid``: the body is not an OTLP request, or the store cannot take it
  (HTTP 400, gRPC INVALID_ARGUMENT);
- ``busy``: not taken: the write queue is full, the bodies ahead of it would
  not be stored within ``ack_timeout``, or the memory for bodies is taken
  (HTTP 429, gRPC RESOURCE_EXHAUSTED with a retry delay);
- ``timeout``: queued but not stored within ``ack_timeout`` s (the store is
  slow or locked): withdrawn from the queue, nothing of it is stored
  (HTTP 503, gRPC UNAVAILABLE);
- ``stopping``: the collector is shutting down (HTTP 503, gRPC UNAVAILABLE);
- ``broken``: an fsync failed, nothing is acknowledged until the collector
  is restarted (HTTP 503, gRPC UNAVAILABLE);
- ``failed``: the store failed while stopping (HTTP 500, gRPC INTERNAL).

Before reading a body, receivers ask ``refusal(size)`` (so a body that
would be refused is not read into memory) and ``reserve`` its memory (see
``admission.py``). Decoding and conversion happen in the writer thread
(see ``writer.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional

from takealook.collector.admission import MemoryBudget, Reservation
from takealook.collector.writer import METRICS, TRACES, Writer

RETRY_AFTER_S = 1
# A body the writer has taken is answered when its write ends (within a second or two);
# only a disk stalled in fsync for this long makes its submitter stop waiting.
_COMMITTED_WAIT_S = 60.0


@dataclass(frozen=True)
class Answer:
    outcome: str  # ok | invalid | busy | timeout | stopping | broken | failed
    rejected: int = 0
    message: str = ""


BUSY_MEMORY = Answer("busy", message="too many request bodies in memory; retry later")


@dataclass
class IngestStats:
    """Receiver-side counters for the status line and ``GET /``."""

    refused_busy: int = 0  # requests answered 429 / RESOURCE_EXHAUSTED
    timed_out: int = 0  # requests answered 503 and withdrawn from the queue
    bad_requests: int = 0  # undecodable, empty, bad gzip or JSON
    slow_clients: int = 0  # connections dropped for sending too slowly
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class Ingest:
    def __init__(self, writer: Writer, ack_timeout: float = 5.0, budget: Optional[MemoryBudget] = None):
        self.writer = writer
        self.ack_timeout = ack_timeout
        self.budget = budget or MemoryBudget(1 << 62)
        self.stats = IngestStats()

    def traces(self, body: bytes) -> Answer:
        """A serialized ExportTraceServiceRequest."""
        return self._store(TRACES, body)

    def metrics(self, body: bytes) -> Answer:
        """A serialized ExportMetricsServiceRequest."""
        return self._store(METRICS, body)

    def bad_request(self) -> None:
        self.stats.add(bad_requests=1)

    def refusal(self, size: int) -> Optional[Answer]:
        """Why a body of about ``size`` bytes would be refused now, or None: asked before reading it."""
        writer = self.writer
        if writer.broken_error is not None:
            return Answer("broken", message=str(writer.broken_error))
        if writer.stopping:
            return Answer("stopping", message="the collector is shutting down")
        if writer.expected_wait(size) > self.ack_timeout:
            self.stats.add(refused_busy=1)
            return Answer("busy", message="the span store is busy; retry later")
        return None

    def reserve(self, size: int) -> Optional[Reservation]:
        """Memory for a body of ``size`` bytes (see ``admission.py``); None: answer ``BUSY_MEMORY``."""
        reservation = self.budget.reserve(size)
        if reservation is None:
            self.stats.add(refused_busy=1)
        return reservation

    def _store(self, kind: str, body: bytes) -> Answer:
        writer = self.writer
        ticket = writer.submit(kind, body, within=self.ack_timeout)
        if ticket is None:
            refusal = self.refusal(0)
            if refusal is not None:
                return refusal
            self.stats.add(refused_busy=1)
            return Answer("busy", message="the span store is busy; retry later")
        if not ticket.wait(self.ack_timeout):
            if writer.withdraw(ticket):
                self.stats.add(timed_out=1)
                return Answer("timeout", message="the span store is slow: nothing of this request was stored; "
                                                 "retry later")
            if not ticket.wait(_COMMITTED_WAIT_S):
                self.stats.add(timed_out=1)
                return Answer("timeout", message="stored, but the disk has not confirmed it yet; retry later")
        if ticket.invalid is not None:
            self.stats.add(bad_requests=1)
            return Answer("invalid", message=ticket.invalid)
        if ticket.error is not None:
            if ticket.error is writer.broken_error:
                return Answer("broken", message=str(ticket.error))
            return Answer("failed", message=f"the span store refused the batch: {ticket.error}")
        converted = ticket.converted
        return Answer("ok", converted.rejected, converted.message)
