"""Property tests over OTLP bodies against a running collector: any well-formed request, whatever its
values, is answered 200 with exactly its invalid spans rejected and every valid span stored; any
JSON mutation of it is answered 200 or 400; nothing is ever a 5xx or a dropped connection."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from takealook.collector import open_store
from tests.collector.conftest import JSON, PROTOBUF, post, start_collector

U64 = 2**64 - 1
EDGES = [0, 1, 2**31, 2**32, 2**53 + 1, 2**63 - 2, 2**63 - 1, 2**63, 2**63 + 1, U64 - 1, U64]
times = st.one_of(st.sampled_from(EDGES), st.integers(1_600_000_000_000_000_000, 1_800_000_000_000_000_000),
                  st.integers(0, U64))
texts = st.one_of(st.text(max_size=30), st.sampled_from(["", "200", "4" * 25, "²⁰⁰", "\x00", "GET /x"]),
                  st.integers(0, 70_000).map(lambda n: "s" * n))
int64s = st.one_of(st.sampled_from([-(2**63), 2**63 - 1, 0, 200, 404, 999, 1000]), st.integers(-(2**63), 2**63 - 1))
scalars = st.one_of(
    texts.map(lambda t: AnyValue(string_value=t)),
    int64s.map(lambda n: AnyValue(int_value=n)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: AnyValue(double_value=x)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.binary(max_size=20).map(lambda b: AnyValue(bytes_value=b)),
)
any_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
    st.lists(st.tuples(texts, inner), max_size=3).map(
        lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs])))),
    max_leaves=6)
attribute_keys = st.one_of(st.sampled_from(["http.response.status_code", "http.status_code", "http.route",
                                            "db.statement", "url.full", "service.name", "http.request.method"]),
                           texts)
attributes = st.lists(st.tuples(attribute_keys, any_values).map(lambda kv: KeyValue(key=kv[0], value=kv[1])),
                      max_size=4)


def _ids(size: int):
    return st.one_of(st.binary(min_size=size, max_size=size), st.binary(max_size=size + 2),
                     st.just(bytes(size)))


spans = st.fixed_dictionaries({
    "trace_id": _ids(16), "span_id": _ids(8), "parent_span_id": st.one_of(st.just(b""), _ids(8)),
    "name": texts, "kind": st.integers(-(2**31), 2**31 - 1), "start_time_unix_nano": times,
    "end_time_unix_nano": times, "attributes": attributes,
    "status": st.tuples(st.integers(-(2**31), 2**31 - 1), texts),
    "events": st.lists(st.tuples(times, texts, attributes), max_size=2),
})


def _request(span_fields: list[dict], resource: list[KeyValue]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(resource)
    out = resource_spans.scope_spans.add().spans
    for fields in span_fields:
        fields = dict(fields)
        code, message = fields.pop("status")
        events = fields.pop("events")
        span = out.add(**fields)
        span.status.code, span.status.message = code, message
        for time_ns, name, event_attributes in events:
            span.events.add(time_unix_nano=time_ns, name=name, attributes=event_attributes)
    return request


def _valid(span) -> bool:
    """The collector's rules, written out independently (docs/collector.md)."""
    return (len(span.trace_id) == 16 and any(span.trace_id) and len(span.span_id) == 8 and any(span.span_id)
            and len(span.parent_span_id) in (0, 8) and span.start_time_unix_nano > 0
            and span.start_time_unix_nano <= span.end_time_unix_nano < 2**63)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    collector = start_collector(tmp_path_factory.mktemp("fuzz"), grpc=None, synchronous="NORMAL")
    yield collector
    collector.stop()


FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


@FUZZ
@given(span_fields=st.lists(spans, min_size=1, max_size=6), resource=attributes)
def test_any_protobuf_request_stores_its_valid_spans_and_rejects_the_rest(shared, span_fields, resource):
    request = _request(span_fields, resource)
    status, _, answer = post(shared.http_url, "/v1/traces", request.SerializeToString(), PROTOBUF)
    assert status == 200
    all_spans = list(request.resource_spans[0].scope_spans[0].spans)
    valid = [span for span in all_spans if _valid(span)]
    assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == len(all_spans) - len(valid)
    with open_store(shared.settings.store, allow_empty=True) as store:
        for span in valid:
            assert span.span_id.hex() in {s.span_id for s in store.trace(span.trace_id.hex())}


def _json_of(request: ExportTraceServiceRequest) -> dict:
    document = json.loads(json_format.MessageToJson(request))
    for span_json, span in zip(document["resourceSpans"][0]["scopeSpans"][0].get("spans", []),
                               request.resource_spans[0].scope_spans[0].spans):
        for key, field in (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id")):
            if key in span_json:
                span_json[key] = getattr(span, field).hex()
    return document


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, path + (index,))


json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                           | st.text(max_size=10), lambda inner: st.lists(inner, max_size=2)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=2), max_leaves=4)


@FUZZ
@given(span_fields=st.lists(spans, min_size=1, max_size=4), data=st.data())
def test_any_json_request_or_mutation_is_200_or_400(shared, span_fields, data):
    request = _request(span_fields, [])
    document = _json_of(request)
    status, _, answer = post(shared.http_url, "/v1/traces", json.dumps(document).encode(), JSON)
    assert status == 200
    invalid = sum(1 for span in request.resource_spans[0].scope_spans[0].spans if not _valid(span))
    assert int(json.loads(answer).get("partialSuccess", {}).get("rejectedSpans", 0)) == invalid
    # One value anywhere replaced by any JSON value: a 200 or a 400 that says where, never a 5xx.
    path = data.draw(st.sampled_from(list(_paths(document))[1:]))
    holder = document
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = data.draw(json_values)
    status, _, answer = post(shared.http_url, "/v1/traces", json.dumps(document).encode(), JSON)
    assert status in (200, 400)
    if status == 400:
        assert json.loads(answer)["message"]
