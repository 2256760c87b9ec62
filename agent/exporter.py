"""The exporter: turns the pipeline's messages into OTLP and sends them to the collector.

It runs as a helper process (``python -m takealook.agent.exporter --fd N``,
started by ``start()`` or ``takealook-run``), reading messages from the
seqpacket socket the app writes to, or as threads inside the app when
``TAKEALOOK_EXPORT=thread``. Either way the work is the same: the spans come
encoded already (``pipeline.py``), so they are framed into one OTLP request
under their process's resource and posted (``otlp_post.Poster``, which honours the
``OTEL_EXPORTER_OTLP_*`` variables: headers, compression, certificates,
timeout); metric points are rebuilt as the SDK's records and exported with
OpenTelemetry's own OTLP/HTTP metric exporter.

Spans wait in a bounded queue (``TAKEALOOK_MAX_QUEUE``); when the collector is
down or slow the queue fills and further spans are dropped and counted, with a
warning at most once a minute. The app never waits for any of it.
"""

from __future__ import annotations

import argparse
import collections
import logging
import marshal
import os
import socket
import sys
import threading
import time
from typing import Optional

log = logging.getLogger("takealook.agent")

BATCH = 512
EXPORT_EVERY_S = 1.0
WARN_EVERY_S = 60.0
RECV_BUFFER = 1 << 20  # bytes: larger than any message (the pipeline splits at 192 KiB)


class Forwarder:
    """Decodes pipeline messages and exports them over OTLP/HTTP in the background."""

    def __init__(self, traces_endpoint: str, metrics_endpoint: str, max_queue: int = 20000,
                 export_every_s: float = EXPORT_EVERY_S):
        self.traces_endpoint = traces_endpoint
        self.metrics_endpoint = metrics_endpoint
        self.max_queue = max_queue
        self.export_every_s = export_every_s
        self._spans: collections.deque = collections.deque()
        self._points: collections.deque = collections.deque(maxlen=10000)
        self._queued = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._resources: dict = {}
        self._platform: Optional[dict] = None
        self.exported = 0
        self.dropped = 0
        self.failed = 0
        self._unreported = 0
        self._last_reason = ""
        self._last_warning = float("-inf")
        self._protocol_warned = False
        self._span_exporter = None
        self._metric_exporter = None
        self._thread = threading.Thread(target=self._run, name="takealook-export", daemon=True)

    # -- intake
    def submit(self, payload: bytes) -> bool:
        """Takes one pipeline message; False if it was dropped."""
        try:
            protocol, kind, resource_bytes, count, items = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            log.debug("takealook: undecodable message of %d bytes", len(payload))
            return False
        if protocol != 3:
            if not self._protocol_warned:
                self._protocol_warned = True
                log.warning("takealook: the app's agent speaks message protocol %r, this export helper 3 (two "
                            "takealook versions at once?); its spans are dropped until the app restarts", protocol)
            return False
        if kind == b"metrics":
            self._points.append((resource_bytes, items))
            return True
        if type(count) is not int or type(items) is not list:
            return False
        with self._lock:
            if self._queued + count > self.max_queue:
                self.dropped += count
                self._unreported += count
                self._last_reason = "export queue full"
                self._warn()
                return False
            self._spans.append((resource_bytes, items, count))
            self._queued += count
            if self._queued >= BATCH:
                self._wake.set()
        return True

    def start(self) -> "Forwarder":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Exports what is queued (bounded by ``timeout``) and stops."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    # -- export loop
    def _run(self) -> None:
        _suppress_instrumentation()
        while True:
            self._wake.wait(self.export_every_s)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._export_spans()
                self._export_metrics()
            except Exception:  # an exporter bug must not end the loop
                log.exception("takealook: export failed")
            if stopping:
                return

    def _take(self) -> list:
        with self._lock:
            batch = []
            spans = 0
            while self._spans and spans < BATCH:
                item = self._spans.popleft()
                self._queued -= item[2]
                spans += item[2]
                batch.append(item)
            return batch

    def _export_spans(self) -> None:
        from takealook.agent.otlp import frame_request
        from takealook.agent.otlp_post import Poster

        while True:
            batch = self._take()
            if not batch:
                return
            if self._span_exporter is None:
                self._span_exporter = Poster(self.traces_endpoint)
            count = sum(spans for _, _, spans in batch)
            body = frame_request([(self._resource_attributes(rb), groups) for rb, groups, _ in batch])
            delivered, reason = self._span_exporter.post(body)
            if delivered:
                self.exported += count
            else:
                self.failed += count
                self._unreported += count
                self._last_reason = reason
                self._warn()

    def _export_metrics(self) -> None:
        items = []
        while self._points:
            items.append(self._points.popleft())
        if not items:
            return
        data = _metrics_data([(self._resource(rb), points) for rb, points in items])
        if self._metric_exporter is None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            self._metric_exporter = OTLPMetricExporter(endpoint=self.metrics_endpoint)
        self._metric_exporter.export(data)

    def _resource_attributes(self, resource_bytes: bytes) -> dict:
        """The app's resource attributes plus the platform's (looked up once, here, off the app's path)."""
        attributes = self._resources.get(resource_bytes)
        if attributes is None:
            from takealook.agent.resource import ecs_attributes

            if self._platform is None:
                self._platform = ecs_attributes()
            attributes = {**marshal.loads(resource_bytes), **self._platform}
            if len(self._resources) > 1000:  # many short-lived processes: keep the map bounded
                self._resources.clear()
            self._resources[resource_bytes] = attributes
        return attributes

    def _resource(self, resource_bytes: bytes):
        from opentelemetry.sdk.resources import Resource

        return Resource(self._resource_attributes(resource_bytes))

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S and self._unreported:
            self._last_warning = now
            log.warning("takealook: could not deliver %d spans to %s (%s: collector down or slow?); "
                        "the app is not affected", self._unreported, self.traces_endpoint,
                        self._last_reason or "queue full")
            self._unreported = 0


def _suppress_instrumentation() -> None:
    """Our own HTTP calls (the OTLP posts) must not be traced, in thread mode."""
    from opentelemetry import context

    try:
        key = context._SUPPRESS_INSTRUMENTATION_KEY  # noqa: SLF001 - the key instrumentations agree on
    except AttributeError:  # pragma: no cover
        key = "suppress_instrumentation"
    context.attach(context.set_value(key, True))


def _metrics_data(items):
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Histogram,
        HistogramDataPoint,
        Metric,
        MetricsData,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from takealook import __version__

    scope = InstrumentationScope("takealook.agent", __version__)
    resource_metrics = []
    for resource, points in items:
        by_name: dict = {}
        for name, unit, attributes, start, end, count, total, low, high, buckets, bounds in points:
            by_name.setdefault((name, unit), []).append(HistogramDataPoint(
                attributes=attributes, start_time_unix_nano=start, time_unix_nano=end, count=count, sum=total,
                bucket_counts=list(buckets), explicit_bounds=list(bounds), min=low, max=high))
        metrics = [Metric(name=name, description="Duration of HTTP server requests.", unit=unit,
                          data=Histogram(data_points=data_points,
                                         aggregation_temporality=AggregationTemporality.DELTA))
                   for (name, unit), data_points in by_name.items()]
        resource_metrics.append(ResourceMetrics(resource=resource, scope_metrics=[
            ScopeMetrics(scope=scope, metrics=metrics, schema_url="")], schema_url=""))
    return MetricsData(resource_metrics=resource_metrics)


# --------------------------------------------------------------------------- helper process


def serve(fd: int, forwarder: Forwarder) -> None:
    """Reads messages from the socket until every writer has closed it, then flushes."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    # One buffer for every message (a message is decoded before the next is read): recv(1 MiB) would
    # allocate a fresh megabyte a message, which the kernel then faults in page by page.
    buffer = bytearray(RECV_BUFFER)
    view = memoryview(buffer)
    try:
        while True:
            try:
                size = sock.recv_into(buffer)
            except InterruptedError:
                continue
            except OSError:
                break
            if not size:
                break  # end of file: the app and all its forks are gone
            forwarder.submit(view[:size])
    finally:
        sock.close()
        forwarder.stop()


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m takealook.agent.exporter",
                                     description="takealook's export helper process (started by the agent)")
    parser.add_argument("--fd", type=int, required=True, help="the seqpacket socket to read")
    parser.add_argument("--traces-endpoint", required=True)
    parser.add_argument("--metrics-endpoint", required=True)
    parser.add_argument("--max-queue", type=int, default=20000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    # The OTLP exporter warns at every retry; our own warning, once a minute, says what matters.
    logging.getLogger("opentelemetry.exporter").setLevel(logging.ERROR)
    # Ctrl-C in the app's terminal reaches this process group too: keep exporting until EOF.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    forwarder = Forwarder(args.traces_endpoint, args.metrics_endpoint, args.max_queue).start()
    serve(args.fd, forwarder)
    return 0


if __name__ == "__main__":
    os.environ.pop("TAKEALOOK_AGENT_FD", None)
    sys.exit(main())
