"""What both receivers (HTTP and gRPC) do with a request: convert, queue, wait for the commit.

``Ingest.traces(body)`` / ``Ingest.metrics(request)`` return an ``Answer``
whose ``outcome`` the receiver maps to its protocol:

- ``ok``: committed (the answer carries OTLP partial-success counts);
- ``busy``: the write queue is full, nothing was queued (HTTP 429,
  gRPC RESOURCE_EXHAUSTED with a retry delay);
- ``timeout``: queued but not committed within ``ack_timeout`` s, because
  the store is slow or locked (HTTP 503, gRPC UNAVAILABLE). The batch stays
  queued and is stored later; the client's retry is deduplicated by span id;
- ``stopping``: the collector is shutting down (HTTP 503, gRPC UNAVAILABLE);
- ``failed``: the store refused the batch (HTTP 500, gRPC INTERNAL).

Undecodable bodies raise ``DecodeError`` (protobuf) or ``BadRequest`` (JSON).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from takealook.collector.convert import Converted, Converter
from takealook.collector.writer import Writer

RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Answer:
    outcome: str  # ok | busy | timeout | stopping | failed
    rejected: int = 0
    message: str = ""


@dataclass
class IngestStats:
    """Counters for the status line and ``GET /``; updated under a lock."""

    requests: int = 0
    spans_received: int = 0
    spans_rejected: int = 0
    points_received: int = 0
    points_ignored: int = 0
    refused_busy: int = 0  # items answered 429 / RESOURCE_EXHAUSTED
    timed_out: int = 0  # items answered 503 while still queued
    bad_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class Ingest:
    def __init__(self, writer: Writer, ack_timeout: float = 5.0):
        self.writer = writer
        self.ack_timeout = ack_timeout
        self.converter = Converter()
        self.stats = IngestStats()

    def traces(self, body: bytes) -> Answer:
        """A serialized ExportTraceServiceRequest."""
        converted = self.converter.traces(body)
        self.stats.add(requests=1, spans_received=len(converted.batch.spans) + converted.rejected,
                       spans_rejected=converted.rejected)
        return self._store(converted, len(converted.batch.spans))

    def metrics(self, request) -> Answer:
        """A decoded ExportMetricsServiceRequest."""
        converted = self.converter.metrics(request)
        self.stats.add(requests=1, points_received=len(converted.batch.metrics) + converted.rejected,
                       points_ignored=converted.ignored)
        return self._store(converted, len(converted.batch.metrics))

    def bad_request(self) -> None:
        self.stats.add(requests=1, bad_requests=1)

    def _store(self, converted: Converted, items: int) -> Answer:
        if converted.batch.size == 0:
            return Answer("ok", converted.rejected, converted.message)
        ticket = self.writer.submit(converted.batch)
        if ticket is None:
            if self.writer.stopping:
                return Answer("stopping", message="the collector is shutting down")
            self.stats.add(refused_busy=items)
            return Answer("busy", message="the span store is busy; retry later")
        if not ticket.wait(self.ack_timeout):
            self.stats.add(timed_out=items)
            return Answer("timeout", message="the span store is slow; the batch was queued, retry later")
        if ticket.error is not None:
            return Answer("failed", message=f"the span store refused the batch: {ticket.error}")
        return Answer("ok", converted.rejected, converted.message)
