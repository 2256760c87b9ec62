"""The agent's own OTLP encoder says exactly what OpenTelemetry's encoder says, and posts like its exporter."""

from __future__ import annotations

import gzip

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from takealook.agent.otlp import encode_request
from takealook.agent.otlp_post import Poster
from tests.agent.otlp_sink import OtlpSink

KINDS = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT}
STATUSES = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}
RESOURCE = {"service.name": "orders", "process.pid": 42, "host.name": "h"}
RECORDS = [
    (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 0, False, "GET /orders/<int:id>", 2,
     1_700_000_000_000_000_000, 1_700_000_000_012_345_678, 2, "ValueError: boom",
     {"http.request.method": "GET", "http.response.status_code": 500, "ok": True, "ratio": 0.25,
      "list": ("a", "b"), "ints": (1, -2), "negative": -7, "unicode": "naïve ✓"},
     [("exception", 1_700_000_000_010_000_000, {"exception.type": "ValueError", "exception.message": "boom"})],
     None, "vendor=abc", "takealook.agent", "0.1.0"),
    (0x0AF7651916CD43DD8448EB211C80319C, 0x1111111111111111, 0xB7AD6B7169203331, False, "SELECT orders", 3,
     1_700_000_000_001_000_000, 1_700_000_000_002_000_000, 0, "",
     {"db.system": "postgresql", "db.query.text": "SELECT * FROM t WHERE id = %s", "one": 1, "true": True},
     None, [(0x1234, 0x5678, {"why": "retry"})], "", "takealook.agent", "0.1.0"),
    (0x99, 0x98, 0x97, True, "remote child", 1, 5, 6, 1, "", {}, None, None, "", "app.code", ""),
    # The common spans, written inline (otlp.span_field): a root, a child, a remote child, no status.
    (0x5A, 0x5B, 0, False, "GET /plain", 2, 7, 9, 0, "", {"http.route": "/plain", "n": 3}, None, None, "",
     "app.code", ""),
    (0x5A, 0x5C, 0x5B, False, "SELECT shop", 3, 8, 9, 0, "", {"db.system": "postgresql", "ok": False}, None, None,
     "", "app.code", ""),
    (0x5A, 0x5D, 0x5E, True, "remote", 1, 8, 9, 0, "", {}, None, None, "", "app.code", ""),
    # Lengths past the encoder's table of small varints (2,048): a long statement, a span of 3 KB.
    (0x5A, 0x5F, 0x5B, False, "SELECT big", 3, 8, 9, 0, "",
     {"db.query.text": "SELECT " + "col, " * 600 + "1", "k" * 200: "v" * 2030, "db.system": "postgresql"},
     None, None, "", "app.code", ""),
]


def _sdk_spans():
    resource = Resource(RESOURCE)
    sampled = TraceFlags(TraceFlags.SAMPLED)
    spans = []
    for (trace_id, span_id, parent_id, remote, name, kind, start, end, status, text, attributes, events, links,
         state, scope, version) in RECORDS:
        trace_state = TraceState.from_header([state]) if state else None
        spans.append(ReadableSpan(
            name=name, context=SpanContext(trace_id, span_id, False, sampled, trace_state),
            parent=SpanContext(trace_id, parent_id, remote, sampled) if parent_id else None, resource=resource,
            attributes=attributes, events=[Event(n, a, t) for n, t, a in events or ()],
            links=[Link(SpanContext(t, s, True, sampled), a) for t, s, a in links or ()], kind=KINDS[kind],
            status=Status(STATUSES[status], text or None) if status == 2 else Status(STATUSES[status]),
            start_time=start, end_time=end, instrumentation_scope=InstrumentationScope(scope, version or None)))
    return spans


def _as_dict(message: ExportTraceServiceRequest) -> dict:
    data = MessageToDict(message)
    for resource_spans in data["resourceSpans"]:
        resource_spans["resource"]["attributes"].sort(key=lambda kv: kv["key"])
        for scope_spans in resource_spans["scopeSpans"]:
            scope_spans.pop("schemaUrl", None)
            for span in scope_spans["spans"]:
                span.pop("flags", None)  # newer SDKs set parent-remote bits; older ones do not
                for link in span.get("links", []):
                    link.pop("flags", None)
                span.get("attributes", []).sort(key=lambda kv: kv["key"])
        resource_spans.pop("schemaUrl", None)
    return data


def test_encoding_matches_the_sdk_encoder():
    ours = ExportTraceServiceRequest()
    ours.ParseFromString(encode_request([(RESOURCE, RECORDS)]))
    theirs = encode_spans(_sdk_spans())
    assert _as_dict(ours) == _as_dict(theirs)
    spans = ours.resource_spans[0].scope_spans[0].spans
    assert spans[1].parent_span_id.hex() == "b7ad6b7169203331"
    remote = ours.resource_spans[0].scope_spans[1].spans[0]
    assert remote.flags & 0x300 == 0x300  # its parent is remote, and says so


def test_poster_retries_until_the_collector_accepts_and_honours_settings(monkeypatch):
    with OtlpSink(mode="refuse") as sink:
        poster = Poster(sink.endpoint + "/v1/traces", environ={
            "OTEL_EXPORTER_OTLP_HEADERS": "x-team=shop,authorization=Bearer%20t0k", "OTEL_EXPORTER_OTLP_TIMEOUT": "5000",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip"})
        assert poster.headers["authorization"] == "Bearer t0k" and poster.headers["Content-Encoding"] == "gzip"
        import threading

        threading.Timer(0.6, lambda: setattr(sink, "mode", "ok")).start()
        delivered, reason = poster.post(encode_request([(RESOURCE, RECORDS)]))
        assert delivered, reason
        assert sink.requests >= 2 and len(sink.spans) == len(RECORDS)
    with OtlpSink(mode="refuse") as sink:
        delivered, reason = Poster(sink.endpoint + "/v1/traces", environ={"OTEL_EXPORTER_OTLP_TIMEOUT": "800"}).post(b"")
        assert not delivered and reason == "HTTP 503"
    assert gzip.decompress(gzip.compress(b"x")) == b"x"


def test_equal_values_of_other_types_keep_their_own_encoding():
    """1 == True == 1.0, and so are their hashes: a cached block or pair of one is never another's."""
    values = [1, True, 1.0, 0, False, 0.0, (1, 2), (True, 2), (1.0, 2), 1, True]
    records = [(0x5, 0x100 + i, 0x99, False, "op", 1, 10, 20, 0, "", {"flag": value, "n": "x"}, None, None, "",
                "s", "") for i, value in enumerate(values)]
    for _ in range(2):  # the second time from the caches
        ours = ExportTraceServiceRequest()
        ours.ParseFromString(encode_request([({"service.name": "t"}, records)]))
        got = [next(kv.value for kv in span.attributes if kv.key == "flag") for span in
               ours.resource_spans[0].scope_spans[0].spans]
        kinds = [value.WhichOneof("value") for value in got]
        assert kinds == ["int_value", "bool_value", "double_value"] * 2 + ["array_value"] * 3 + \
            ["int_value", "bool_value"]
        arrays = [[item.WhichOneof("value") for item in value.array_value.values] for value in got[6:9]]
        assert arrays == [["int_value", "int_value"], ["bool_value", "int_value"], ["double_value", "int_value"]]


def test_several_resources_in_one_request_each_match_the_sdk_encoder():
    """The Forwarder posts the spans of several processes in one request: each resource framed whole."""
    other = {**RESOURCE, "process.pid": 43}
    body = encode_request([(RESOURCE, RECORDS), (other, RECORDS[1:])])
    assert body == encode_request([(RESOURCE, RECORDS)]) + encode_request([(other, RECORDS[1:])])
    ours = ExportTraceServiceRequest()
    ours.ParseFromString(body)
    assert len(ours.resource_spans) == 2
    first, second = ExportTraceServiceRequest(), ExportTraceServiceRequest()
    first.resource_spans.append(ours.resource_spans[0])
    second.resource_spans.append(ours.resource_spans[1])
    assert _as_dict(first) == _as_dict(encode_spans(_sdk_spans()))
    assert len(second.resource_spans[0].scope_spans[0].spans) == 1
    assert {kv.key: kv.value.int_value for kv in second.resource_spans[0].resource.attributes}["process.pid"] == 43


def test_spans_encoded_as_they_end_are_the_reference_encoding():
    """What the pipeline sends (each LeanSpan encoded as it ends, a statement set's block reused, the helper
    framing them) is byte for byte what encoding the same spans as records gives."""
    import marshal

    from opentelemetry import trace

    from takealook.agent.otlp import frame_request
    from takealook.agent.pipeline import Pipeline
    from takealook.agent.tracer import LeanTracerProvider, SharedAttributes

    messages = []
    pipeline = Pipeline(lambda payload: not messages.append(payload), RESOURCE, 60, export_metrics=False)
    provider = LeanTracerProvider(pipeline.on_end)
    statement = SharedAttributes({"db.system": "postgresql", "db.query.text": "SELECT 1", "server.port": 5432})
    ended = []
    for number in range(3):
        root = provider.make_span("GET /orders", trace.INVALID_SPAN, 2, {"http.route": "/orders", "n": number},
                                  ("takealook.agent", "1"))
        root.trace_state = TraceState([("vendor", "v")]) if number == 1 else None
        for copy in range(2):
            span = provider.make_span("SELECT shop", root, 3, statement.attributes.copy(), ("takealook.agent", "1"))
            span.shared = statement
            if copy:
                span.set_attribute("server.port", 5432.0)  # equal to the set's, and written as a double
            span.end()
            ended.append(span)
        child = provider.make_span("work", root, 1, {"ok": True}, ("app.code", ""))
        child.add_event("retry", {"attempt": 2}, 7)
        child.end()
        root.set_status(StatusCode.ERROR, "boom") if number == 2 else None
        root.end()
        ended += [child, root]
    pipeline.flush()
    (payload,) = messages
    protocol, kind, resource, count, groups = marshal.loads(payload)
    assert (protocol, kind, count) == (3, b"spans", 12) and statement.block is not None
    records = [(s.trace_id, s.span_id, s.parent_id, s.parent_remote, s.name, s.kind, s.start_ns, s.end_ns,
                s.status_code, s.status_text, s.attributes, s.events, s.links,
                s.trace_state.to_header() if s.trace_state else "", s.scope[0], s.scope[1]) for s in ended]
    assert frame_request([(RESOURCE, groups)]) == encode_request([(RESOURCE, records)])
    decoded = ExportTraceServiceRequest()
    decoded.ParseFromString(frame_request([(marshal.loads(resource), groups)]))
    ports = [kv.value.WhichOneof("value") for scope in decoded.resource_spans[0].scope_spans for span in scope.spans
             for kv in span.attributes if kv.key == "server.port"]
    assert ports == ["int_value", "double_value"] * 3


def test_the_encoders_caches_stay_small_in_the_app():
    """Spans are encoded in the app: however many distinct paths, ids and texts, each cache holds at most
    2,000 entries and 512 KiB of encodings, and what it encodes stays right."""
    from takealook.agent import otlp

    caches = (otlp._pair_cache, otlp._block_cache, otlp._item_blocks)  # noqa: SLF001
    records = [(0x5A, 0x100 + i, 0x5B, False, f"GET /item/{i % 50}", 2, 1, 2, 0, "",
                {"url.path": f"/item/{i % 3000}", "text": "x" * (i % 3000), "n": i % 3000}, None, None, "", "s", "")
               for i in range(6000)]  # each set twice: kept the second time
    ours = ExportTraceServiceRequest()
    ours.ParseFromString(encode_request([({"service.name": "t"}, records)]))
    spans = ours.resource_spans[0].scope_spans[0].spans
    assert [next(kv.value.string_value for kv in span.attributes if kv.key == "url.path") for span in spans] == \
        [f"/item/{i % 3000}" for i in range(6000)]
    for cache in caches:
        assert len(cache) <= otlp._CACHE_LIMIT  # noqa: SLF001
    blocks = [block for block, _ in otlp._item_blocks.values()]  # noqa: SLF001
    assert blocks and sum(map(len, blocks)) <= otlp._CACHE_BYTES  # noqa: SLF001


def test_a_value_new_at_every_span_is_encoded_each_time_and_not_kept():
    """A path with an id is new at every request: once its key has shown more values than a key keeps, its
    values are encoded each time (no cache fills with them), the constant pairs beside it still come from
    the cache, and every block says exactly what the SDK's encoder says; 1, True and 1.0 stay three types."""
    from opentelemetry.exporter.otlp.proto.common._internal import _encode_attributes as sdk_attributes

    from takealook.agent import otlp

    otlp._reset_fields()  # noqa: SLF001
    blocks_before = len(otlp._item_blocks)  # noqa: SLF001
    values = ["GET", "/orders/<int:id>", 200, 1, True, 1.0, "", "naïve ✓" * 30]
    for i in range(otlp._FIELD_VALUES + 300):  # noqa: SLF001
        attributes = {"http.request.method": "GET", "http.route": "/orders/<int:id>", "url.path": f"/orders/{i}",
                      "http.response.status_code": 200, "v": values[i % len(values)]}
        block = otlp.attributes_block(attributes)
        expected = b"".join(b"\x4a" + otlp._varint(len(kv.SerializeToString())) + kv.SerializeToString()  # noqa: SLF001
                            for kv in sdk_attributes(attributes))
        assert block == expected, (i, attributes)
    assert "url.path" in otlp._volatile  # noqa: SLF001
    assert len(otlp._fields["url.path"]) == otlp._FIELD_VALUES  # noqa: SLF001 - kept no more once volatile
    assert set(otlp._fields["http.route"]) == {"/orders/<int:id>"}  # noqa: SLF001
    assert len(otlp._item_blocks) <= blocks_before  # noqa: SLF001 - no block with a path was kept
    # However many keys and values, what is kept stays within its bytes (fields and their slots).
    for i in range(20_000):
        otlp.attributes_block({f"key{i % 700}": f"value {i}" * 3})
    kept = sum(len(field) + otlp._FIELD_OVERHEAD for values in otlp._fields.values() for field in values.values())  # noqa: SLF001
    assert kept <= otlp._CACHE_BYTES and len(otlp._fields) <= otlp._FIELD_KEYS  # noqa: SLF001


def test_varints_and_text_pairs_written_fast_match_the_plain_encoding():
    """The table of small varints and the text pair written in one join, against the wire format spelled
    out: at each edge (one and two byte lengths, the end of the table, past it)."""
    from takealook.agent import otlp

    def varint(value):
        out = bytearray()
        while value > 0x7F:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        return bytes(out + bytes((value,)))

    assert all(otlp._varint(v) == varint(v) for v in range(40_000))  # noqa: SLF001
    for key in ("url.path", "k" * 130, "é"):
        for n in (0, 1, 125, 126, 127, 128, 129, 300, 2030, 2039, 2040, 2047, 2048, 16_383, 16_384, 20_000):
            value = "ü" * (n // 2) + "x" * (n % 2)
            pair = b"\x0a" + varint(len(key.encode())) + key.encode()
            any_value = b"\x0a" + varint(len(value.encode())) + value.encode()
            pair += b"\x12" + varint(len(any_value)) + any_value
            assert otlp._text_field(key, value) == b"\x4a" + varint(len(pair)) + pair, (key, n)  # noqa: SLF001
