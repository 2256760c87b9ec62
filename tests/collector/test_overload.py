"""Overload: a store that cannot be written makes the collector answer 429/503 with a retry delay,
never crash or queue without bound; the SDK exporter's retries then deliver everything."""

from __future__ import annotations

import sqlite3
import threading

import grpc
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from takealook.collector import open_store
from tests.collector.conftest import PROTOBUF, post, raw_request, sdk_spans, start_collector
from tests.conftest import wait_for


def test_locked_store_gets_backpressure_then_retries_deliver(tmp_path):
    first = raw_request(500, seed=21).SerializeToString()
    collector = start_collector(tmp_path, max_queued_bytes=len(first) + 100, ack_timeout_s=3.0)
    blocker = sqlite3.connect(collector.settings.store, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another program holds the write lock: the store is "slow"
        waiting = {}
        sender = threading.Thread(target=lambda: waiting.update(
            answer=post(collector.http_url, "/v1/traces", first, PROTOBUF)))
        sender.start()
        wait_for(lambda: collector.status()["queued_bytes"] > 0, timeout=10, message="the first body to be queued")
        status, headers, _ = post(collector.http_url, "/v1/traces", raw_request(500, seed=22).SerializeToString(),
                                  PROTOBUF)
        assert status == 429 and headers["retry-after"] == "1"  # the queue is full: refused outright
        with grpc.insecure_channel(collector.grpc_address) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                         request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=ExportTraceServiceResponse.FromString)
            try:
                export(raw_request(200, seed=23), timeout=10)
                raise AssertionError("expected RESOURCE_EXHAUSTED")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "google.rpc.retryinfo-bin" in dict(error.trailing_metadata())
        sender.join(timeout=30)
        status, headers, body = waiting["answer"]
        # Not stored within the ack timeout: taken off the queue and refused, never stored later.
        assert status == 503 and headers["retry-after"] == "1" and b"nothing of this request was stored" in body
        assert collector.status()["queued_bytes"] == 0
        # The real exporter: it is refused, waits Retry-After, retries.
        spans = sdk_spans(traces=5, seed=24)
        exporter = OTLPSpanExporter(endpoint=collector.http_url + "/v1/traces", timeout=30)
        outcome = {}
        sender = threading.Thread(target=lambda: outcome.update(result=exporter.export(spans)))
        sender.start()
        # So far: one request timed out (503), one refused (429), one gRPC call refused.
        wait_for(lambda: collector.status()["refused_busy"] + collector.status()["timed_out"] >= 3 + 1,
                 timeout=20, message="the exporter to be turned away")
        assert collector.status()["queued_bytes"] <= len(first) + 100  # bounded whatever the clients send
        blocker.execute("ROLLBACK")  # the store recovers
        sender.join(timeout=30)
        assert outcome.get("result") == SpanExportResult.SUCCESS
        exporter.shutdown()
    finally:
        blocker.close()
        collector.stop()
    with open_store(collector.settings.store) as store:
        # Only the exporter's spans: the 503'd batch was withdrawn, the raw 429s were never taken.
        assert store.summary().spans == 15
        assert len({s.trace_id for t in store.iter_traces() for s in t}) == 5
