"""OTLP requests (decoded protobuf messages) into store rows.

``convert_traces(request)`` and ``convert_metrics(request)`` return a
``Converted``: an ``IngestBatch`` for the store, how many items were rejected
as invalid (for OTLP's partial-success answer) and a message explaining the
first problems. Invalid items are skipped, never the whole request:

- a span whose trace id is not 16 bytes or all zero, whose span id is not 8
  bytes or all zero, whose parent id is neither empty nor 8 bytes, without a
  start time, or ending before it starts;
- a histogram point whose bucket counts do not match its bounds.

String attribute values longer than ``MAX_VALUE_CHARS`` are cut (and the
answer says so) so one runaway attribute cannot fill the store. Only
histogram metrics are stored (the HTTP server duration, for RED when traces
are sampled); other metric types are counted in ``ignored`` and dropped.

This is the collector's hot path: it runs for every span, so it avoids
per-span allocations it does not need (events and links are rare and skip
JSON encoding when empty).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass, field

from takealook.collector.semconv import metric_fields, typed_fields
from takealook.collector.store import IngestBatch, TraceInfo

MAX_VALUE_CHARS = 65536
UNKNOWN_SERVICE = "unknown_service"
KIND_SERVER = 2
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_MAX_PROBLEMS = 3  # problems named in the partial-success message

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_dumps_sorted = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                                 allow_nan=False).encode


@dataclass
class Converted:
    batch: IngestBatch
    rejected: int = 0
    ignored: int = 0  # metric points of types the store does not keep
    problems: list[str] = field(default_factory=list)
    truncated: int = 0  # attribute values cut to MAX_VALUE_CHARS

    def reject(self, problem: str) -> None:
        self.rejected += 1
        if len(self.problems) < _MAX_PROBLEMS and problem not in self.problems:
            self.problems.append(problem)

    @property
    def message(self) -> str:
        """OTLP partial-success error_message: empty when all is well."""
        parts = []
        if self.rejected:
            parts.append(f"rejected {self.rejected}: " + "; ".join(self.problems))
        if self.truncated:
            parts.append(f"{self.truncated} attribute values longer than {MAX_VALUE_CHARS} characters were cut")
        return "; ".join(parts)


# -- attribute values ---------------------------------------------------------

def _value(value, out: Converted):
    which = value.WhichOneof("value")
    if which == "string_value":
        text = value.string_value
        if len(text) > MAX_VALUE_CHARS:
            out.truncated += 1
            return text[:MAX_VALUE_CHARS]
        return text
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        number = value.double_value
        # JSON has no NaN or infinity; OTLP JSON writes them as strings too.
        return number if math.isfinite(number) else str(number)
    if which == "array_value":
        return [_value(v, out) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values, out)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def attributes(kvs, out: Converted) -> dict:
    return {kv.key: _value(kv.value, out) for kv in kvs}


def _resource(resource, batch: IngestBatch, out: Converted) -> tuple[str, str]:
    """(service, digest) of a resource, registering it in the batch."""
    attrs = attributes(resource.attributes, out)
    service = attrs.get("service.name")
    if not isinstance(service, str) or not service:
        service = UNKNOWN_SERVICE
    text = _dumps_sorted(attrs)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()
    batch.resources.setdefault(digest, (service, text))
    return service, digest


# -- traces -------------------------------------------------------------------

def convert_traces(request) -> Converted:
    """An ``ExportTraceServiceRequest`` into span rows and trace summaries."""
    out = Converted(IngestBatch())
    for resource_spans in request.resource_spans:
        service, digest = _resource(resource_spans.resource, out.batch, out)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                _span(span, service, digest, scope, out)
    return out


def _span(span, service: str, digest: str, scope: str, out: Converted) -> None:
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        return out.reject("trace_id must be 16 bytes, not all zero")
    if len(span_id) != 8 or span_id == _ZERO_SPAN:
        return out.reject("span_id must be 8 bytes, not all zero")
    if parent and (len(parent) != 8):
        return out.reject("parent_span_id must be empty or 8 bytes")
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start == 0:
        return out.reject("start_time_unix_nano is missing")
    if end < start:
        return out.reject("end_time_unix_nano is before start_time_unix_nano")
    kind = span.kind if 0 <= span.kind <= 5 else 0
    attrs = attributes(span.attributes, out) if span.attributes else {}
    typed = typed_fields(attrs, kind)
    status = span.status
    code = status.code if 0 <= status.code <= 2 else 0
    events = _events(span.events, out) if span.events else "[]"
    links = _links(span.links, out) if span.links else "[]"
    trace_hex = trace_id.hex()
    out.batch.spans.append([
        trace_hex, span_id.hex(), parent.hex() if parent and parent != _ZERO_SPAN else None, service, span.name,
        kind, start, end - start, code, status.message, *typed, _dumps(attrs), digest, events, links, scope,
    ])
    info = out.batch.traces.get(trace_hex)
    if info is None:
        info = out.batch.traces[trace_hex] = TraceInfo(start, end)
    else:
        if start < info.start_ns:
            info.start_ns = start
        if end > info.end_ns:
            info.end_ns = end
    info.services.add(service)
    if kind == KIND_SERVER and typed[1] is not None:
        info.endpoints.add((service, typed[1]))


def _events(events, out: Converted) -> str:
    return _dumps([{"name": e.name, "time_ns": e.time_unix_nano, "attributes": attributes(e.attributes, out)}
                   for e in events])


def _links(links, out: Converted) -> str:
    return _dumps([{"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                    "attributes": attributes(link.attributes, out)} for link in links])


# -- metrics ------------------------------------------------------------------

def convert_metrics(request) -> Converted:
    """An ``ExportMetricsServiceRequest`` into histogram point rows."""
    out = Converted(IngestBatch())
    for resource_metrics in request.resource_metrics:
        service, digest = _resource(resource_metrics.resource, out.batch, out)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                data = metric.WhichOneof("data")
                if data == "histogram":
                    _histogram(metric, service, digest, out)
                elif data is not None:
                    out.ignored += len(getattr(metric, data).data_points)
    return out


def _histogram(metric, service: str, digest: str, out: Converted) -> None:
    histogram = metric.histogram
    temporality = histogram.aggregation_temporality if 0 <= histogram.aggregation_temporality <= 2 else 0
    for point in histogram.data_points:
        bounds, counts = list(point.explicit_bounds), list(point.bucket_counts)
        if counts and len(counts) != len(bounds) + 1:
            out.reject(f"{metric.name}: bucket_counts must have one more entry than explicit_bounds")
            continue
        if point.time_unix_nano == 0:
            out.reject(f"{metric.name}: time_unix_nano is missing")
            continue
        if not all(math.isfinite(b) for b in bounds):
            out.reject(f"{metric.name}: explicit_bounds must be finite numbers")
            continue
        attrs = attributes(point.attributes, out)
        method, route, status = metric_fields(attrs)
        total = point.sum if point.HasField("sum") and math.isfinite(point.sum) else 0.0
        out.batch.metrics.append([
            service, metric.name, metric.unit, temporality, point.start_time_unix_nano, point.time_unix_nano,
            method, route, status, point.count, total, _dumps(bounds), _dumps(counts), _dumps_sorted(attrs),
            digest,
        ])
