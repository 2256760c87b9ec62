"""OTLP JSON into protobuf: the fast trace builder agrees with protobuf's own JSON parser."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from takealook.collector.otlp_json import BadRequest, parse_traces
from tests.collector.conftest import sdk_spans

_IDS = ("traceId", "spanId", "parentSpanId")


def _otlp_json(request: ExportTraceServiceRequest, snake: bool = False) -> dict:
    """As OTLP/JSON writers produce it: hex ids (protobuf's JSON has base64)."""
    document = json_format.MessageToDict(request, preserving_proto_field_name=snake)
    for resource_spans in document["resource_spans" if snake else "resourceSpans"]:
        for scope_spans in resource_spans["scope_spans" if snake else "scopeSpans"]:
            for span in scope_spans["spans"]:
                for holder in [span, *span.get("links", [])]:
                    for key in _IDS + ("trace_id", "span_id", "parent_span_id"):
                        if key in holder:
                            holder[key] = base64.b64decode(holder[key]).hex()
    return document


@pytest.mark.parametrize("snake", [False, True])
def test_same_message_as_protobufs_parser(snake):
    request = encode_spans(sdk_spans(traces=3))
    span = request.resource_spans[0].scope_spans[0].spans[0]
    value = span.attributes.add(key="nested").value
    inner = value.kvlist_value.values.add(key="list")
    inner.value.array_value.values.add(double_value=1.5)
    inner.value.array_value.values.add(bytes_value=b"\x00\xff")
    inner.value.array_value.values.add(int_value=-(2**62))
    span.attributes.add(key="nan").value.double_value = float("nan")
    document = _otlp_json(request, snake)
    assert parse_traces(json.dumps(document)).SerializeToString(deterministic=True) == (
        request.SerializeToString(deterministic=True))


def test_enum_names_numbers_as_strings_and_unknown_fields():
    document = {"resourceSpans": [{"unknownField": {"x": 1}, "scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "n",
        "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": 1700000000000000000, "endTimeUnixNano": "1700000000000000001",
        "status": {"code": "STATUS_CODE_ERROR", "message": "m"}, "futureField": [1, 2],
        "attributes": [{"key": "i", "value": {"intValue": "-7"}}, {"key": "d", "value": {"doubleValue": "Infinity"}},
                       {"key": "n", "value": None}, {"key": "e", "value": {}}]}]}]}]}
    span = parse_traces(json.dumps(document)).resource_spans[0].scope_spans[0].spans[0]
    assert (span.kind, span.status.code, span.end_time_unix_nano) == (2, 2, 1700000000000000001)
    assert span.attributes[0].value.int_value == -7 and span.attributes[1].value.double_value == float("inf")
    assert span.attributes[2].value.WhichOneof("value") is None  # null: not set
    assert span.attributes[3].value.WhichOneof("value") is None  # {}: an empty AnyValue


@pytest.mark.parametrize("span, where", [
    ({"name": 5}, "spans[0].name: expected a string"),
    ({"kind": "SERVER"}, "spans[0].kind: expected one of"),
    ({"startTimeUnixNano": "soon"}, "spans[0].startTimeUnixNano: expected an integer"),
    ({"startTimeUnixNano": -1}, "out of range"),
    ({"attributes": {"k": "v"}}, "spans[0].attributes: expected a list"),
    ({"attributes": [{"key": "k", "value": {"intValue": "1.5"}}]}, "attributes[0].value.intValue"),
    ({"attributes": [{"key": "k", "value": {"boolValue": "true"}}]}, "expected true or false"),
    ({"attributes": [{"key": "k", "value": {"bytesValue": "%%%"}}]}, "not base64"),
    ({"attributes": [{"key": "k", "value": "v"}]}, "expected an AnyValue object"),
    ({"events": [3]}, "events[0]: expected an object"),
    ({"traceId": 12}, "traceId: expected a hex string"),
])
def test_wrong_types_name_the_place(span, where):
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    with pytest.raises(BadRequest, match=where.replace("[", r"\[").replace("]", r"\]")):
        parse_traces(json.dumps(document))


def test_deep_nesting_is_refused_not_crashed():
    value: dict = {"stringValue": "x"}
    for _ in range(200):
        value = {"arrayValue": {"values": [value]}}
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": value}]}]}]}]}
    with pytest.raises(BadRequest, match="nested"):
        parse_traces(json.dumps(document))


def test_the_input_document_is_not_changed():
    document = _otlp_json(encode_spans(sdk_spans(traces=1)))
    before = copy.deepcopy(document)
    parse_traces(json.dumps(document))
    from takealook.collector.otlp_json import traces_from_document

    traces_from_document(document)
    assert document == before
