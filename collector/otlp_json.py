"""OTLP's JSON encoding (OTLP/HTTP JSON, the Collector's file exporter) into protobuf.

OTLP JSON is the protobuf JSON mapping with three differences the standard
parser does not know: trace and span ids are hex strings, not base64; enum
fields may be numbers (the parser accepts both); keys are lowerCamelCase (it
accepts both spellings). So ids are rewritten from hex to base64 first, then
``google.protobuf.json_format`` does the strict work: wrong types (a string
where an object belongs, text in a nanosecond field) raise ``BadRequest``.
Unknown fields are ignored, as the OTLP spec asks of receivers.

A malformed id (not hex) becomes empty, so that span is rejected on its own
in the partial-success answer rather than failing the whole request.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class BadRequest(ValueError):
    """The body is not a valid OTLP request; the message says why (one line)."""


_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def parse_traces(body: bytes | str) -> ExportTraceServiceRequest:
    return traces_from_document(_load(body))


def parse_metrics(body: bytes | str) -> ExportMetricsServiceRequest:
    return metrics_from_document(_load(body))


def traces_from_document(document: dict) -> ExportTraceServiceRequest:
    """An already-parsed JSON object (modified in place: ids become base64)."""
    for span_holder in _walk(document, ("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"),
                             ("spans",)):
        _hex_ids(span_holder)
        for link in _list(span_holder, ("links",)):
            _hex_ids(link)
    return _parse(document, ExportTraceServiceRequest())


def metrics_from_document(document: dict) -> ExportMetricsServiceRequest:
    """An already-parsed JSON object (modified in place: exemplar ids become base64)."""
    for metric in _walk(document, ("resourceMetrics", "resource_metrics"), ("scopeMetrics", "scope_metrics"),
                        ("metrics",)):
        for data_key in ("histogram", "sum", "gauge", "exponentialHistogram", "exponential_histogram",
                         "summary"):
            data = metric.get(data_key)
            if isinstance(data, dict):
                for point in _list(data, ("dataPoints", "data_points")):
                    for exemplar in _list(point, ("exemplars",)):
                        _hex_ids(exemplar)
    return _parse(document, ExportMetricsServiceRequest())


def _load(body: bytes | str) -> dict:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("body must be a JSON object (an OTLP export request)")
    return document


def _parse(document: dict, message):
    try:
        return json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadRequest(f"not an OTLP request: {text[:300]}") from None


def _list(holder: Any, keys: tuple[str, ...]) -> list:
    if not isinstance(holder, dict):
        return []
    for key in keys:
        value = holder.get(key)
        if isinstance(value, list):
            return value
    return []


def _walk(document: dict, *levels: tuple[str, ...]):
    """Dicts at the end of a path of lists (wrong shapes are left for the parser to reject)."""
    items = [document]
    for keys in levels:
        items = [child for item in items for child in _list(item, keys) if isinstance(child, dict)]
    return items


def _hex_ids(holder: dict) -> None:
    for key in _ID_KEYS:
        value = holder.get(key)
        if isinstance(value, str):
            try:
                holder[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            except (ValueError, binascii.Error):
                holder[key] = ""
