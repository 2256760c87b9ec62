"""What both receivers (HTTP and gRPC) do with a request body: queue it, wait for the commit.

``Ingest.traces(body)`` / ``Ingest.metrics(body)`` take a serialized
Export*ServiceRequest and return an ``Answer`` whose ``outcome`` the receiver
maps to its protocol:

- ``ok``: committed (the answer carries OTLP partial-success counts);
- ``invalid``: the body is not an OTLP request (HTTP 400, gRPC INVALID_ARGUMENT);
- ``busy``: the write queue is full, nothing was queued (HTTP 429,
  gRPC RESOURCE_EXHAUSTED with a retry delay);
- ``timeout``: queued but not committed within ``ack_timeout`` s, because
  the store is slow or locked (HTTP 503, gRPC UNAVAILABLE). The body stays
  queued and is stored later; the client's retry is deduplicated by span id;
- ``stopping``: the collector is shutting down (HTTP 503, gRPC UNAVAILABLE);
- ``failed``: the store refused the batch (HTTP 500, gRPC INTERNAL).

Decoding and conversion happen in the writer thread (see ``writer.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from takealook.collector.writer import METRICS, TRACES, Writer

RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Answer:
    outcome: str  # ok | invalid | busy | timeout | stopping | failed
    rejected: int = 0
    message: str = ""


@dataclass
class IngestStats:
    """Receiver-side counters for the status line and ``GET /``."""

    refused_busy: int = 0  # requests answered 429 / RESOURCE_EXHAUSTED
    timed_out: int = 0  # requests answered 503 while still queued
    bad_requests: int = 0  # undecodable, empty, bad gzip or JSON
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class Ingest:
    def __init__(self, writer: Writer, ack_timeout: float = 5.0):
        self.writer = writer
        self.ack_timeout = ack_timeout
        self.stats = IngestStats()

    def traces(self, body: bytes) -> Answer:
        """A serialized ExportTraceServiceRequest."""
        return self._store(TRACES, body)

    def metrics(self, body: bytes) -> Answer:
        """A serialized ExportMetricsServiceRequest."""
        return self._store(METRICS, body)

    def bad_request(self) -> None:
        self.stats.add(bad_requests=1)

    def _store(self, kind: str, body: bytes) -> Answer:
        ticket = self.writer.submit(kind, body)
        if ticket is None:
            if self.writer.stopping:
                return Answer("stopping", message="the collector is shutting down")
            self.stats.add(refused_busy=1)
            return Answer("busy", message="the span store is busy; retry later")
        if not ticket.wait(self.ack_timeout):
            self.stats.add(timed_out=1)
            return Answer("timeout", message="the span store is slow; the batch was queued, retry later")
        if ticket.invalid is not None:
            self.stats.add(bad_requests=1)
            return Answer("invalid", message=ticket.invalid)
        if ticket.error is not None:
            return Answer("failed", message=f"the span store refused the batch: {ticket.error}")
        converted = ticket.converted
        return Answer("ok", converted.rejected, converted.message)
