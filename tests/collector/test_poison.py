"""Poisonous bodies (values SQLite cannot hold, deep JSON, huge names) against a running collector:
the guilty request gets a 4xx or a partial success, the valid clients beside it never a 5xx."""

from __future__ import annotations

import json
import threading

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from takealook.collector import open_store
from takealook.collector.convert import MAX_VALUE_CHARS
from tests.collector.conftest import JSON, PROTOBUF, post, raw_request, start_collector
from tests.collector.test_limits import _kv

T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    collector = start_collector(tmp_path_factory.mktemp("poison"), grpc=None)
    yield collector
    collector.stop()


def _poisoned(seed: int):
    """A request of 20 spans: span 0 ends at 2^64 - 1 ns, span 1 carries a 25-digit status code,
    span 2 a 1 MB name; the other 17 are ordinary."""
    request = raw_request(20, seed=seed)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].end_time_unix_nano = 2**64 - 1
    spans[1].attributes.append(_kv("http.status_code", string_value="4" * 25))
    spans[2].name = "N" * 1_000_000
    return request


def _poison_bodies(seed: int) -> list[tuple[bytes, dict, int]]:
    """(body, headers, expected status) of each kind of poison."""
    request = _poisoned(seed)
    document = json.loads(json_format.MessageToJson(request))
    pairs = zip(document["resourceSpans"][0]["scopeSpans"][0]["spans"], request.resource_spans[0].scope_spans[0].spans)
    for span_json, span in pairs:  # OTLP JSON ids are hex, not base64
        span_json.update(traceId=span.trace_id.hex(), spanId=span.span_id.hex())
        if span.parent_span_id:
            span_json["parentSpanId"] = span.parent_span_id.hex()
    surrogate = json.dumps(document).replace('"name": "SELECT"', '"name": "\\ud800"', 1).encode()
    return [
        (request.SerializeToString(), PROTOBUF, 200),  # 3 spans rejected or cut, 17 stored
        (json.dumps(document).encode(), JSON, 200),  # the same in JSON
        (b"[" * 100_000 + b"]" * 100_000, JSON, 400),
        (b'{"resourceSpans": ' + b"[" * 100_000, JSON, 400),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "a", "value": '
         + b'{"arrayValue": {"values": [' * 5000 + b"]}}" * 5000 + b"}]}]}]}]}", JSON, 400),
        (surrogate, JSON, 400),  # a lone surrogate: no UTF-8 string can hold it
    ]


def test_a_poison_client_never_fails_valid_clients(shared):
    valid_results: list[int] = []
    valid_bodies = [raw_request(50, seed=1000 + n).SerializeToString() for n in range(60)]
    poison = [body for seed in range(3) for body in _poison_bodies(seed)]
    poison_results: list[tuple[int, int, bytes]] = []

    def valid(first: int) -> None:
        for body in valid_bodies[first::3]:
            valid_results.append(post(shared.http_url, "/v1/traces", body, PROTOBUF)[0])

    def poisoner() -> None:
        for body, headers, expected in poison:
            status, _, answer = post(shared.http_url, "/v1/traces", body, headers)
            poison_results.append((status, expected, answer))

    threads = [threading.Thread(target=valid, args=(n,)) for n in range(3)] + [threading.Thread(target=poisoner)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    fives = sum(1 for status in valid_results if status >= 500)
    print(f"\npoison isolation: {fives} 5xx answers to {len(valid_results)} valid requests "
          f"sent beside {len(poison)} poisonous ones")
    assert valid_results == [200] * len(valid_bodies)
    assert [status for status, _, _ in poison_results] == [expected for _, expected, _ in poison_results]
    for status, _, answer in poison_results:
        if status == 200:
            rejected, message = _partial_success(answer)
            assert rejected == 1 and "below 2^63" in message and "were cut" in message
        else:
            assert json.loads(answer)["message"]
    with open_store(shared.settings.store) as store:
        for seed in range(3):  # the valid spans of each poisoned batch are stored
            request = _poisoned(seed)
            trace = store.trace(request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex())
            names = sorted(len(span.name) for span in trace)
            assert len(trace) == 19 and names[-1] == MAX_VALUE_CHARS
            assert {span.http_status for span in trace} == {None}
        assert store.summary().spans >= 60 * 50


def _partial_success(answer: bytes) -> tuple[int, str]:
    if answer.startswith(b"{"):
        partial = json.loads(answer)["partialSuccess"]
        return int(partial["rejectedSpans"]), partial["errorMessage"]
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    return partial.rejected_spans, partial.error_message


@pytest.mark.parametrize("body", [
    b"[" * 100_000,
    b"{" * 100_000,
    b'{"a":' * 100_000,
    b'{"resourceMetrics": [' + b"[" * 50_000,
])
def test_deep_json_is_a_400_with_a_clear_message(shared, body):
    for path in ("/v1/traces", "/v1/metrics"):
        status, _, answer = post(shared.http_url, path, body, JSON)
        assert status == 400
        message = json.loads(answer)["message"]
        assert "nested too deeply" in message or "not valid JSON" in message
    assert post(shared.http_url, "/v1/traces", raw_request(5, seed=3).SerializeToString(), PROTOBUF)[0] == 200
