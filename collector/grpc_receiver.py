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

Slow clients: gRPC receives a unary request's message only once a handler
thread asks for it, and waits for it without end, so a few clients sending
a byte now and then would hold every handler thread. The services are
therefore registered as client-streaming (the same bytes on the wire for a
unary client): the handler starts at once, asks for the one message, and a
watchdog cancels the call if it has not arrived within the body grace plus
``max_body`` at the minimum rate (``http_clients.ClientLimits``). A received
message reserves its memory like an HTTP body (``admission.py``).
"""

from __future__ import annotations

import heapq
import hmac
import socket
import threading
import time
from concurrent import futures
from typing import Callable, Iterator, Optional

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from takealook.collector.admission import GRPC_WORKERS
from takealook.collector.http_clients import ClientLimits
from takealook.collector.ingest import BUSY_MEMORY, RETRY_AFTER_S, Answer, Ingest

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
_RETRY_INFO = RetryInfo(retry_delay=Duration(seconds=RETRY_AFTER_S)).SerializeToString()
_CODES = {"invalid": grpc.StatusCode.INVALID_ARGUMENT, "busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
          "timeout": grpc.StatusCode.UNAVAILABLE, "stopping": grpc.StatusCode.UNAVAILABLE,
          "broken": grpc.StatusCode.UNAVAILABLE, "failed": grpc.StatusCode.INTERNAL}


class GrpcReceiver:
    def __init__(self, host: str, port: int, ingest: Ingest, max_body: int, token: Optional[str],
                 limits: ClientLimits = ClientLimits(), workers: int = GRPC_WORKERS, max_inflight: int = 64):
        self._ingest = ingest
        self._token = token
        self._receive_s = limits.body_grace_s + max_body / limits.min_body_rate
        self._watchdog = _Watchdog()
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
            grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": grpc.stream_unary_rpc_method_handler(
                self._traces, request_deserializer=None,
                response_serializer=ExportTraceServiceResponse.SerializeToString)}),
            grpc.method_handlers_generic_handler(METRICS_SERVICE, {"Export": grpc.stream_unary_rpc_method_handler(
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
        self._watchdog.start()
        self.server.start()

    def stop(self, grace: float) -> None:
        """Refuse new calls; calls in progress get ``grace`` seconds to finish."""
        self.server.stop(grace).wait(grace + 1)
        self._watchdog.stop()

    def _traces(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        response = ExportTraceServiceResponse()
        answer = self._export(self._ingest.traces, requests, context)
        if answer is not None:
            response.partial_success.rejected_spans = answer.rejected
            response.partial_success.error_message = answer.message
        return response

    def _metrics(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> ExportMetricsServiceResponse:
        response = ExportMetricsServiceResponse()
        answer = self._export(self._ingest.metrics, requests, context)
        if answer is not None:
            response.partial_success.rejected_data_points = answer.rejected
            response.partial_success.error_message = answer.message
        return response

    def _export(self, store: Callable[[bytes], Answer], requests: Iterator[bytes],
                context: grpc.ServicerContext) -> Optional[Answer]:
        """Store the call's message; the answer when it was stored with a partial success to report,
        else None (all well, or the call was failed with its status already set)."""
        if not self._authorized(context):
            return None
        refusal = self._ingest.refusal(0)
        if refusal is not None:  # before the message is received
            self._fail(refusal, context)
            return None
        body = self._receive(requests, context)
        if body is None:
            return None
        reservation = self._ingest.reserve(len(body))
        if reservation is None:
            self._fail(BUSY_MEMORY, context)
            return None
        with reservation:
            answer = store(body)
        if self._fail(answer, context) or not (answer.rejected or answer.message):
            return None
        return answer

    def _receive(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Optional[bytes]:
        """The call's one message, or None (the call was failed or cancelled)."""
        watch = self._watchdog.watch(context, self._receive_s)
        try:
            body = next(requests, None)
        except grpc.RpcError:  # cancelled: by the client, or by the watchdog
            body = None
        finally:
            watch.cancel()
        if watch.fired:
            self._ingest.stats.add(slow_clients=1)
            return None
        if body is None and context.is_active():
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details("an Export call carries exactly one request message")
        return body

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


class _Watch:
    __slots__ = ("context", "cancelled", "fired", "_lock")

    def __init__(self, context, lock):
        self.context, self.cancelled, self.fired, self._lock = context, False, False, lock

    def cancel(self) -> None:
        """The message arrived (or the call ended): the watchdog leaves it alone from now on."""
        with self._lock:  # never while the watchdog fires it
            self.cancelled = True
            self.context = None  # it may wait in the heap until its deadline: hold nothing


class _Watchdog:
    """One thread that cancels calls whose message has not arrived by their deadline."""

    def __init__(self):
        self._heap: list[tuple[float, int, _Watch]] = []
        self._cond = threading.Condition()
        self._counter = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="takealook-grpc-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def watch(self, context, seconds: float) -> _Watch:
        watch = _Watch(context, self._cond)
        with self._cond:
            self._counter += 1
            if self._counter % 1024 == 0:  # drop the finished watches now and then
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (time.monotonic() + seconds, self._counter, watch))
            self._cond.notify()
        return watch

    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].cancelled or self._heap[0][0] <= now):
                    _, _, watch = heapq.heappop(self._heap)
                    if not watch.cancelled:
                        watch.fired = True
                        watch.context.cancel()
                        watch.context = None
                self._cond.wait(self._heap[0][0] - now if self._heap else None)
