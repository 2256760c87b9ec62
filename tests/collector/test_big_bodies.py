"""Large bodies from many clients: each request is acknowledged or refused within the ack timeout
(never stored and then refused), the memory bound holds in a real ``takealook collect``, and after a
failed fsync the collector stops acknowledging and says so."""

from __future__ import annotations

import errno
import gzip
import http.client
import json
import logging
import re
import socket
import sqlite3
import subprocess
import threading
import time

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from takealook.collector.admission import JSON_FACTOR, fixed_bytes
from tests.collector.conftest import JSON, PROTOBUF, big_request, post, raw_request, start_collector
from tests.conftest import BIN, wait_for

BODY = 8_000_000
MiB = 1 << 20


@pytest.fixture(scope="module")
def big_bodies():
    """(trace ids, body) of 24 requests of about 8 MB, each with its own traces."""
    out = []
    for seed in range(24):
        request = big_request(BODY, seed=seed)
        trace_ids = {span.trace_id.hex() for span in request.resource_spans[0].scope_spans[0].spans}
        out.append((trace_ids, request.SerializeToString()))
    return out


def _send_all(port: int, requests: list[tuple[bytes, dict]]) -> list[tuple[int, float]]:
    """Send every (body, headers) at once, one connection each; (status, seconds) in order."""
    results: list = [None] * len(requests)

    def send(index: int) -> None:
        body, headers = requests[index]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        began = time.monotonic()
        try:
            connection.request("POST", "/v1/traces", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            results[index] = (response.status, time.monotonic() - began)
        except OSError as error:
            results[index] = (type(error).__name__, time.monotonic() - began)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return results


def test_big_bodies_are_acknowledged_or_refused_never_stored_and_refused(tmp_path, big_bodies):
    collector = start_collector(tmp_path, grpc=None, ack_timeout_s=2.0)
    try:
        results = _send_all(collector.http_port, [(body, PROTOBUF) for _, body in big_bodies])
    finally:
        collector.stop()
    statuses = [status for status, _ in results]
    print(f"\nbig bodies: {statuses.count(200)} of {len(results)} 8 MB requests acknowledged, the rest refused "
          f"({statuses.count(429)} x 429, {statuses.count(503)} x 503); slowest answer "
          f"{max(seconds for _, seconds in results):.1f} s (ack timeout 2 s)")
    assert set(statuses) <= {200, 429, 503} and 200 in statuses
    with sqlite3.connect(collector.settings.store) as store:
        stored = {row[0] for row in store.execute("SELECT trace_id FROM traces")}
    for (trace_ids, _), status in zip(big_bodies, statuses):
        # Acknowledged: every trace stored. Refused: none (a client resending it makes no duplicate work).
        assert (trace_ids <= stored) if status == 200 else not (trace_ids & stored)


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_memory_bound_holds_under_overload(tmp_path, big_bodies):
    # The documented overload: many clients sending the largest bodies at once, protobuf, gzip and
    # JSON (which takes several times its size while parsed). The bound is --max-memory.
    limit = 320 * MiB
    process = subprocess.Popen(
        [str(BIN / "takealook"), "collect", "--listen", "127.0.0.1:0", "--grpc", "off", "--quiet",
         "--max-memory", "320MiB", "--store", str(tmp_path / "spans.db")], stderr=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r"127\.0\.0\.1:(\d+) ", process.stderr.readline()).group(1))
        document = json_format.MessageToJson(big_request(3_000_000, seed=99), indent=None).encode()
        zipped = gzip.compress(big_bodies[0][1], 1)
        requests = ([(body, PROTOBUF) for _, body in big_bodies] * 3 + [(document, JSON)] * 8
                    + [(zipped, {**PROTOBUF, "Content-Encoding": "gzip"})] * 8)
        results = _send_all(port, requests)
        statuses = [status for status, _ in results]
        peak = _peak_rss(process.pid)
        print(f"\nmemory bound: peak RSS {peak / MiB:.0f} MiB with --max-memory 320MiB under {len(requests)} "
              f"concurrent requests of 3-8 MB ({statuses.count(200)} acknowledged, {statuses.count(429)} x 429, "
              f"{statuses.count(503)} x 503)")
        assert set(statuses) <= {200, 429, 503} and 200 in statuses
        assert peak <= limit
        assert post(f"http://127.0.0.1:{port}", "/v1/traces", raw_request(5).SerializeToString(), PROTOBUF)[0] == 200
    finally:
        process.terminate()
        process.wait(60)


def test_after_a_failed_fsync_nothing_is_acknowledged_and_it_says_so(tmp_path, caplog):
    collector = start_collector(tmp_path)
    store = collector._writer.store

    def failing_sync():
        raise OSError(errno.EIO, "Input/output error")

    store.sync = failing_sync  # the disk refuses (a real one cannot be made to, here)
    body = raw_request(20, seed=5).SerializeToString()
    try:
        with caplog.at_level(logging.ERROR, logger="takealook.collector"):
            status, headers, _ = post(collector.http_url, "/v1/traces", body, PROTOBUF)
        assert status == 503 and headers["retry-after"] == "1"
        assert any("no longer durable" in r.message and "restart the collector" in r.message for r in caplog.records)
        store.sync = type(store).sync.__get__(store)  # the disk works again: too late, nothing is trusted
        status, _, answer = post(collector.http_url, "/v1/traces", body, JSON)
        assert status == 503 and "restart the collector" in json.loads(answer)["message"]
        health = json.loads(post(collector.http_url, "/", b"", method="GET")[2])
        assert health["durable"] is False and "Input/output error" in health["store_error"]
        with grpc.insecure_channel(collector.grpc_address) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                         request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=ExportTraceServiceResponse.FromString)
            with pytest.raises(grpc.RpcError) as refused:
                export(raw_request(5, seed=6), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "no longer durable" in refused.value.details()
    finally:
        collector.stop()


def test_a_body_that_does_not_fit_is_refused_before_it_is_read_and_the_connection_kept(tmp_path):
    max_body = 64 * 1024
    budget = 700 * 1024  # room for one JSON body of max_body (10x while parsed), not one more protobuf one
    collector = start_collector(tmp_path, grpc=None, max_body=max_body, body_grace_s=3.0,
                                max_memory=fixed_bytes(max_body, 8 * MiB, grpc=False) + budget)
    port = collector.http_port
    small = raw_request(5, seed=7).SerializeToString()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as holder:
            holder.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n" % max_body)  # ... and no body yet
            wait_for(lambda: collector.status()["body_bytes"] == JSON_FACTOR * max_body, message="the reservation")
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("POST", "/v1/traces", body=b"\x00" * max_body, headers=PROTOBUF)
            refused = connection.getresponse()
            assert refused.status == 429 and refused.getheader("Retry-After") == "1"
            assert b"memory" in refused.read()
            connection.request("POST", "/v1/traces", body=small, headers=PROTOBUF)  # same connection
            assert connection.getresponse().status == 200
            connection.close()
            # The holder sends too slowly: it loses its connection and its reservation.
            wait_for(lambda: collector.status()["body_bytes"] == 0, timeout=30, message="the reservation released")
            assert collector.status()["slow_clients"] == 1
    finally:
        collector.stop()
