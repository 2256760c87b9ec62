"""POSTs OTLP bodies as OpenTelemetry's exporter does: the export helper's (or thread's) side.

``Poster.post`` sends one body with the settings OpenTelemetry's exporter reads
from the environment (``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``, ``_TIMEOUT``,
``_COMPRESSION``, ``_CERTIFICATE``), retrying what the OTLP specification
calls retryable (429, 502, 503, 504, connection errors) with backoff and
``Retry-After``, within the timeout.
"""

from __future__ import annotations

import gzip
import http.client
import os
import random
import ssl
import time
from typing import Mapping, Optional
from urllib.parse import unquote, urlsplit

RETRYABLE = {429, 502, 503, 504}


class Poster:
    """POSTs OTLP bodies to one URL with OpenTelemetry's exporter settings from the environment."""

    def __init__(self, url: str, signal: str = "TRACES", environ: Optional[Mapping[str, str]] = None):
        env = os.environ if environ is None else environ

        def setting(name: str, default: str = "") -> str:
            return env.get(f"OTEL_EXPORTER_OTLP_{signal}_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}") or default

        self.url = url
        self.headers = {"Content-Type": "application/x-protobuf", "User-Agent": "takealook-agent"}
        for item in filter(None, (p.strip() for p in setting("HEADERS").split(","))):
            key, sep, value = item.partition("=")
            if sep and key.strip():
                self.headers[unquote(key.strip())] = unquote(value.strip())
        try:
            self.timeout = max(0.1, float(setting("TIMEOUT", "10000")) / 1000.0)
        except ValueError:
            self.timeout = 10.0
        self.gzip = setting("COMPRESSION").strip().lower() == "gzip"
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        certificate = setting("CERTIFICATE")
        self.context = ssl.create_default_context(cafile=certificate) if certificate else None
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._connection: Optional[http.client.HTTPConnection] = None

    def post(self, body: bytes) -> tuple:
        """(delivered, reason): retries retryable failures until the timeout is spent."""
        data = gzip.compress(body, 5) if self.gzip else body
        deadline = time.monotonic() + self.timeout
        delay = 0.5
        reason = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, reason or "timeout"
            retry_after = None
            try:
                status, headers = self._send(data, remaining)
                if 200 <= status < 300:
                    return True, ""
                reason = f"HTTP {status}"
                if status not in RETRYABLE:
                    return False, reason
                retry_after = _retry_after(headers.get("Retry-After"))
            except (http.client.HTTPException, OSError) as error:
                reason = str(error) or type(error).__name__
            wait = retry_after if retry_after is not None else delay * (0.5 + random.random())
            if time.monotonic() + wait >= deadline:
                return False, reason
            time.sleep(wait)
            delay = min(delay * 2, 8.0)

    def _send(self, data: bytes, timeout: float) -> tuple:
        """One POST on a kept-alive connection (a new one after any failure): (status, headers).

        A connection per post, as urllib makes, is a connect and a close, their system calls and
        a TLS handshake every second; one kept connection spares them. A collector is never
        reached through a proxy."""
        reused = self._connection is not None
        try:
            return self._send_once(data, timeout)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            return self._send_once(data, timeout)  # the collector closed an idle connection: once more, anew

    def _send_once(self, data: bytes, timeout: float) -> tuple:
        connection = self._connection
        if connection is None:
            if self._https:
                connection = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                         context=self.context)
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._connection = connection
        elif connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            connection.request("POST", self._path, body=data, headers=self.headers)
            response = connection.getresponse()
            response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, response.headers

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
