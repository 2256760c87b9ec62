"""The embedded collector in-process: receivers, writer and store, started and stopped together.

    from takealook.collector.server import Collector
    from takealook.collector.settings import CollectorSettings

    with Collector(CollectorSettings(store=path, http=("127.0.0.1", 0), grpc=None)) as collector:
        endpoint = collector.http_url          # e.g. http://127.0.0.1:41234
        ...                                    # export OTLP to it
    # leaving the block stops accepting, commits what was acknowledged, closes the store

``takealook collect`` is this class plus signal handling and a status line.
Port 0 picks a free port; ``http_port`` / ``grpc_port`` tell which. Errors
at start (store unusable, port taken) are ``InputError`` / ``UsageError``
with one line saying what to do, and leave nothing running.
"""

from __future__ import annotations

import errno
import time
from typing import Optional

from takealook.collector.admission import MemoryBudget, body_budget
from takealook.collector.grpc_receiver import GrpcReceiver
from takealook.collector.http_clients import ClientLimits
from takealook.collector.http_receiver import HttpReceiver, ReceiverConfig
from takealook.collector.ingest import Ingest, IngestStats
from takealook.collector.retention import Retention
from takealook.collector.settings import CollectorSettings
from takealook.collector.store import SpanStore
from takealook.collector.writer import Writer, WriterStats
from takealook.errors import UsageError

STATUS_SCHEMA_VERSION = 1  # GET / (docs/schemas/collect-status.schema.json); keys are only added

_GROUP_BYTES = 8 << 20  # bodies the writer converts and stores in one transaction, at most

_BIND_REASONS = {
    errno.EADDRINUSE: "the port is in use (another collector running?)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "this machine has no such address",
}


class Collector:
    def __init__(self, settings: CollectorSettings):
        self.settings = settings
        self.started_at: Optional[float] = None
        self._writer: Optional[Writer] = None
        self._ingest: Optional[Ingest] = None
        self._http: Optional[HttpReceiver] = None
        self._grpc: Optional[GrpcReceiver] = None
        self._stopped = False

    # -- life cycle -------------------------------------------------------------

    def start(self) -> "Collector":
        s = self.settings
        budget = MemoryBudget(body_budget(s.max_memory, s.max_body, _GROUP_BYTES, s.grpc is not None))
        limits = ClientLimits(s.idle_timeout_s, s.header_timeout_s, s.body_grace_s, s.min_body_rate)
        # FULL: acknowledged spans survive a power loss. The writer then commits
        # without waiting for the disk and its syncer thread fsyncs before the
        # answer (writer.py).
        durable = s.synchronous.upper() == "FULL"
        store = SpanStore(s.store, "NORMAL" if durable else s.synchronous)
        retention = None
        if s.retain_s or s.max_size:
            retention = Retention(max_age_ns=int(s.retain_s * 1e9) if s.retain_s else None, max_bytes=s.max_size,
                                  interval_s=s.retention_interval_s)
        self._writer = Writer(store, max_queued_bytes=s.max_queued_bytes, max_group_bytes=_GROUP_BYTES,
                              retention=retention, durable=durable)
        self._ingest = Ingest(self._writer, ack_timeout=s.ack_timeout_s, budget=budget)
        try:
            self._http = self._bind("--listen", s.http, lambda host, port: HttpReceiver(
                host, port, self._ingest, ReceiverConfig(s.max_body, s.cors_origins, s.token, s.max_connections,
                                                         limits), self.status))
            if s.grpc is not None:
                self._grpc = self._bind("--grpc", s.grpc, lambda host, port: GrpcReceiver(
                    host, port, self._ingest, s.max_body, s.token, limits))
        except BaseException:
            if self._http is not None:
                self._http.stop_accepting()
            store.close()
            raise
        self._writer.start()
        self._http.start()
        if self._grpc is not None:
            self._grpc.start()
        self.started_at = time.monotonic()
        return self

    @staticmethod
    def _bind(flag: str, address: tuple[str, int], make):
        host, port = address
        try:
            return make(host, port)
        except OSError as error:
            reason = _BIND_REASONS.get(error.errno, error.strerror or str(error))
            if error.errno is None and "cannot listen" in str(error):
                reason = "the port is in use or the address is not on this machine"
            raise UsageError(f"cannot listen on {host}:{port}: {reason}; pick another {flag}") from None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, answer requests in progress, commit everything acknowledged, close the store."""
        if self._writer is None or self._stopped:
            return
        self._stopped = True
        if self._http is not None:
            self._http.stop_accepting()
        if self._grpc is not None:
            self._grpc.stop(grace=min(timeout, 10.0))
        if self._http is not None:
            self._http.drain(min(timeout, 10.0))
        self._writer.stop(timeout)

    def __enter__(self) -> "Collector":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- where and how it runs ----------------------------------------------------

    @property
    def http_port(self) -> int:
        return self._http.address[1]

    @property
    def grpc_port(self) -> Optional[int]:
        return self._grpc.address[1] if self._grpc else None

    @property
    def http_url(self) -> str:
        host, port = self._http.address
        return f"http://{_host(host)}:{port}"

    @property
    def grpc_address(self) -> Optional[str]:
        return f"{_host(self._grpc.address[0])}:{self._grpc.address[1]}" if self._grpc else None

    def status(self) -> dict:
        """Counters since start (also served as JSON on ``GET /``)."""
        writer = self._writer
        received = writer.stats if writer else WriterStats()
        refused = self._ingest.stats if self._ingest else IngestStats()
        budget = self._ingest.budget if self._ingest else None
        return {
            "schema_version": STATUS_SCHEMA_VERSION,
            "service": "takealook collector",
            "store": str(self.settings.store),
            "uptime_s": round(time.monotonic() - self.started_at, 1) if self.started_at else 0.0,
            "requests": received.requests,
            "spans_received": received.spans_received,
            "spans_stored": received.spans_stored,
            "spans_duplicate": received.spans_duplicate,
            "spans_rejected": received.spans_rejected,
            "points_received": received.points_received,
            "points_stored": received.points_stored,
            "refused_busy": refused.refused_busy,
            "timed_out": refused.timed_out,
            "bad_requests": refused.bad_requests,
            "slow_clients": refused.slow_clients,
            "queued_bytes": writer.queued_bytes if writer else 0,
            "body_bytes": budget.used if budget else 0,
            "body_bytes_limit": budget.limit if budget else 0,
            "connections": self._http.connections if self._http else 0,
            "traces_expired": received.traces_expired,
            "durable": not (writer and writer.broken_error),
            "store_error": received.last_error,
        }


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
