"""Helpers for the collector's tests: an in-process collector, spans made by the real SDK, raw OTLP."""

from __future__ import annotations

import http.client
import os
import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from takealook.collector.server import Collector
from takealook.collector.settings import CollectorSettings


def start_collector(tmp_path, **overrides) -> Collector:
    settings = dict(store=tmp_path / "spans.db", http=("127.0.0.1", 0), grpc=("127.0.0.1", 0))
    settings.update(overrides)
    return Collector(CollectorSettings(**settings)).start()


@pytest.fixture
def collector(tmp_path):
    running = start_collector(tmp_path)
    yield running
    running.stop()


def sdk_spans(service: str = "orders", traces: int = 3, seed: int = 0):
    """Finished spans from the real SDK: a server span with a DB child (old semconv names) and an
    HTTP client child (new names), an error with an exception event, a link, every attribute type."""
    rng = random.Random(seed)
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.version": "1.2.3",
                                                        "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.collector", "0.1")
    for number in range(traces):
        order = rng.randrange(1, 10_000)
        with tracer.start_as_current_span("GET /orders/<int:id>", kind=SpanKind.SERVER, attributes={
            "http.request.method": "GET", "http.route": "/orders/<int:id>", "url.path": f"/orders/{order}",
            "url.query": "expand=items", "http.response.status_code": 500 if number == 0 else 200,
            "server.port": 8000, "sampled.ratio": 0.5, "feature.flags": ["a", "b"], "retry": False,
        }) as root:
            with tracer.start_as_current_span("SELECT orders_order", kind=SpanKind.CLIENT, attributes={
                "db.system": "postgresql", "db.name": "orders", "net.peer.name": "db.internal",
                "db.statement": "SELECT * FROM orders_order WHERE id = %s",
            }):
                pass
            with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={
                "http.method": "GET", "http.url": f"http://user:secret@stock.internal:8001/stock/{order}?x=1",
                "http.status_code": 200,
            }, links=[_link(root)]):
                pass
            if number == 0:
                root.record_exception(ValueError("boom"))
                root.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def _link(span):
    from opentelemetry.trace import Link

    return Link(span.get_span_context(), {"link.kind": "parent-ish"})


def post(url: str, path: str, body: bytes, headers: dict | None = None, method: str = "POST"):
    """One raw HTTP request; returns (status, headers dict (lowercase), body)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def raw_request(spans: int, service: str = "loadgen", seed: int | None = None) -> ExportTraceServiceRequest:
    """A protobuf request of ``spans`` spans (20 per trace) built without the SDK (fast)."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    scope_spans = resource_spans.scope_spans.add()
    trace_id = root = None
    for number in range(spans):
        if number % 20 == 0:
            trace_id, root = _random_bytes(rng, 16), _random_bytes(rng, 8)
            span = scope_spans.spans.add(trace_id=trace_id, span_id=root, name="GET /", kind=2,
                                         start_time_unix_nano=1_700_000_000_000_000_000 + number,
                                         end_time_unix_nano=1_700_000_000_010_000_000 + number)
            span.attributes.append(KeyValue(key="http.route", value=AnyValue(string_value="/")))
            continue
        span = scope_spans.spans.add(trace_id=trace_id, span_id=_random_bytes(rng, 8), parent_span_id=root,
                                     name="SELECT", kind=3, start_time_unix_nano=1_700_000_000_000_000_000 + number,
                                     end_time_unix_nano=1_700_000_000_001_000_000 + number)
        span.attributes.append(KeyValue(key="db.statement", value=AnyValue(string_value="SELECT 1")))
    return request


def _random_bytes(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size) if hasattr(rng, "randbytes") else os.urandom(size)


def big_request(size: int, seed: int) -> ExportTraceServiceRequest:
    """A request of about ``size`` bytes: traces of 20 spans, each span with its own ~900-byte
    attribute value (so nothing is cached and converting it costs what a real large body does)."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="big")))
    spans = resource_spans.scope_spans.add().spans
    filler = "x" * 900
    number = 0
    while number * 960 < size - 20 * 960:
        trace_id = _random_bytes(rng, 16)
        for _ in range(20):
            span = spans.add(trace_id=trace_id, span_id=_random_bytes(rng, 8), name="GET /big", kind=2,
                             start_time_unix_nano=1_700_000_000_000_000_000 + number,
                             end_time_unix_nano=1_700_000_000_000_100_000 + number)
            span.attributes.append(KeyValue(key="filler", value=AnyValue(string_value=f"{filler}{number}")))
            number += 1
    return request
