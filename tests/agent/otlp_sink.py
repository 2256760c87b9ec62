"""A real OTLP/HTTP receiver for the agent's tests, decoding what the agent really sends.

It listens on 127.0.0.1 (a free port), decodes ``ExportTraceServiceRequest``
and ``ExportMetricsServiceRequest`` protobuf bodies with opentelemetry-proto,
and keeps flat span and metric-point dicts. ``mode`` makes it misbehave the
way collectors do: ``"refuse"`` answers 503, ``"hang"`` holds each request
open (bounded), ``"ok"`` is normal.
"""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def _attributes(key_values) -> dict:
    return {kv.key: _value(kv.value) for kv in key_values}


class OtlpSink:
    def __init__(self, mode: str = "ok", hang_seconds: float = 30.0):
        self.mode = mode
        self.hang_seconds = hang_seconds
        self.spans: list[dict] = []
        self.points: list[dict] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                sink.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if sink.mode == "hang":
                    sink._stop.wait(sink.hang_seconds)
                if sink.mode in ("refuse", "hang"):
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path.endswith("/v1/traces"):
                    sink._add_spans(body)
                elif self.path.endswith("/v1/metrics"):
                    sink._add_points(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "OtlpSink":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def _add_spans(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append({
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None, "name": span.name,
                        "trace_state": span.trace_state,
                        "kind": span.kind, "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                        "status": span.status.code, "status_message": span.status.message,
                        "attributes": _attributes(span.attributes), "resource": resource,
                        "service": resource.get("service.name"), "scope": scope_spans.scope.name,
                        "events": [{"name": e.name, "attributes": _attributes(e.attributes)} for e in span.events],
                    })
        with self._lock:
            self.spans.extend(found)

    def _add_points(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    for point in metric.histogram.data_points:
                        found.append({"name": metric.name, "unit": metric.unit, "service": resource.get("service.name"),
                                      "attributes": _attributes(point.attributes), "count": point.count,
                                      "sum": point.sum, "temporality": metric.histogram.aggregation_temporality})
        with self._lock:
            self.points.extend(found)

    # -- queries for tests
    def spans_of(self, service: str | None = None, **where) -> list[dict]:
        with self._lock:
            spans = list(self.spans)
        return [s for s in spans if (service is None or s["service"] == service)
                and all(s["attributes"].get(k.replace("_", ".")) == v for k, v in where.items())]

    def wait_for_spans(self, predicate, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"spans never matched; have {len(spans)}: "
                                     f"{sorted({(s['service'], s['name']) for s in spans})}")
            time.sleep(0.05)
