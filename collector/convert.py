"""OTLP requests into store rows: the collector's hot path.

``Converter().traces(body)`` takes a serialized ``ExportTraceServiceRequest``
(protobuf) and ``Converter().metrics(request)`` a decoded
``ExportMetricsServiceRequest``; both return a ``Converted``: an
``IngestBatch`` for the store, how many items were rejected as invalid (for
OTLP's partial-success answer) and a message naming the first problems.
Invalid items are skipped, never the whole request:

- a span whose trace id is not 16 bytes or all zero, whose span id is not 8
  bytes or all zero, whose parent id is neither empty nor 8 bytes, without a
  start time, ending before it starts or at 2^63 ns (year 2262) or later,
  or whose attributes, events, links or status are not valid protobuf;
- a histogram point whose bucket counts do not match its bounds, without a
  time, with a time or count of 2^63 or more, or with bounds that are not
  finite.

Every value is range-checked here, before the store: SQLite integers are
signed 64-bit, and one value it cannot take would fail the whole transaction,
i.e. every request committed with it. Strings longer than ``MAX_VALUE_CHARS``
(attribute keys and values; span, event, scope and metric names; status
messages) are cut, and the answer says so, so one runaway string cannot fill
the store. Only histogram metrics are stored (the HTTP server duration, for
RED when traces are sampled); points of other metric types are counted in
``ignored``.

Load-test traffic is recognised by its ``tracestate`` entry
(``takealook=load:<run label>``, ``takealook.loadmark``): the trace's summary
carries the run label, so readers can leave load tests out or pick one run.

Speed: spans are decoded with the wire-compatible types of ``lite.py``, which
leave attributes serialized; each distinct attribute set is decoded, mapped
(semantic conventions, SQL fingerprint) and JSON-encoded once, then reused
from a bounded cache (and each distinct attribute once, for the sets that
differ in one value, like a URL path). The collector uses one converter, from
its writer thread.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from takealook.collector.lite import TraceRequest
from takealook.collector.semconv import metric_fields, typed_fields
from takealook.collector.store import IngestBatch, TraceInfo
from takealook.loadmark import label_of

MAX_VALUE_CHARS = 65536
UNKNOWN_SERVICE = "unknown_service"
KIND_SERVER = 2
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_UNSET = (0, "")  # status code and message of a span without a status
_MAX_PROBLEMS = 3  # problems named in the partial-success message
# Each cache is cleared when it holds this many entries or about this many
# bytes (cheap, and the hot sets come back at once); the byte bound keeps
# large values (a 60 KB statement per span) from holding memory unseen.
_CACHE_LIMIT = 8192
CACHE_BYTES = 16 << 20
# SQLite's integers are signed 64-bit; OTLP's times and counts are unsigned.
TIME_LIMIT = 1 << 63

# Attribute sets get ids unique in this process, whatever converter made them:
# a SpanStore remembers which row each id went to (see store.IngestBatch).
_set_ids = itertools.count(1)
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_json_str = json.encoder.encode_basestring_ascii  # a str as a JSON string, as _dumps writes it
_dumps_sorted = json.JSONEncoder(separators=(",", ":"), sort_keys=True,
                                 allow_nan=False).encode


@dataclass
class Converted:
    batch: Optional[IngestBatch]  # None once stored (the writer lets the rows go)
    rejected: int = 0
    ignored: int = 0  # metric points of types the store does not keep
    truncated: int = 0  # strings cut to MAX_VALUE_CHARS
    problems: list[str] = field(default_factory=list)

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
            parts.append(f"{self.truncated} strings (attribute values, keys or names) longer than "
                         f"{MAX_VALUE_CHARS} characters were cut")
        return "; ".join(parts)


class _Values:
    """Decodes AnyValues, counting the strings it cuts."""

    def __init__(self):
        self.truncated = 0

    def value(self, value) -> Any:
        which = value.WhichOneof("value")
        if which == "string_value":
            text = value.string_value
            if len(text) > MAX_VALUE_CHARS:
                self.truncated += 1
                return text[:MAX_VALUE_CHARS]
            return text
        if which == "int_value":
            return value.int_value
        if which == "bool_value":
            return value.bool_value
        if which == "double_value":
            number = value.double_value
            # JSON has no NaN or infinity; OTLP's JSON encoding writes them as strings too.
            return number if math.isfinite(number) else str(number)
        if which == "array_value":
            return [self.value(v) for v in value.array_value.values]
        if which == "kvlist_value":
            return self.attributes(value.kvlist_value.values)
        if which == "bytes_value":
            return base64.b64encode(value.bytes_value).decode("ascii")
        return None

    def attributes(self, kvs) -> dict:
        return {self.cut(kv.key): self.value(kv.value) for kv in kvs}

    def cut(self, text: str) -> str:
        if len(text) > MAX_VALUE_CHARS:
            self.truncated += 1
            return text[:MAX_VALUE_CHARS]
        return text


class _Cache:
    """A dict bounded in entries and (approximate) bytes: cleared when either bound is reached."""

    __slots__ = ("data", "bytes")

    def __init__(self):
        self.data: dict = {}
        self.bytes = 0

    def put(self, key, value, size: int):
        if len(self.data) >= _CACHE_LIMIT or self.bytes + size > CACHE_BYTES:
            self.data.clear()
            self.bytes = 0
        self.data[key] = value
        self.bytes += size
        return value


class Converter:
    """Turns OTLP requests into ``IngestBatch``es, caching decoded attribute sets."""

    def __init__(self):
        # (kind, serialized attributes...) -> (set id, attrsets row after the id, strings cut)
        self._sets = _Cache()
        self._pairs = _Cache()  # serialized KeyValue -> see _pair
        self._resources = _Cache()  # serialized Resource -> (service, digest, JSON)
        self._scopes = _Cache()  # serialized InstrumentationScope -> name

    # -- traces ---------------------------------------------------------------

    def traces(self, body: bytes) -> Converted:
        """A serialized ``ExportTraceServiceRequest``; raises ``google.protobuf.message.DecodeError``."""
        request = TraceRequest.FromString(body)
        out = Converted(IngestBatch())
        for resource_spans in request.resource_spans:
            service, digest = self._resource(resource_spans.resource, out)
            for scope_spans in resource_spans.scope_spans:
                rows: list[tuple] = []
                self._spans(scope_spans.spans, service, rows, out)
                if rows:
                    out.batch.spans.append((digest, self._scope(scope_spans.scope, out), rows))
        return out

    def _spans(self, spans, service: str, rows: list[tuple], out: Converted) -> None:
        # One loop with everything in locals: this runs for every span received,
        # and each attribute read from a upb message costs about 0.1 µs. Spans
        # of one trace usually come one after the other (exporters batch them
        # as they end), so the per-trace work is done once per run of them.
        get_set, attribute_set = self._sets.data.get, self._attribute_set
        traces, attrsets = out.batch.traces, out.batch.attrsets
        append, new_set = rows.append, attrsets.setdefault
        last_trace = trace_hex = info = None
        low = high = 0
        for span in spans:
            trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
            start, end = span.start_time_unix_nano, span.end_time_unix_nano
            if (len(span_id) != 8 or (parent and len(parent) != 8) or not start or end < start
                    or end >= TIME_LIMIT or span_id == _ZERO_SPAN
                    or trace_id != last_trace and (len(trace_id) != 16 or trace_id == _ZERO_TRACE)):
                out.reject(_problem(span))
                continue
            kind = span.kind
            if not 0 <= kind <= 5:
                kind = 0
            key = (kind, *span.attributes)
            status, events, links = span.status, span.events, span.links
            try:  # the nested messages were left serialized: decoding them is where a bad span shows
                cached = get_set(key)
                if cached is None:
                    cached = attribute_set(key)
                code, message = self._status(status, out) if status else _UNSET
                events_text = self._events(events, out) if events else ""
                links_text = self._links(links, out) if links else ""
            except DecodeError:
                out.reject("attributes, events, links or status are not valid protobuf")
                continue
            set_id, row_rest, cut = cached
            new_set(set_id, row_rest)
            if cut:
                out.truncated += cut
            if trace_id != last_trace:
                if info is not None:
                    _extend(info, low, high)
                last_trace, trace_hex = trace_id, trace_id.hex()
                info = traces.get(trace_hex)
                if info is None:
                    traces[trace_hex] = info = TraceInfo(start, end, {service})
                else:
                    info.services.add(service)
                low, high = start, end
                # Every span of a load-test request inherits the mark: reading it
                # once per run of a trace's spans is enough, and costs nothing on
                # spans without a tracestate.
                state = span.trace_state
                if state and info.load is None:
                    info.load = label_of(state)
            else:
                if start < low:
                    low = start
                if end > high:
                    high = end
            if kind == KIND_SERVER and row_rest[2] is not None:  # http_route
                info.endpoints.add((service, row_rest[2]))
            name = span.name
            if len(name) > MAX_VALUE_CHARS:
                name = name[:MAX_VALUE_CHARS]
                out.truncated += 1
            append((trace_hex, span_id.hex(), parent.hex() if parent and parent != _ZERO_SPAN else "", name,
                    kind, start, end - start, code, message, set_id, events_text, links_text))
        if info is not None:
            _extend(info, low, high)

    def _attribute_set(self, key: tuple) -> tuple[int, tuple, int]:
        """(set id, attrsets row after the id, strings cut) of one (kind, attributes...) key."""
        attrs: dict[str, Any] = {}
        fragments = []
        cut = size = 0
        get_pair = self._pairs.data.get
        for raw in key[1:]:
            pair = get_pair(raw)
            if pair is None:
                pair = self._pair(raw)
            attrs[pair[0]] = pair[1]
            fragments.append(pair[3])
            cut += pair[2]
            size += len(raw)
        # The JSON object from the cached "key":value fragments, unless a key repeats.
        text = "{" + ",".join(fragments) + "}" if len(attrs) == len(fragments) else _dumps(attrs)
        # The kind is part of the key: server_address is derived for client spans only.
        entry = (next(_set_ids), (text, *typed_fields(attrs, key[0])), cut)
        return self._sets.put(key, entry, size + len(text))

    def _pair(self, raw: bytes) -> tuple[str, Any, int, str]:
        """(key, value, strings cut, JSON fragment) of a serialized KeyValue, cached."""
        kv = KeyValue.FromString(raw)
        key, any_value = kv.key, kv.value
        cut = 0
        if len(key) > MAX_VALUE_CHARS:
            key, cut = key[:MAX_VALUE_CHARS], 1
        if any_value.WhichOneof("value") == "string_value":  # most values: no _Values needed
            value = any_value.string_value
            if len(value) > MAX_VALUE_CHARS:
                value, cut = value[:MAX_VALUE_CHARS], cut + 1
            fragment = f"{_json_str(key)}:{_json_str(value)}"
        else:
            values = _Values()
            value = values.value(any_value)
            cut += values.truncated
            fragment = f"{_json_str(key)}:{_dumps(value)}"
        return self._pairs.put(raw, (key, value, cut, fragment), len(raw) + 2 * len(fragment))

    @staticmethod
    def _status(raw: bytes, out: Converted) -> tuple[int, str]:
        status = Status.FromString(raw)
        message = status.message
        if len(message) > MAX_VALUE_CHARS:
            message = message[:MAX_VALUE_CHARS]
            out.truncated += 1
        return (status.code if 0 <= status.code <= 2 else 0), message

    @staticmethod
    def _events(events, out: Converted) -> str:
        values = _Values()
        decoded = [OtlpSpan.Event.FromString(raw) for raw in events]
        text = _dumps([{"name": values.cut(e.name), "time_ns": e.time_unix_nano,
                        "attributes": values.attributes(e.attributes)} for e in decoded])
        out.truncated += values.truncated
        return text

    @staticmethod
    def _links(links, out: Converted) -> str:
        values = _Values()
        decoded = [OtlpSpan.Link.FromString(raw) for raw in links]
        text = _dumps([{"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                        "attributes": values.attributes(link.attributes)} for link in decoded])
        out.truncated += values.truncated
        return text

    def _resource(self, raw: bytes, out: Converted) -> tuple[str, str]:
        """(service, digest) of a serialized resource, registering it in the batch."""
        known = self._resources.data.get(raw)
        if known is None:
            values = _Values()
            attrs = values.attributes(Resource.FromString(raw).attributes)
            service = attrs.get("service.name")
            if not isinstance(service, str) or not service:
                service = UNKNOWN_SERVICE
            text = _dumps_sorted(attrs)
            digest = hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()
            # Cached with the strings it cut, so each request that repeats it says so.
            known = self._resources.put(raw, (service, digest, text, values.truncated), len(raw) + 2 * len(text))
        out.truncated += known[3]
        out.batch.resources.setdefault(known[1], (known[0], known[2]))
        return known[0], known[1]

    def _scope(self, raw: bytes, out: Converted) -> str:
        known = self._scopes.data.get(raw)
        if known is None:
            values = _Values()
            name = values.cut(InstrumentationScope.FromString(raw).name) if raw else ""
            known = self._scopes.put(raw, (name, values.truncated), len(raw) + len(name))
        out.truncated += known[1]
        return known[0]

    # -- metrics --------------------------------------------------------------

    def metrics(self, request) -> Converted:
        """A decoded ``ExportMetricsServiceRequest`` into histogram point rows."""
        out = Converted(IngestBatch())
        for resource_metrics in request.resource_metrics:
            raw = resource_metrics.resource.SerializeToString(deterministic=True)
            service, digest = self._resource(raw, out)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    data = metric.WhichOneof("data")
                    if data == "histogram":
                        _histogram(metric, service, digest, out)
                    elif data is not None:
                        out.ignored += len(getattr(metric, data).data_points)
        return out


def _extend(info: TraceInfo, start_ns: int, end_ns: int) -> None:
    if start_ns < info.start_ns:
        info.start_ns = start_ns
    if end_ns > info.end_ns:
        info.end_ns = end_ns


def _problem(span) -> str:
    """Why a span is invalid (see the module docstring)."""
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        return "trace_id must be 16 bytes, not all zero"
    if len(span_id) != 8 or span_id == _ZERO_SPAN:
        return "span_id must be 8 bytes, not all zero"
    if parent and len(parent) != 8:
        return "parent_span_id must be empty or 8 bytes"
    if not span.start_time_unix_nano:
        return "start_time_unix_nano is missing"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_time_unix_nano is before start_time_unix_nano"
    return "times must be below 2^63 ns (the year 2262)"


def _histogram(metric, service: str, digest: str, out: Converted) -> None:
    histogram = metric.histogram
    temporality = histogram.aggregation_temporality if 0 <= histogram.aggregation_temporality <= 2 else 0
    values = _Values()
    name, unit = values.cut(metric.name), values.cut(metric.unit)
    out.truncated += values.truncated
    label = name[:100]  # in problem messages
    for point in histogram.data_points:
        bounds, counts = list(point.explicit_bounds), list(point.bucket_counts)
        if counts and len(counts) != len(bounds) + 1:
            out.reject(f"{label}: bucket_counts must have one more entry than explicit_bounds")
            continue
        if point.time_unix_nano == 0:
            out.reject(f"{label}: time_unix_nano is missing")
            continue
        if point.time_unix_nano >= TIME_LIMIT or point.start_time_unix_nano >= TIME_LIMIT or point.count >= TIME_LIMIT:
            out.reject(f"{label}: times and count must be below 2^63")
            continue
        if not all(math.isfinite(b) for b in bounds):
            out.reject(f"{label}: explicit_bounds must be finite numbers")
            continue
        values = _Values()
        attrs = values.attributes(point.attributes)
        out.truncated += values.truncated
        method, route, status = metric_fields(attrs)
        total = point.sum if point.HasField("sum") and math.isfinite(point.sum) else 0.0
        out.batch.metrics.append([
            service, name, unit, temporality, point.start_time_unix_nano, point.time_unix_nano,
            method, route, status, point.count, total, _dumps(bounds), _dumps(counts), _dumps_sorted(attrs),
            digest,
        ])
