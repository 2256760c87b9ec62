"""HTTP clients that may be slow, lying or hostile: a cap on connections, deadlines on every read.

``CappedServer`` runs one thread per connection, at most ``max_connections``
of them; beyond that a new connection is answered 503 with ``Retry-After``
at once and closed (each connection costs a thread, and threads cost
memory).

Every read from a connection's socket goes through a ``Deadlines`` clock
with one deadline per phase, so a client that sends a byte now and then
loses its own connection instead of holding a thread forever:

- *idle*: a keep-alive connection waits at most ``idle_timeout_s`` for the
  first byte of its next request;
- *headers*: from that first byte, the request line and headers must be in
  within ``header_timeout_s``;
- *body*: a body gets ``body_grace_s`` plus one second per ``min_body_rate``
  bytes received (Apache's mod_reqtimeout rule), so a client sending 1 byte
  a second is cut after the grace, whatever length it announced, while a
  large body arriving at a normal rate is never cut.

A read past its deadline raises ``socket.timeout`` (``TimeoutError``), as a
socket timeout would, so ``http.server`` ends the connection. Bodies are
read into one preallocated buffer (no copies); gzip is inflated in bounded
steps, each step first growing the body's memory reservation.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Callable

log = logging.getLogger("takealook.collector")

_IDLE, _HEADERS, _BODY = "idle", "headers", "body"
_RETRY_AFTER_S = 1
_FULL_MESSAGE = json.dumps({"code": 14, "message": "too many connections; retry later"}).encode()
_FULL_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: %d\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (_RETRY_AFTER_S, len(_FULL_MESSAGE),
                                                                      _FULL_MESSAGE))
_INFLATE_STEP = 1 << 20  # bytes inflated per step (each step grows the reservation first)
_DISCARD_CHUNK = 1 << 16


@dataclass(frozen=True)
class ClientLimits:
    idle_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    body_grace_s: float = 10.0
    min_body_rate: int = 64 << 10  # bytes per second, on average, after the grace


class CappedServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with at most ``max_connections`` connections (``connections`` now)."""

    daemon_threads = True
    allow_reuse_address = True  # a restarted collector can bind while old connections sit in TIME_WAIT
    request_queue_size = 128
    max_connections = 512

    def __init__(self, *args, **kwargs):
        self.connections = 0
        self._count_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        # One thread per connection, but not without end: beyond the limit a
        # connection is told to come back (each waiting one costs a thread).
        with self._count_lock:
            full = self.connections >= self.max_connections
            if not full:
                self.connections += 1
        if full:
            try:
                request.settimeout(1.0)
                request.sendall(_FULL_ANSWER)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count_lock:
            self.connections -= 1

    def handle_error(self, request, client_address):
        # A client that resets or abandons its connection is ordinary on a network, not worth a
        # traceback on stderr (socketserver's default) under the status line.
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            log.error("error while serving %s", client_address[0], exc_info=True)


class CappedServer6(CappedServer):
    address_family = socket.AF_INET6


class TooLarge(Exception):
    pass


class NoMemory(Exception):
    """The body's memory reservation could not grow."""


class BadBody(Exception):
    """Malformed framing or compression; the message says which."""


class Deadlines(io.RawIOBase):
    """A socket's reads, each bounded by the current phase's deadline (see the module docstring)."""

    def __init__(self, sock: socket.socket, limits: ClientLimits):
        self._sock = sock
        self._limits = limits
        self._phase = _IDLE
        self._deadline = time.monotonic() + limits.idle_timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout(f"the request's {self._phase} took too long")
        self._sock.settimeout(remaining)
        count = self._sock.recv_into(buffer)  # socket.timeout when the deadline passes
        if count:
            if self._phase == _IDLE:
                self._phase = _HEADERS
                self._deadline = time.monotonic() + self._limits.header_timeout_s
            elif self._phase == _BODY:
                self._deadline += count / self._limits.min_body_rate
        return count

    def idle(self) -> None:
        """Waiting for the next request on this connection."""
        self._phase = _IDLE
        self._deadline = time.monotonic() + self._limits.idle_timeout_s

    def body(self) -> None:
        """Reading a request body, from now."""
        self._phase = _BODY
        self._deadline = time.monotonic() + self._limits.body_grace_s

    @property
    def in_body(self) -> bool:
        return self._phase == _BODY


def read_exact(rfile: io.BufferedReader, size: int) -> bytearray:
    """``size`` bytes; EOFError if the client goes away first, socket.timeout if too slow."""
    buffer = bytearray(size)
    got = rfile.readinto(buffer) if size else 0  # loops over raw reads, each under the deadline
    if got < size:
        raise EOFError("the client went away mid-body")
    return buffer


def read_chunked(rfile: io.BufferedReader, limit: int, grow: Callable[[int], bool]) -> bytearray:
    """A chunked body of at most ``limit`` bytes; ``grow(total)`` must accept each new total."""
    body = bytearray()
    while True:
        line = rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadBody("malformed chunked body") from None
        if size < 0:
            raise BadBody("malformed chunked body")
        if size == 0:
            for _ in range(100):  # trailers, bounded
                if rfile.readline(1024) in (b"\r\n", b"\n", b""):
                    break
            return body
        if len(body) + size > limit:
            raise TooLarge()
        if not grow(len(body) + size):
            raise NoMemory()
        body += read_exact(rfile, size)
        rfile.readline(1024)


def discard(rfile: io.BufferedReader, size: int) -> None:
    """Read and drop ``size`` bytes (a refused body), so the connection can be kept."""
    scratch = bytearray(min(size, _DISCARD_CHUNK))
    while size > 0:
        got = rfile.readinto(memoryview(scratch)[:min(size, len(scratch))])
        if not got:
            raise EOFError("the client went away mid-body")
        size -= got


def gunzip(data, limit: int, grow: Callable[[int], bool]) -> bytearray:
    """Inflate gzip (several members allowed), never holding more than ``limit`` bytes of output;
    ``grow(total)`` must accept each new total (else NoMemory)."""
    out = bytearray()
    view = memoryview(data)
    while len(view):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = view
        while True:
            step = min(_INFLATE_STEP, limit - len(out) + 1)
            if not grow(len(out) + step):
                raise NoMemory()
            try:
                chunk = inflater.decompress(pending, step)
            except zlib.error:
                raise BadBody("body is not valid gzip") from None
            out += chunk
            if len(out) > limit:
                raise TooLarge()
            pending = inflater.unconsumed_tail
            # A full step may leave output inside zlib with no input left: go on until it is out.
            if inflater.eof or (not pending and len(chunk) < step):
                break
        if not inflater.eof:
            raise BadBody("body is not valid gzip")
        view = memoryview(inflater.unused_data)
    if not grow(len(out)):  # back to what is held
        raise NoMemory()
    return out
