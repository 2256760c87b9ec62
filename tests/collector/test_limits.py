"""Every value is range-checked and every string cut before the store; one request the store refuses
fails alone, never the group committed with it."""

from __future__ import annotations

import sqlite3

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from takealook.collector import open_store
from takealook.collector.convert import CACHE_BYTES, MAX_VALUE_CHARS, TIME_LIMIT, Converter
from takealook.collector.ingest import Ingest
from takealook.collector.store import SpanStore
from takealook.collector.writer import TRACES, Writer
from tests.collector.conftest import raw_request

T0 = 1_700_000_000_000_000_000


def _kv(key: str, **value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def _request(*tweaks):
    """raw_request(len(tweaks)) with ``tweak(span)`` applied to span i."""
    request = raw_request(len(tweaks), seed=len(tweaks))
    for span, tweak in zip(request.resource_spans[0].scope_spans[0].spans, tweaks):
        tweak(span)
    return request


def _store_all(tmp_path, request):
    converted = Converter().traces(request.SerializeToString())
    store = SpanStore(tmp_path / "spans.db")
    try:
        store.write([converted.batch])  # would raise OverflowError on a value SQLite cannot take
    finally:
        store.close()
    with open_store(tmp_path / "spans.db") as reader:
        return converted, {s.name[:40]: s for t in reader.iter_traces() for s in t}


def _times(start, end):
    def tweak(span):
        span.start_time_unix_nano, span.end_time_unix_nano = start, end
    return tweak


def test_times_beyond_what_sqlite_holds_reject_only_that_span(tmp_path):
    def name(text):
        return lambda span: setattr(span, "name", text)

    request = _request(_times(T0, TIME_LIMIT), _times(TIME_LIMIT, TIME_LIMIT + 5), _times(2**64 - 2, 2**64 - 1),
                       name("kept"), _times(T0, TIME_LIMIT - 1))
    converted, stored = _store_all(tmp_path, request)
    assert converted.rejected == 3 and "below 2^63" in converted.message
    assert set(stored) == {"kept", "SELECT"}
    assert stored["SELECT"].duration_ns == TIME_LIMIT - 1 - T0


def test_absurd_status_codes_are_not_typed_but_the_span_is_kept(tmp_path):
    def status(**value):
        def tweak(span):
            span.name = f"code {value}"
            span.attributes.append(_kv("http.response.status_code", **value))
        return tweak

    request = _request(status(string_value="1" * 25), status(int_value=2**63 - 1), status(string_value="²⁰⁰"),
                       status(int_value=-200), status(string_value="404"), status(int_value=503))
    converted, stored = _store_all(tmp_path, request)
    assert converted.rejected == 0
    codes = {span.attributes()["http.response.status_code"]: span.http_status for span in stored.values()}
    assert codes == {"1" * 25: None, 2**63 - 1: None, "²⁰⁰": None, -200: None, "404": 404, 503: 503}


def test_every_string_is_cut_like_attribute_values(tmp_path):
    long = "n" * (MAX_VALUE_CHARS * 3)

    def everything(span):
        span.name = long
        span.attributes.append(_kv("k" * (MAX_VALUE_CHARS + 5), string_value="v"))
        span.attributes.append(_kv("list", array_value={"values": [AnyValue(string_value=long)]}))
        span.status.message = long
        span.status.code = 2
        event = span.events.add(name=long, time_unix_nano=T0)
        event.attributes.append(_kv(long, string_value=long))

    request = _request(everything)
    request.resource_spans[0].scope_spans[0].scope.name = long
    request.resource_spans[0].resource.attributes.append(_kv("host.name", string_value=long))
    converted, stored = _store_all(tmp_path, request)
    span = stored["n" * 40]
    assert len(span.name) == MAX_VALUE_CHARS and len(span.status_message) == MAX_VALUE_CHARS
    assert max(len(key) for key in span.attributes()) == MAX_VALUE_CHARS
    assert len(span.attributes()["list"][0]) == MAX_VALUE_CHARS
    event = span.events()[0]
    assert len(event.name) == MAX_VALUE_CHARS and list(event.attributes.values()) == ["n" * MAX_VALUE_CHARS]
    assert len(span.scope) == MAX_VALUE_CHARS and len(span.resource()["host.name"]) == MAX_VALUE_CHARS
    assert converted.truncated == 9 and "were cut" in converted.message


def test_undecodable_nested_messages_reject_only_their_span(tmp_path):
    from takealook.collector.lite import TraceRequest

    request = TraceRequest.FromString(raw_request(3, seed=7).SerializeToString())
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].attributes.append(b"\x0a\xff\xff")  # a KeyValue whose key claims more bytes than there are
    spans[2].status = b"\x12\x05ab"  # a Status message cut short
    converted = Converter().traces(request.SerializeToString())
    assert converted.rejected == 2 and "not valid protobuf" in converted.message
    assert converted.batch.span_count == 1
    assert list(converted.batch.traces) == [spans[0].trace_id.hex()]


def test_metric_points_out_of_range_are_rejected():
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m" * (MAX_VALUE_CHARS + 1))
    for time_ns, count in ((T0, 1), (TIME_LIMIT, 1), (T0, TIME_LIMIT)):
        metric.histogram.data_points.add(time_unix_nano=time_ns, count=count, bucket_counts=[count],
                                          attributes=[_kv("http.response.status_code", string_value="9" * 30)])
    converted = Converter().metrics(request)
    assert converted.rejected == 2 and converted.truncated == 1
    (row,) = converted.batch.metrics
    assert len(row[1]) == MAX_VALUE_CHARS and row[8] is None  # name cut, status not a status


def test_converter_caches_are_bounded_in_bytes():
    converter = Converter()
    for number in range(40):  # 40 distinct 600 KB statements: 24 MB of values, more than a cache holds
        request = raw_request(1, seed=number)
        request.resource_spans[0].scope_spans[0].spans[0].attributes.append(
            _kv("db.statement", string_value=f"SELECT {number} " + "x" * 600_000))
        converter.traces(request.SerializeToString())
    for cache in (converter._sets, converter._pairs):
        assert 0 < cache.bytes <= CACHE_BYTES


class _PickyStore(SpanStore):
    """A real store that refuses any write holding a span named "poison", as a store error would."""

    def write(self, batches):
        if any(row[3] == "poison" for batch in batches for _, _, rows in batch.spans for row in rows):
            raise sqlite3.IntegrityError("cannot store this span")
        return super().write(batches)


def test_a_request_the_store_refuses_fails_alone(tmp_path):
    store = _PickyStore(tmp_path / "spans.db")
    writer = Writer(store)
    good = [raw_request(10, seed=seed).SerializeToString() for seed in range(3)]
    poison = raw_request(10, seed=9)
    poison.resource_spans[0].scope_spans[0].spans[3].name = "poison"
    # Queued before the writer starts, so all four share one group.
    tickets = [writer.submit(TRACES, body) for body in (good[0], poison.SerializeToString(), good[1], good[2])]
    writer.start()
    try:
        assert all(ticket.wait(10) for ticket in tickets)
        assert [t.invalid is None and t.error is None for t in tickets] == [True, False, True, True]
        assert "cannot store this span" in tickets[1].invalid
        assert writer.stats.isolated_failures == 1 and writer.stats.spans_stored == 30
        answer = Ingest(writer, ack_timeout=10).traces(poison.SerializeToString())
        assert answer.outcome == "invalid" and "cannot store this span" in answer.message
    finally:
        writer.stop()
    with open_store(tmp_path / "spans.db") as reader:
        assert reader.summary().spans == 30
