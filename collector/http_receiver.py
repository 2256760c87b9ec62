"""OTLP/HTTP receiver: ``POST /v1/traces`` and ``/v1/metrics``, protobuf or JSON, gzip, CORS.

Answers follow the OTLP/HTTP spec: 200 with an Export*ServiceResponse
(partial_success when items were rejected or cut), 400 for undecodable or
empty bodies, 401 without the bearer token (when one is configured), 404 for
other paths, 405 for other methods, 413 over ``max_body`` (compressed or
not), 415 for other content types or encodings, 429 / 503 with
``Retry-After`` under overload, 500 when the store refuses a batch. Error
bodies are a ``google.rpc.Status`` in the request's encoding.

``GET /`` answers a small JSON status (counts), for health checks. CORS
preflights (``OPTIONS``) from an allowed origin get 204 with the allow
headers; other origins get 403.

One thread per connection (``ThreadingHTTPServer``, HTTP/1.1 keep-alive);
at most ``max_inflight`` requests are processed at once, more get 503, so
memory stays bounded (each holds at most ``max_body`` bytes).
"""

from __future__ import annotations

import hmac
import json
import socket
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from takealook.collector.ingest import RETRY_AFTER_S, Answer, Ingest
from takealook.collector.otlp_json import BadRequest, parse_metrics, parse_traces

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}
_OUTCOME_STATUS = {"invalid": 400, "busy": 429, "timeout": 503, "stopping": 503, "failed": 500}
# google.rpc.Code per HTTP status, for the Status body.
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
_ALLOWED_HEADERS = "Content-Type, Content-Encoding, Authorization"
_READ_CHUNK = 1 << 16


class ReceiverConfig:
    """What the handler needs besides the ingest pipeline (see CollectorSettings)."""

    def __init__(self, max_body: int, cors_origins: tuple[str, ...], token: Optional[str], max_inflight: int = 64):
        self.max_body = max_body
        self.cors_origins = cors_origins
        self.token = token
        self.max_inflight = max_inflight


class HttpReceiver:
    def __init__(self, host: str, port: int, ingest: Ingest, config: ReceiverConfig,
                 status: Callable[[], dict]):
        handler = type("Handler", (_Handler,), {"ingest": ingest, "config": config, "status": staticmethod(status),
                                                "slots": threading.BoundedSemaphore(config.max_inflight),
                                                "closing": threading.Event()})
        self._handler = handler
        server_class = _Server6 if ":" in host else _Server
        self.server = server_class((host, port), handler)
        self.address = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="takealook-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop_accepting(self) -> None:
        """Close the listening socket; requests already in progress finish."""
        self._handler.closing.set()
        if self._thread.is_alive():
            self.server.shutdown()  # waits for serve_forever to return: only when it runs
        self.server.server_close()

    def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for requests in progress to be answered."""
        slots = self._handler.slots
        taken = 0
        try:
            for _ in range(self._handler.config.max_inflight):
                if not slots.acquire(timeout=timeout):
                    break
                taken += 1
        finally:
            for _ in range(taken):
                slots.release()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted collector can bind while old connections sit in TIME_WAIT
    request_queue_size = 128


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "takealook-collector"
    timeout = 120  # idle keep-alive connections are closed after this
    ingest: Ingest
    config: ReceiverConfig
    status: Callable[[], dict]
    slots: threading.BoundedSemaphore
    closing: threading.Event

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass  # one line per request would drown the status line

    def send_error(self, code, message=None, explain=None):
        # Errors found by http.server itself (a malformed request line, headers
        # too long, HTTP/2 preface): answer like every other error, with a
        # status line even for requests that did not say HTTP/1.x.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self._fail(code, message or "bad request", JSON, close=True)

    # -- routing ----------------------------------------------------------------

    def do_POST(self):
        if self.path.split("?", 1)[0] not in ("/v1/traces", "/v1/metrics"):
            return self._discard_and_fail(404, "not found: POST OTLP to /v1/traces or /v1/metrics", JSON)
        encoding = _CONTENT_TYPES.get(self.headers.get("Content-Type", "").split(";")[0].strip().lower())
        if not self._authorized():
            return self._discard_and_fail(401, "missing or wrong bearer token", encoding or JSON)
        if encoding is None:
            return self._discard_and_fail(415, "Content-Type must be application/x-protobuf or application/json",
                                          JSON)
        if self.closing.is_set():
            return self._discard_and_fail(503, "the collector is shutting down", encoding)
        if not self.slots.acquire(blocking=False):
            return self._discard_and_fail(503, "too many requests in progress; retry later", encoding)
        try:
            self._export(encoding)
        finally:
            self.slots.release()

    def do_OPTIONS(self):
        origin = self.headers.get("Origin")
        if origin is None:
            return self._reply(204, b"", None, {"Allow": "POST, OPTIONS"})
        if not self._origin_allowed(origin):
            return self._reply(403, b"", None, {"Vary": "Origin"})
        requested = self.headers.get("Access-Control-Request-Headers", "")
        allowed = ", ".join(h.strip() for h in requested.split(",") if h.strip().replace("-", "").isalnum())
        self._reply(204, b"", None, {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": allowed or _ALLOWED_HEADERS,
            "Access-Control-Max-Age": "7200",
        })

    def do_GET(self):
        if self.path.split("?", 1)[0] != "/":
            return self._fail(404, "not found: POST OTLP to /v1/traces or /v1/metrics", JSON)
        self._reply(200, json.dumps(self.status()).encode(), JSON)

    def _not_allowed(self):
        self._discard_and_fail(405, "method not allowed: POST OTLP to /v1/traces or /v1/metrics", JSON)

    do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_allowed

    def handle_expect_100(self):
        # Refuse an oversized or unauthorized body before the client sends it.
        length = self.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > self.config.max_body:
            self._fail(413, f"body larger than {self.config.max_body} bytes", JSON, close=True)
            return False
        if not self._authorized():
            self._fail(401, "missing or wrong bearer token", JSON, close=True)
            return False
        return super().handle_expect_100()

    # -- export -----------------------------------------------------------------

    def _export(self, encoding: str) -> None:
        body = self._read_body(encoding)
        if body is None:
            return
        traces = self.path.split("?", 1)[0] == "/v1/traces"
        if encoding == JSON:
            try:
                body = (parse_traces(body) if traces else parse_metrics(body)).SerializeToString()
            except BadRequest as error:
                self.ingest.bad_request()
                return self._fail(400, str(error), encoding)
        answer = self.ingest.traces(body) if traces else self.ingest.metrics(body)
        self._answer(answer, encoding, traces)

    def _answer(self, answer: Answer, encoding: str, traces: bool) -> None:
        if answer.outcome != "ok":
            status = _OUTCOME_STATUS[answer.outcome]
            retry = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else {}
            return self._fail(status, answer.message, encoding, extra=retry)
        response = ExportTraceServiceResponse() if traces else ExportMetricsServiceResponse()
        if answer.rejected or answer.message:
            partial = response.partial_success
            if traces:
                partial.rejected_spans = answer.rejected
            else:
                partial.rejected_data_points = answer.rejected
            partial.error_message = answer.message
        if encoding == PROTOBUF:
            return self._reply(200, response.SerializeToString(), PROTOBUF)
        from google.protobuf import json_format

        self._reply(200, json_format.MessageToJson(response, indent=None).encode(), JSON)

    def _read_body(self, encoding: str) -> Optional[bytes]:
        """The request body, decompressed; None when an error was answered."""
        limit = self.config.max_body
        content_encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if content_encoding not in ("identity", "", "gzip", "x-gzip"):
            return self._discard_and_fail(415, f"Content-Encoding {content_encoding!r} is not supported; use gzip",
                                          encoding)
        raw = self._read_raw(limit, encoding)
        if raw is None:
            return None
        if content_encoding in ("gzip", "x-gzip"):
            try:
                raw = _gunzip(raw, limit)
            except _TooLarge:
                return self._fail(413, f"decompressed body larger than {limit} bytes", encoding)
            except (OSError, EOFError, zlib.error):
                self.ingest.bad_request()
                return self._fail(400, "body is not valid gzip", encoding)
        if not raw:
            self.ingest.bad_request()
            return self._fail(400, "empty body: send an OTLP export request", encoding)
        return raw

    def _read_raw(self, limit: int, encoding: str) -> Optional[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit, encoding)
        length = self.headers.get("Content-Length")
        if length is None:
            return self._fail(411, "Content-Length is required", encoding, close=True)
        if not length.strip().isdigit():
            return self._fail(400, "Content-Length is not a number", encoding, close=True)
        size = int(length)
        if size > limit:
            return self._fail(413, f"body larger than {limit} bytes", encoding, close=True)
        data = self.rfile.read(size)
        if len(data) < size:
            self.close_connection = True
            return None  # the client went away mid-body
        return data

    def _read_chunked(self, limit: int, encoding: str) -> Optional[bytes]:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return self._fail(400, "malformed chunked body", encoding, close=True)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                return self._fail(413, f"body larger than {limit} bytes", encoding, close=True)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    # -- helpers ----------------------------------------------------------------

    def _authorized(self) -> bool:
        token = self.config.token
        if not token:
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())

    def _origin_allowed(self, origin: str) -> bool:
        origins = self.config.cors_origins
        return "*" in origins or origin in origins

    def _discard_and_fail(self, status: int, message: str, encoding: str, extra: Optional[dict] = None):
        # The body was not read: closing the connection keeps the next request's framing right.
        return self._fail(status, message, encoding, extra=extra, close=True)

    def _fail(self, status: int, message: str, encoding: str, extra: Optional[dict] = None,
              close: bool = False) -> None:
        if encoding == PROTOBUF:
            body = status_pb2.Status(code=_RPC_CODES.get(status, 2), message=message).SerializeToString()
        else:
            body = json.dumps({"code": _RPC_CODES.get(status, 2), "message": message}).encode()
        headers = dict(extra or {})
        if close:
            headers["Connection"] = "close"
            self.close_connection = True
        self._reply(status, body, encoding, headers)
        return None

    def _reply(self, status: int, body: bytes, content_type: Optional[str], headers: Optional[dict] = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        headers_in = getattr(self, "headers", None)
        origin = headers_in.get("Origin") if headers_in is not None else None
        if origin is not None and self._origin_allowed(origin):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)


class _TooLarge(Exception):
    pass


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (several members allowed) without ever holding more than ``limit`` bytes."""
    out, total = [], 0
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk = inflater.decompress(data, limit - total + 1)
        total += len(chunk)
        out.append(chunk)
        while inflater.unconsumed_tail and total <= limit:
            chunk = inflater.decompress(inflater.unconsumed_tail, limit - total + 1)
            total += len(chunk)
            out.append(chunk)
        if total > limit:
            raise _TooLarge()
        if not inflater.eof:
            raise EOFError("truncated gzip")
        data = inflater.unused_data
    return b"".join(out)

