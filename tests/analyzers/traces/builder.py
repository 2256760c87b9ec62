"""Synthetic traces for exact expectations: times in milliseconds from a fixed start."""

from __future__ import annotations

import itertools
import json
from typing import Optional

from takealook.collector.model import Span
from takealook.sqltext import fingerprint

BASE_NS = 1_700_000_000 * 10**9  # 2023-11-14
_trace_numbers = itertools.count(1)


class TraceBuilder:
    """Spans of one trace; every method returns the Span it added (use it as a parent)."""

    def __init__(self, offset_ms: float = 0.0):
        number = next(_trace_numbers)
        self.trace_id = f"{number:032x}"
        self.t0 = BASE_NS + int(offset_ms * 1e6)
        self.spans: list[Span] = []
        self._ids = itertools.count(1)

    def span(self, service: str, name: str, start_ms: float, duration_ms: float, parent: Optional[Span] = None,
             kind: str = "internal", **fields) -> Span:
        span = Span(
            trace_id=self.trace_id, span_id=f"{int(self.trace_id, 16) % 10**6:06x}{next(self._ids):010x}",
            parent_span_id=fields.pop("parent_span_id", parent.span_id if parent is not None else None),
            service=service, name=name, kind=kind, start_ns=self.t0 + int(start_ms * 1e6),
            duration_ns=int(duration_ms * 1e6), status=fields.pop("status", "unset"), **fields,
        )
        self.spans.append(span)
        return span

    def server(self, service: str, method: str, route: str, start_ms: float, duration_ms: float,
               parent: Optional[Span] = None, status_code: int = 200, **fields) -> Span:
        if status_code >= 500:
            fields.setdefault("status", "error")
        return self.span(service, f"{method} {route}", start_ms, duration_ms, parent, "server", http_method=method,
                         http_route=route, http_status=status_code, **fields)

    def sql(self, service: str, statement: str, start_ms: float, duration_ms: float, parent: Span,
            db_name: str = "app", **fields) -> Span:
        return self.span(service, statement.split()[0], start_ms, duration_ms, parent, "client",
                         db_system="postgresql", db_name=db_name, db_statement=statement,
                         db_fingerprint=fingerprint(statement), **fields)

    def http(self, service: str, method: str, url: str, start_ms: float, duration_ms: float, parent: Span,
             status_code: Optional[int] = 200, **fields) -> Span:
        host = url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
        path = "/" + url.split("://", 1)[1].split("/", 1)[1] if "/" in url.split("://", 1)[1] else "/"
        return self.span(service, method, start_ms, duration_ms, parent, "client", http_method=method, url_full=url,
                         url_path=path, server_address=host, http_status=status_code, **fields)

    def call(self, caller: str, callee: str, method: str, url: str, route: str, start_ms: float,
             duration_ms: float, parent: Span, server_ms: Optional[float] = None, lag_ms: float = 0.5) -> Span:
        """A client span and, under it, the callee's server span; returns the server span."""
        client = self.http(caller, method, url, start_ms, duration_ms, parent)
        server_ms = duration_ms - 2 * lag_ms if server_ms is None else server_ms
        return self.server(callee, method, route, start_ms + lag_ms, server_ms, client)


def exception_events(kind: str, message: str) -> str:
    return json.dumps([{"name": "exception", "time_ns": BASE_NS,
                        "attributes": {"exception.type": kind, "exception.message": message}}])


def otlp_request(traces):
    """An ExportTraceServiceRequest of the spans, typed fields as semantic-convention attributes."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from takealook.collector.model import KINDS, STATUSES

    from takealook import loadmark

    request = ExportTraceServiceRequest()
    by_resource: dict[tuple, object] = {}
    for spans in traces:
        label = getattr(spans, "load", None)  # a TraceSpans of a load test: every span carries the mark
        for s in spans:
            key = (s.service, s.resource_json)
            scope_spans = by_resource.get(key)
            if scope_spans is None:
                resource_spans = request.resource_spans.add()
                _attributes(resource_spans.resource.attributes,
                            {**json.loads(s.resource_json or "{}"), "service.name": s.service})
                scope_spans = by_resource[key] = resource_spans.scope_spans.add()
                scope_spans.scope.name = "tests"
            out = scope_spans.spans.add()
            out.trace_id = bytes.fromhex(s.trace_id)
            out.span_id = bytes.fromhex(s.span_id)
            if s.parent_span_id:
                out.parent_span_id = bytes.fromhex(s.parent_span_id)
            if label:
                out.trace_state = loadmark.entry(label)
            out.name = s.name
            out.kind = KINDS.index(s.kind)
            out.start_time_unix_nano = s.start_ns
            out.end_time_unix_nano = s.start_ns + s.duration_ns
            out.status.code = STATUSES.index(s.status)
            out.status.message = s.status_message
            typed = {"http.request.method": s.http_method, "http.route": s.http_route,
                     "http.response.status_code": s.http_status, "url.path": s.url_path, "url.full": s.url_full,
                     "server.address": s.server_address, "db.system": s.db_system, "db.namespace": s.db_name,
                     "db.query.text": s.db_statement}
            _attributes(out.attributes, {**json.loads(s.attributes_json or "{}"),
                                         **{k: v for k, v in typed.items() if v is not None}})
            for event in json.loads(s.events_json or "[]"):
                added = out.events.add()
                added.name = event["name"]
                added.time_unix_nano = event["time_ns"]
                _attributes(added.attributes, event.get("attributes", {}))
    return request


def _attributes(target, values: dict) -> None:
    for key, value in values.items():
        kv = target.add()
        kv.key = key
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        else:
            kv.value.string_value = str(value)


def metrics_request(points):
    """An ExportMetricsServiceRequest of histogram points (one resource per service)."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    request = ExportMetricsServiceRequest()
    for p in points:
        resource_metrics = request.resource_metrics.add()
        _attributes(resource_metrics.resource.attributes, {"service.name": p.service})
        metric = resource_metrics.scope_metrics.add().metrics.add()
        metric.name, metric.unit = p.name, p.unit
        metric.histogram.aggregation_temporality = ("unspecified", "delta", "cumulative").index(p.temporality)
        point = metric.histogram.data_points.add()
        point.start_time_unix_nano, point.time_unix_nano = p.start_ns, p.time_ns
        point.count, point.sum = p.count, p.sum
        point.explicit_bounds.extend(p.bounds)
        point.bucket_counts.extend(p.bucket_counts)
        _attributes(point.attributes, {k: v for k, v in {"http.request.method": p.http_method,
                                                        "http.route": p.http_route,
                                                        "http.response.status_code": p.http_status}.items()
                                       if v is not None})
    return request


def write_store(path, traces, points=()) -> None:
    """Store traces (lists of Span) and MetricPoints the way the collector does: OTLP in, write API."""
    from takealook.collector.convert import Converter
    from takealook.collector.store import SpanStore

    converter = Converter()
    batches = [converter.traces(otlp_request(traces).SerializeToString()).batch]
    if points:
        batches.append(converter.metrics(metrics_request(points)).batch)
    store = SpanStore(path)
    try:
        store.write(batches)
    finally:
        store.close()


def file_exporter_line(traces) -> str:
    """The traces as one line of the Collector's file exporter: OTLP JSON, ids in hex (``traces import`` reads it)."""
    import base64

    from google.protobuf import json_format

    document = json_format.MessageToDict(otlp_request(traces))
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document)


def write_sqlite_and_chdb(folder, traces) -> dict:
    """The same traces in a SQLite store and a chdb one (through ``traces import`` of an exporter file)."""
    from takealook.collector import parse_store
    from takealook.collector.clickhouse_write import ClickHouseWriter
    from takealook.collector.importer import import_files

    write_store(folder / "spans.db", traces)
    exported = folder / "traces.json"
    exported.write_text("".join(file_exporter_line(traces[i:i + 500]) + "\n" for i in range(0, len(traces), 500)))
    url = parse_store(f"chdb:{folder / 'ch'}")
    writer = ClickHouseWriter(url)
    try:
        import_files([exported], writer)
    finally:
        writer.close()
    return {"sqlite": folder / "spans.db", "chdb": url}
