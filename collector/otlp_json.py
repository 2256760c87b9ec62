"""OTLP's JSON encoding (OTLP/HTTP JSON, the Collector's file exporter) into protobuf.

Trace requests go through ``otlp_json_traces.build_traces`` (fast, strict).
Metric requests, fewer and smaller, go through the generic
``google.protobuf.json_format``: OTLP JSON is the protobuf JSON mapping except
that trace and span ids (in exemplars) are hex strings, not base64, so those
are rewritten first; wrong types (a string where an object belongs, text in a
nanosecond field) raise ``BadRequest``. Unknown fields are ignored, as the
OTLP spec asks of receivers.

A malformed id (not hex) becomes empty, so that span is rejected on its own
in the partial-success answer rather than failing the whole request.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from takealook.collector.otlp_json_traces import BadRequest, build_traces

__all__ = ["BadRequest", "parse_metrics", "parse_traces", "metrics_from_document", "traces_from_document"]


_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def parse_traces(body: bytes | str) -> ExportTraceServiceRequest:
    return traces_from_document(_load(body))


def parse_metrics(body: bytes | str) -> ExportMetricsServiceRequest:
    return metrics_from_document(_load(body))


def traces_from_document(document: dict) -> ExportTraceServiceRequest:
    """An already-parsed JSON object (see ``otlp_json_traces``)."""
    try:
        return build_traces(document)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("body is nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as error:
        # A string protobuf cannot hold (a lone surrogate from a "\ud800" escape), a value
        # out of range: the request is bad, whatever field it was in.
        raise BadRequest(f"not an OTLP request: {_first_line(error)}") from None


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
    except RecursionError:
        # json's C scanner recurses once per [ or {; Python's recursion limit stops it cleanly.
        raise BadRequest(f"body is nested too deeply (more than about {sys.getrecursionlimit()} levels "
                         f"of [ or {{)") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"body is not valid JSON: {_first_line(error)}") from None
    if not isinstance(document, dict):
        raise BadRequest("body must be a JSON object (an OTLP export request)")
    return document


def _parse(document: dict, message):
    try:
        return json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError, OverflowError) as error:
        raise BadRequest(f"not an OTLP request: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:300]


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
