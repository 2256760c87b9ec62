"""A ClickHouse HTTP interface on loopback, answered by the embedded engine (chdb), for `clickhouse://` tests.

    python tests/collector/clickhouse_shim.py PORT DATA_DIR

There is no ClickHouse server here. This speaks the part of ClickHouse's HTTP
interface that clickhouse-connect uses (the SQL in the ``query`` parameter
and/or the body, insert data after it, ``default_format``, compressed request
bodies), runs each statement with the real engine in DATA_DIR, and answers in
the format asked for; errors are HTTP 500 with ClickHouse's message. It binds
127.0.0.1 only and serves until it is stopped.
"""

from __future__ import annotations

import gzip
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chdb import session as chdb_session

_LOCK = threading.Lock()  # one chdb session, one statement at a time


def _decompress(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.decompress(body)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(body)
    return body


def handler(engine):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _answer(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            body = _decompress(self.rfile.read(length), self.headers.get("Content-Encoding")) if length else b""
            query = params.get("query")
            sql = query + ("\n" + body.decode() if body else "") if query is not None else body.decode()
            try:
                with _LOCK:
                    out = engine.query(sql, params.get("default_format", "TabSeparated")).bytes()
                status = 200
            except Exception as error:  # noqa: BLE001 - the engine's message is the answer
                out, status = str(error).encode(), 500
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("X-ClickHouse-Summary", '{"read_rows":"0","written_rows":"0"}')
            if status != 200:
                self.send_header("X-ClickHouse-Exception-Code", "1")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = _answer

    return Handler


def main() -> None:
    port, folder = int(sys.argv[1]), sys.argv[2]
    engine = chdb_session.Session(folder)
    server = ThreadingHTTPServer(("127.0.0.1", port), handler(engine))
    try:
        server.serve_forever()
    finally:
        engine.close()


if __name__ == "__main__":
    main()
