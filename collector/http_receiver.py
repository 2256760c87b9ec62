"""OTLP/HTTP receiver: ``POST /v1/traces`` and ``/v1/metrics``, protobuf or JSON, gzip, CORS.

Answers follow the OTLP/HTTP spec: 200 with an Export*ServiceResponse
(partial_success when items were rejected or cut), 400 for undecodable or
empty bodies, 401 without the bearer token (when one is configured), 404 for
other paths, 405 for other methods, 408 for a body sent too slowly, 413 over
``max_body`` (compressed or not), 415 for other content types or encodings,
429 / 503 with ``Retry-After`` under overload, 503 once an fsync failed.
Error bodies are a ``google.rpc.Status`` in the request's encoding.

``GET /`` answers a small JSON status (counts), for health checks. CORS
preflights (``OPTIONS``) from an allowed origin get 204 with the allow
headers; other origins get 403.

One thread per connection (``ThreadingHTTPServer``, HTTP/1.1 keep-alive), at
most ``max_connections`` of them (more are answered 503 at once). Slow
clients lose their own connection, never anyone else's capacity: every read
is under a deadline (``http_clients.Deadlines``: idle, headers, body with a
minimum rate), and a request holds nothing shared while its body arrives
except the memory reserved for it. Before a body is read, the collector
decides whether it can take it: a body that the write queue could not
store within the ack timeout, or that does not fit the memory for bodies
(``admission.py``), is refused with 429 and ``Retry-After`` (and discarded
as it arrives, so the connection stays usable).
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler
from typing import Callable, Optional

from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from takealook.collector.admission import JSON_FACTOR, Reservation
from takealook.collector.http_clients import (
    BadBody, CappedServer, CappedServer6, ClientLimits, Deadlines, NoMemory, TooLarge, discard, gunzip,
    read_chunked, read_exact,
)
from takealook.collector.ingest import BUSY_MEMORY, RETRY_AFTER_S, Answer, Ingest
from takealook.collector.otlp_json import BadRequest, parse_metrics, parse_traces

log = logging.getLogger("takealook.collector")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}
_OUTCOME_STATUS = {"invalid": 400, "busy": 429, "timeout": 503, "stopping": 503, "broken": 503, "failed": 500}
# google.rpc.Code per HTTP status, for the Status body.
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 408: 4, 411: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
_ALLOWED_HEADERS = "Content-Type, Content-Encoding, Authorization"
_WRITE_TIMEOUT_S = 10.0  # sending an answer; a client that does not read it loses its connection


class ReceiverConfig:
    """What the handler needs besides the ingest pipeline (see CollectorSettings)."""

    def __init__(self, max_body: int, cors_origins: tuple[str, ...], token: Optional[str],
                 max_connections: int = 512, limits: ClientLimits = ClientLimits()):
        self.max_body = max_body
        self.cors_origins = cors_origins
        self.token = token
        self.max_connections = max_connections
        self.limits = limits


class HttpReceiver:
    def __init__(self, host: str, port: int, ingest: Ingest, config: ReceiverConfig,
                 status: Callable[[], dict]):
        handler = type("Handler", (_Handler,), {"ingest": ingest, "config": config, "status": staticmethod(status),
                                                "exporting": _Counter(), "closing": threading.Event()})
        self._handler = handler
        server_class = CappedServer6 if ":" in host else CappedServer
        self.server = server_class((host, port), handler)
        self.server.max_connections = config.max_connections
        self.address = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="takealook-http", daemon=True)

    @property
    def connections(self) -> int:
        return self.server.connections

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
        self._handler.exporting.wait_idle(timeout)


class _Counter:
    """Requests in progress, for ``drain``."""

    def __init__(self):
        self._count = 0
        self._cond = threading.Condition()

    def __enter__(self):
        with self._cond:
            self._count += 1

    def __exit__(self, *exc):
        with self._cond:
            self._count -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._count == 0, timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "takealook-collector"
    ingest: Ingest
    config: ReceiverConfig
    status: Callable[[], dict]
    exporting: _Counter
    closing: threading.Event

    def setup(self):
        super().setup()
        # Every read goes through the deadlines (see http_clients.py), the request line and headers too.
        self.rfile.close()
        self.clock = Deadlines(self.connection, self.config.limits)
        self.rfile = io.BufferedReader(self.clock, 1 << 16)

    def handle_one_request(self):
        self.clock.idle()
        super().handle_one_request()  # a read past its deadline ends the connection (socket.timeout)

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
        content_encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if content_encoding not in ("identity", "", "gzip", "x-gzip"):
            return self._discard_and_fail(415, f"Content-Encoding {content_encoding!r} is not supported; use gzip",
                                          encoding)
        size = self._declared_size(encoding)
        if size == -1:
            return None  # answered
        refusal = self.ingest.refusal(size or 0)
        if refusal is not None:
            return self._refuse(refusal, encoding, size)
        factor = JSON_FACTOR if encoding == JSON else 1
        reservation = self.ingest.reserve(max(size or 0, 1) * factor)
        if reservation is None:
            return self._refuse(BUSY_MEMORY, encoding, size)
        with reservation, self.exporting:
            try:
                self._export(encoding, size, content_encoding in ("gzip", "x-gzip"), reservation)
            except Exception:  # a bug of ours: this request alone fails, with an answer
                log.exception("cannot answer a request to %s", self.path)
                self._fail(500, "the collector failed on this request; see its log", encoding, close=True)

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
        # Refuse an oversized, unauthorized or unwanted body before the client sends it.
        length = self.headers.get("Content-Length")
        size = int(length) if length is not None and length.strip().isdigit() else 0
        if size > self.config.max_body:
            self._fail(413, f"body larger than {self.config.max_body} bytes", JSON, close=True)
            return False
        if not self._authorized():
            self._fail(401, "missing or wrong bearer token", JSON, close=True)
            return False
        refusal = self.ingest.refusal(size) if self.command == "POST" else None
        if refusal is not None:
            encoding = _CONTENT_TYPES.get(self.headers.get("Content-Type", "").split(";")[0].strip().lower())
            self._answer(refusal, encoding or JSON, self._traces(), close=True)
            return False
        return super().handle_expect_100()

    # -- export -----------------------------------------------------------------

    def _declared_size(self, encoding: str) -> Optional[int]:
        """The Content-Length (None for a chunked body); -1 when an error was answered."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            self._fail(411, "Content-Length is required", encoding, close=True)
            return -1
        if not length.strip().isdigit():
            self._fail(400, "Content-Length is not a number", encoding, close=True)
            return -1
        size = int(length)
        if size > self.config.max_body:
            self._fail(413, f"body larger than {self.config.max_body} bytes", encoding, close=True)
            return -1
        return size

    def _refuse(self, answer: Answer, encoding: str, size: Optional[int]) -> None:
        """Answer a body not taken; read and drop it as it arrives so the connection stays usable."""
        if size is None:  # chunked: not worth reading
            return self._answer(answer, encoding, self._traces(), close=True)
        try:
            self.clock.body()
            discard(self.rfile, size)
        except (EOFError, OSError):  # socket.timeout included: a slow refused body is not waited for
            self.close_connection = True
            return None
        self._answer(answer, encoding, self._traces())

    def _export(self, encoding: str, size: Optional[int], gzipped: bool, reservation: Reservation) -> None:
        limit = self.config.max_body
        factor = JSON_FACTOR if encoding == JSON else 1
        try:
            self.clock.body()
            if size is None:
                body = read_chunked(self.rfile, limit, lambda total: reservation.resize(total * factor))
            else:
                body = read_exact(self.rfile, size)
            if gzipped:
                compressed = len(body)
                body = gunzip(body, limit, lambda total: reservation.resize(compressed + total * factor))
                reservation.resize(len(body) * factor)
        except socket.timeout:
            self.ingest.stats.add(slow_clients=1)
            limits = self.config.limits
            return self._fail(408, f"request body too slow: send at least {limits.min_body_rate} bytes/s after "
                                   f"the first {limits.body_grace_s:g} s", encoding, close=True)
        except (EOFError, OSError):
            self.close_connection = True  # the client went away mid-body
            return None
        except TooLarge:
            return self._fail(413, f"body larger than {limit} bytes (decompressed)", encoding, close=True)
        except NoMemory:
            return self._answer(BUSY_MEMORY, encoding, self._traces(), close=size is None)
        except BadBody as error:
            self.ingest.bad_request()
            return self._fail(400, str(error), encoding, close=size is None)
        if not body:
            self.ingest.bad_request()
            return self._fail(400, "empty body: send an OTLP export request", encoding)
        traces = self._traces()
        if encoding == JSON:
            try:
                body = (parse_traces(body) if traces else parse_metrics(body)).SerializeToString()
            except BadRequest as error:
                self.ingest.bad_request()
                return self._fail(400, str(error), encoding)
            reservation.resize(len(body))
        answer = self.ingest.traces(body) if traces else self.ingest.metrics(body)
        self._answer(answer, encoding, traces)

    def _traces(self) -> bool:
        return self.path.split("?", 1)[0] != "/v1/metrics"

    def _answer(self, answer: Answer, encoding: str, traces: bool, close: bool = False) -> None:
        if answer.outcome != "ok":
            status = _OUTCOME_STATUS[answer.outcome]
            retry = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else {}
            return self._fail(status, answer.message, encoding, extra=retry, close=close)
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
        self.connection.settimeout(_WRITE_TIMEOUT_S)  # reads left it at their own deadline
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
