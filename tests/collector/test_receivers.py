"""The real OpenTelemetry SDK exporters (HTTP protobuf, gRPC) against a running collector."""

from __future__ import annotations

import gzip
import json

import grpc
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult

from takealook.collector import open_store
from tests.collector.conftest import JSON, PROTOBUF, post, raw_request, sdk_spans, start_collector
from tests.conftest import wait_for
from tests.contracts import check


def _hex(number: int, width: int) -> str:
    return format(number, f"0{width}x")


def _assert_stored(store_path, spans):
    with open_store(store_path) as store:
        stored = {s.span_id: s for t in store.iter_traces() for s in t}
    assert len(stored) == len(spans)
    for span in spans:
        got = stored[_hex(span.context.span_id, 16)]
        assert got.trace_id == _hex(span.context.trace_id, 32)
        assert got.parent_span_id == (_hex(span.parent.span_id, 16) if span.parent else None)
        assert (got.name, got.start_ns, got.end_ns) == (span.name, span.start_time, span.end_time)
        assert got.kind == span.kind.name.lower() and got.status == span.status.status_code.name.lower()
        assert got.attributes() == {k: list(v) if isinstance(v, tuple) else v for k, v in span.attributes.items()}
        assert got.resource() == dict(span.resource.attributes)
        assert [e.name for e in got.events()] == [e.name for e in span.events]


def test_http_protobuf_exporter_gzip_and_plain(collector):
    spans = sdk_spans(traces=4)
    plain = OTLPSpanExporter(endpoint=collector.http_url + "/v1/traces")
    zipped = OTLPSpanExporter(endpoint=collector.http_url + "/v1/traces", compression=Compression.Gzip)
    assert plain.export(spans[:6]) == SpanExportResult.SUCCESS
    assert zipped.export(spans[6:]) == SpanExportResult.SUCCESS
    plain.shutdown()
    zipped.shutdown()
    _assert_stored(collector.settings.store, spans)


def test_grpc_exporter(collector):
    spans = sdk_spans(service="stock", traces=4, seed=1)
    exporter = GrpcSpanExporter(endpoint=collector.grpc_address, insecure=True)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    _assert_stored(collector.settings.store, spans)


def test_metrics_from_both_exporters(collector):
    views = [View(instrument_name="http.server.request.duration",
                  aggregation=ExplicitBucketHistogramAggregation((0.005, 0.05, 0.5, 5.0)))]
    for exporter, name, unit, value in (
        (OTLPMetricExporter(endpoint=collector.http_url + "/v1/metrics"), "http.server.request.duration", "s", 0.2),
        (GrpcMetricExporter(endpoint=collector.grpc_address, insecure=True), "http.server.duration", "ms", 200),
    ):
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(metric_readers=[reader], views=views,
                                 resource=Resource.create({"service.name": "gateway"}))
        histogram = provider.get_meter("tests").create_histogram(name, unit=unit)
        for _ in range(3):
            histogram.record(value, {"http.request.method": "GET", "http.route": "/orders/<int:id>",
                                     "http.response.status_code": 200})
        provider.shutdown()  # collects and exports once
    with open_store(collector.settings.store) as store:
        new = list(store.metric_points(name="http.server.request.duration"))
        old = list(store.metric_points(name="http.server.duration", service="gateway"))
    assert len(new) == 1 and len(old) == 1
    assert (new[0].unit, new[0].count, new[0].http_route, new[0].http_method, new[0].http_status) == (
        "s", 3, "/orders/<int:id>", "GET", 200)
    assert abs(new[0].sum - 0.6) < 1e-9 and new[0].bounds == (0.005, 0.05, 0.5, 5.0)
    assert new[0].bucket_counts == (0, 0, 3, 0, 0)
    assert (old[0].unit, old[0].count, old[0].sum) == ("ms", 3, 600)


def test_browser_json_with_preflight_and_cors(tmp_path):
    collector = start_collector(tmp_path, grpc=None, cors_origins=("https://app.example.com",))
    try:
        origin = {"Origin": "https://app.example.com"}
        status, headers, _ = post(collector.http_url, "/v1/traces", b"", method="OPTIONS", headers={
            **origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, traceparent"})
        assert status == 204
        assert headers["access-control-allow-origin"] == "https://app.example.com"
        assert "POST" in headers["access-control-allow-methods"]
        assert "traceparent" in headers["access-control-allow-headers"]
        status, headers, _ = post(collector.http_url, "/v1/traces", b"", method="OPTIONS", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert status == 403 and "access-control-allow-origin" not in headers
        # As the OpenTelemetry JS exporter sends it: camelCase keys, hex ids, strings for nanoseconds.
        body = {"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "frontend"}}]},
            "scopeSpans": [{"scope": {"name": "@opentelemetry/instrumentation-fetch"}, "spans": [{
                "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                "name": "HTTP GET", "kind": 3, "startTimeUnixNano": "1700000000000000000",
                "endTimeUnixNano": "1700000000250000000",
                "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}},
                               {"key": "http.url", "value": {"stringValue": "https://api.example.com/orders/7?q=1"}},
                               {"key": "http.status_code", "value": {"intValue": "200"}}],
                "status": {"code": 0}}]}]}]}
        status, headers, answer = post(collector.http_url, "/v1/traces", json.dumps(body).encode(),
                                       headers={**JSON, **origin})
        assert status == 200 and json.loads(answer) == {}
        assert headers["access-control-allow-origin"] == "https://app.example.com"
        assert headers["content-type"] == "application/json"
    finally:
        collector.stop()
    with open_store(collector.settings.store) as store:
        (span,) = store.trace("5b8efff798038103d269b633813fc60c")
    assert (span.service, span.span_id, span.kind, span.duration_ns) == ("frontend", "eee19b7ec3c1b174", "client",
                                                                          250_000_000)
    assert (span.url_full, span.server_address, span.http_status) == (
        "https://api.example.com/orders/7", "api.example.com", 200)
    assert span.scope == "@opentelemetry/instrumentation-fetch"


def test_partial_success_names_the_invalid_spans(collector):
    request = raw_request(40, seed=7)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[3].trace_id = b"\x00" * 16
    spans[5].span_id = b"short"
    spans[7].end_time_unix_nano = spans[7].start_time_unix_nano - 1
    spans[9].attributes.add(key="huge").value.string_value = "x" * 200_000
    status, _, body = post(collector.http_url, "/v1/traces", request.SerializeToString(), PROTOBUF)
    assert status == 200
    answer = ExportTraceServiceResponse.FromString(body)
    assert answer.partial_success.rejected_spans == 3
    assert "trace_id" in answer.partial_success.error_message
    assert "were cut" in answer.partial_success.error_message
    with open_store(collector.settings.store) as store:
        assert store.summary().spans == 37
        kept = next(s for t in store.iter_traces() for s in t if "huge" in s.attributes())
        assert len(kept.attributes()["huge"]) == 65536
    # The same over gRPC.
    with grpc.insecure_channel(collector.grpc_address) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=ExportTraceServiceResponse.FromString)
        answer = export(request, timeout=10)
    assert answer.partial_success.rejected_spans == 3


def test_token_is_required_when_set(tmp_path):
    collector = start_collector(tmp_path, token="s3cret")
    try:
        body = raw_request(20, seed=8).SerializeToString()
        assert post(collector.http_url, "/v1/traces", body, PROTOBUF)[0] == 401
        assert post(collector.http_url, "/v1/traces", body, {**PROTOBUF, "Authorization": "Bearer nope"})[0] == 401
        assert post(collector.http_url, "/v1/traces", body, {**PROTOBUF, "Authorization": "Bearer s3cret"})[0] == 200
        denied = GrpcSpanExporter(endpoint=collector.grpc_address, insecure=True, timeout=5)
        allowed = GrpcSpanExporter(endpoint=collector.grpc_address, insecure=True,
                                   headers={"authorization": "Bearer s3cret"})
        spans = sdk_spans(traces=1)
        assert denied.export(spans) == SpanExportResult.FAILURE
        assert allowed.export(spans) == SpanExportResult.SUCCESS
        denied.shutdown()
        allowed.shutdown()
        assert collector.status()["spans_stored"] == 23
    finally:
        collector.stop()


def test_status_page_and_unknown_paths(collector):
    status, headers, body = post(collector.http_url, "/", b"", method="GET")
    assert status == 200 and json.loads(body)["service"] == "takealook collector"
    check("collect-status", json.loads(body))  # docs/json.md
    assert post(collector.http_url, "/v1/logs", b"x", PROTOBUF)[0] == 404
    assert post(collector.http_url, "/v1/traces", b"x", method="PUT")[0] == 405
    gz = gzip.compress(raw_request(20, seed=9).SerializeToString())
    assert post(collector.http_url, "/v1/traces", gz, {**PROTOBUF, "Content-Encoding": "gzip"})[0] == 200


def test_retention_runs_in_a_live_collector(tmp_path):
    import time

    collector = start_collector(tmp_path, grpc=None, retain_s=3600.0, retention_interval_s=0.05)
    try:
        old = raw_request(60, seed=31)  # 2023: older than an hour
        recent = raw_request(40, seed=32)
        now = time.time_ns()
        for span in recent.resource_spans[0].scope_spans[0].spans:
            span.start_time_unix_nano, span.end_time_unix_nano = now, now + 1000
        for request in (old, recent):
            assert post(collector.http_url, "/v1/traces", request.SerializeToString(), PROTOBUF)[0] == 200
        wait_for(lambda: collector.status()["traces_expired"] >= 3, timeout=10, message="old traces expired")
    finally:
        collector.stop()
    with open_store(collector.settings.store) as store:
        assert (store.summary().traces, store.summary().spans) == (2, 40)


def test_an_open_reader_does_not_hold_up_the_collector(collector):
    import sqlite3
    import time

    assert post(collector.http_url, "/v1/traces", raw_request(20, seed=33).SerializeToString(), PROTOBUF)[0] == 200
    reader = sqlite3.connect(f"file:{collector.settings.store}?mode=ro", uri=True, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM spans").fetchone()[0] == 20  # a snapshot, held open
        started = time.monotonic()
        status, _, _ = post(collector.http_url, "/v1/traces", raw_request(20, seed=34).SerializeToString(), PROTOBUF)
        assert status == 200 and time.monotonic() - started < 3
        assert reader.execute("SELECT count(*) FROM spans").fetchone()[0] == 20  # still its snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM spans").fetchone()[0] == 40
    finally:
        reader.close()


def test_metrics_as_otlp_json(collector):
    body = {"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name",
                                                              "value": {"stringValue": "frontend"}}]},
             "scopeMetrics": [{"metrics": [{"name": "http.server.request.duration", "unit": "s", "histogram": {
                 "aggregationTemporality": 1, "dataPoints": [{
                     "startTimeUnixNano": "1700000000000000000", "timeUnixNano": "1700000060000000000",
                     "count": "4", "sum": 1.25, "explicitBounds": [0.1, 1], "bucketCounts": ["1", "2", "1"],
                     "attributes": [{"key": "http.route", "value": {"stringValue": "/cart"}}],
                     "exemplars": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                                    "asDouble": 0.5, "timeUnixNano": "1700000001000000000"}]}]}}]}]}]}
    status, _, answer = post(collector.http_url, "/v1/metrics", json.dumps(body).encode(), JSON)
    assert status == 200 and json.loads(answer) == {}
    with open_store(collector.settings.store) as store:
        (point,) = store.metric_points()
    assert (point.service, point.temporality, point.count, point.sum, point.bucket_counts, point.http_route) == (
        "frontend", "delta", 4, 1.25, (1, 2, 1), "/cart")
    bad = json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": 5}]}]}]}).encode()
    assert post(collector.http_url, "/v1/metrics", bad, JSON)[0] == 400
