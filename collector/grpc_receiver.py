"""OTLP/gRPC receiver: the trace and metrics ``Export`` services.

Same semantics as the HTTP receiver: OK with an Export*ServiceResponse
(partial_success for rejected or cut items), INVALID_ARGUMENT for
undecodable messages, UNAUTHENTICATED without the bearer token (when one is
configured), RESOURCE_EXHAUSTED with a ``google.rpc.RetryInfo`` delay when the
write queue is full (the OTLP spec makes it retryable only with that detail),
UNAVAILABLE when the store is slow or the collector is stopping, INTERNAL when
the store refuses a batch. Messages larger than ``max_body`` are refused by
gRPC itself (RESOURCE_EXHAUSTED); gzip-compressed messages are handled by gRPC.

Requests arrive as raw bytes (no deserializer): trace requests are decoded by
the converter's lite types (see ``lite.py``), and a bad message is answered
INVALID_ARGUMENT rather than gRPC's generic INTERNAL.
"""

from __future__ import annotations

import hmac
import socket
from concurrent import futures
from typing import Optional

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from takealook.collector.ingest import RETRY_AFTER_S, Answer, Ingest

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
_RETRY_INFO = RetryInfo(retry_delay=Duration(seconds=RETRY_AFTER_S)).SerializeToString()
_CODES = {"invalid": grpc.StatusCode.INVALID_ARGUMENT, "busy": grpc.StatusCode.RESOURCE_EXHAUSTED, "timeout": grpc.StatusCode.UNAVAILABLE,
          "stopping": grpc.StatusCode.UNAVAILABLE, "failed": grpc.StatusCode.INTERNAL}


class GrpcReceiver:
    def __init__(self, host: str, port: int, ingest: Ingest, max_body: int, token: Optional[str],
                 workers: int = 8, max_inflight: int = 64):
        self._ingest = ingest
        self._token = token
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="takealook-grpc"),
            maximum_concurrent_rpcs=max_inflight,
            options=[
                ("grpc.max_receive_message_length", max_body),
                # Without this a second collector on the same port would silently share it.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(
                self._traces, request_deserializer=None,
                response_serializer=ExportTraceServiceResponse.SerializeToString)}),
            grpc.method_handlers_generic_handler(METRICS_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(
                self._metrics, request_deserializer=None,
                response_serializer=ExportMetricsServiceResponse.SerializeToString)}),
        ))
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if port:
            _check_free(host, port)  # gRPC would only log its bind failure, in its own format
        try:
            bound = self.server.add_insecure_port(target)
        except RuntimeError:
            bound = 0
        if not bound:
            raise OSError(f"cannot listen on {target}")
        self.address = (host, bound)

    def start(self) -> None:
        self.server.start()

    def stop(self, grace: float) -> None:
        """Refuse new calls; calls in progress get ``grace`` seconds to finish."""
        self.server.stop(grace).wait(grace + 1)

    def _traces(self, body: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        response = ExportTraceServiceResponse()
        answer = self._export(self._ingest.traces, body, context)
        if answer is not None:
            response.partial_success.rejected_spans = answer.rejected
            response.partial_success.error_message = answer.message
        return response

    def _metrics(self, body: bytes, context: grpc.ServicerContext) -> ExportMetricsServiceResponse:
        response = ExportMetricsServiceResponse()
        answer = self._export(self._ingest.metrics, body, context)
        if answer is not None:
            response.partial_success.rejected_data_points = answer.rejected
            response.partial_success.error_message = answer.message
        return response

    def _export(self, store, body: bytes, context: grpc.ServicerContext) -> Optional[Answer]:
        """Store ``body``; the answer when it was stored with a partial success to report, else None
        (all well, or the call was failed with its status already set)."""
        if not self._authorized(context):
            return None
        answer = store(body)
        if self._fail(answer, context) or not (answer.rejected or answer.message):
            return None
        return answer

    def _fail(self, answer: Answer, context: grpc.ServicerContext) -> bool:
        if answer.outcome == "ok":
            return False
        if answer.outcome == "busy":
            context.set_trailing_metadata((("google.rpc.retryinfo-bin", _RETRY_INFO),))
        context.set_code(_CODES[answer.outcome])
        context.set_details(answer.message)
        return True

    def _authorized(self, context: grpc.ServicerContext) -> bool:
        if not self._token:
            return True
        given = dict(context.invocation_metadata()).get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token.encode()):
            return True
        context.set_code(grpc.StatusCode.UNAUTHENTICATED)
        context.set_details("missing or wrong bearer token")
        return False


def _check_free(host: str, port: int) -> None:
    """Raise OSError (EADDRINUSE...) if ``host:port`` cannot be bound right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
