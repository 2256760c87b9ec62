"""Bad input gets the right 4xx, and the collector keeps serving; random bytes never crash it."""

from __future__ import annotations

import gzip
import json
import socket

import pytest
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from takealook.collector import open_store
from tests.collector.conftest import JSON, PROTOBUF, post, raw_request, start_collector

GOOD = raw_request(20, seed=11).SerializeToString()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    collector = start_collector(tmp_path_factory.mktemp("malformed"), grpc=None, max_body=64 * 1024)
    yield collector
    collector.stop()


def _still_serving(collector) -> None:
    assert post(collector.http_url, "/v1/traces", GOOD, PROTOBUF)[0] == 200


@pytest.mark.parametrize("body, headers, status", [
    (GOOD[: len(GOOD) // 2], PROTOBUF, 400),  # truncated protobuf
    (b"\xff" * 50, PROTOBUF, 400),
    (b"", PROTOBUF, 400),
    (b"", JSON, 400),
    (b"{not json", JSON, 400),
    (b"[1, 2]", JSON, 400),
    (b'{"resourceSpans": "nope"}', JSON, 400),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": {"a": 1}}]}]}]}', JSON, 400),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 12}]}]}]}', JSON, 400),
    (GOOD, {"Content-Type": "text/plain"}, 415),
    (GOOD, {}, 415),
    (GOOD, {**PROTOBUF, "Content-Encoding": "br"}, 415),
    (GOOD, {**PROTOBUF, "Content-Encoding": "gzip"}, 400),  # says gzip, is not
    (gzip.compress(GOOD)[:-10], {**PROTOBUF, "Content-Encoding": "gzip"}, 400),  # truncated gzip
    (b"x" * (64 * 1024 + 1), PROTOBUF, 413),
    (gzip.compress(b"\x00" * (5 * 1024 * 1024)), {**PROTOBUF, "Content-Encoding": "gzip"}, 413),  # gzip bomb
])
def test_bad_bodies_get_4xx_and_a_status_body(shared, body, headers, status):
    got, answer_headers, answer = post(shared.http_url, "/v1/traces", body, headers)
    assert got == status
    if answer_headers.get("content-type") == "application/x-protobuf":
        assert status_pb2.Status.FromString(answer).message
    else:
        assert json.loads(answer)["message"]
    _still_serving(shared)


def test_bad_ids_in_json_reject_only_those_spans(shared):
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "zz" * 16, "spanId": "eee19b7ec3c1b174", "name": "a", "startTimeUnixNano": "1",
         "endTimeUnixNano": "2"},
        {"traceId": "5b8efff798038103d269b633813fc60d", "spanId": "eee19b7ec3c1b175", "name": "b",
         "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]}
    status, _, answer = post(shared.http_url, "/v1/traces", json.dumps(body).encode(), JSON)
    assert status == 200
    assert json.loads(answer)["partialSuccess"]["rejectedSpans"] == "1"
    with open_store(shared.settings.store) as store:
        assert len(store.trace("5b8efff798038103d269b633813fc60d")) == 1


def test_lying_content_length_and_garbage_on_the_socket(shared):
    host, port = shared.http_url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 1000\r\n\r\nshort")
        sock.shutdown(socket.SHUT_WR)  # the client goes away mid-body
        sock.recv(1024)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.")  # 400 from the HTTP layer
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: abc\r\n\r\n")
        assert b" 400 " in sock.recv(1024)
    _still_serving(shared)


def test_chunked_bodies_are_read(shared):
    host, port = shared.http_url.split("//")[1].split(":")
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (GOOD[:100], GOOD[100:]))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(min_size=1, max_size=2048),
                      st.binary(min_size=1, max_size=200).map(lambda b: GOOD[:50] + b + GOOD[50:])),
       content_type=st.sampled_from(["application/x-protobuf", "application/json"]),
       zipped=st.booleans())
def test_random_bytes_never_crash_it(shared, body, content_type, zipped):
    headers = {"Content-Type": content_type}
    if zipped:
        headers["Content-Encoding"] = "gzip"
    status, _, _ = post(shared.http_url, "/v1/traces", body, headers)
    assert status in (200, 400, 413)
    assert post(shared.http_url, "/", b"", method="GET")[0] == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "name", "attributes",
                         "key", "value", "stringValue", "intValue", "startTimeUnixNano", "kind", "events"]),
        children, max_size=4),
    max_leaves=25))
def test_random_json_never_crashes_it(shared, document):
    status, _, _ = post(shared.http_url, "/v1/traces", json.dumps(document).encode(), JSON)
    assert status in (200, 400)
