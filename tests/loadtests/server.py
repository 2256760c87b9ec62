"""A small threaded HTTP server on 127.0.0.1 with a controllable delay per endpoint.

``DelayServer(delays={"/a": 20}, errors={"/b": 0.1}, seed=1)``: requests whose
path starts with ``/a`` sleep 20 ms; 10% of ``/b`` requests (seeded) answer 500.
``stall(at, seconds)`` makes every request arriving in ``[at, at + seconds)``
(epoch seconds) wait until the stall ends, as a server stuck in a GC pause or
a lock would. Every request is logged (path, traceparent) for assertions, and
``traceresponse`` is sent back when ``echo_trace`` is set (with the reversed
trace id, so a test can tell the server's id from the one it sent).
"""

from __future__ import annotations

import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client closing its connection is not news
        pass


class DelayServer:
    def __init__(self, delays=None, errors=None, seed: int = 1, echo_trace: bool = False):
        self.delays = dict(delays or {})
        self.errors = dict(errors or {})
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.echo_trace = echo_trace
        self.stall_window = (0.0, 0.0)
        self._stall_plan = None
        self.log: list[tuple[str, str, str]] = []  # (method, path, traceparent)
        self.httpd = _Quiet(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stall(self, at: float, seconds: float) -> None:
        self.stall_window = (at, at + seconds)

    def stall_after_first(self, offset: float, seconds: float) -> None:
        """Stall ``offset`` seconds after the first request arrives, for ``seconds``."""
        self._stall_plan = (offset, seconds)

    def __enter__(self) -> "DelayServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def _rule(self, table: dict, path: str, default):
        best = max((p for p in table if path.startswith(p)), key=len, default=None)
        return table[best] if best is not None else default

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else Nagle + delayed ACK add 40 ms to small responses

            def log_message(self, *args):  # quiet
                pass

            def _serve(self):
                arrived = time.time()
                with server.lock:
                    if server._stall_plan is not None:
                        offset, seconds = server._stall_plan
                        server._stall_plan = None
                        server.stall(arrived + offset, seconds)
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                traceparent = self.headers.get("traceparent", "")
                begin, end = server.stall_window
                if begin <= arrived < end:
                    time.sleep(end - arrived)
                delay = server._rule(server.delays, path, 0.0)
                if delay:
                    time.sleep(delay / 1000.0)
                with server.lock:
                    server.log.append((self.command, path, traceparent))
                    failed = server.random.random() < server._rule(server.errors, path, 0.0)
                body = b"boom" if failed else b'{"ok": true}'
                self.send_response(500 if failed else 200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                if server.echo_trace and traceparent:
                    # The server's own trace id: the reverse of ours, so a test can tell which one was kept.
                    parts = traceparent.split("-")
                    self.send_header("traceresponse", f"00-{parts[1][::-1]}-{'ab' * 8}-01")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Handler
