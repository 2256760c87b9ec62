"""The embedded collector's settings, and parsers for the values users type.

``CollectorSettings`` is built once, by the CLI (defaults < environment <
flags) or by code running the collector in-process (tests, the demo); the
collector reads nothing else. Parsers raise ``UsageError`` with one line that
names the flag and shows an example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from takealook.errors import UsageError

TOKEN_ENV = "TAKEALOOK_COLLECTOR_TOKEN"
DEFAULT_HTTP = ("127.0.0.1", 4318)
DEFAULT_GRPC = ("127.0.0.1", 4317)
DEFAULT_MAX_BODY = 8 * 1024 * 1024
DEFAULT_MAX_MEMORY = 512 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class CollectorSettings:
    store: Path
    http: tuple[str, int] = DEFAULT_HTTP  # port 0: any free port (see Collector.http_port)
    grpc: Optional[tuple[str, int]] = DEFAULT_GRPC  # None: no gRPC receiver
    max_body: int = DEFAULT_MAX_BODY  # bytes per request, compressed and decompressed
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to post ("*" for any)
    token: Optional[str] = None  # required as "Authorization: Bearer <token>" when set
    retain_s: Optional[float] = None  # drop traces older than this
    max_size: Optional[int] = None  # drop the oldest traces beyond this many bytes
    max_queued_bytes: int = 64 << 20  # request bodies waiting for the writer before 429
    ack_timeout_s: float = 5.0  # a request waits this long for its commit, then 503 (and is not stored)
    max_memory: int = DEFAULT_MAX_MEMORY  # resident memory bound; see admission.py
    max_connections: int = 512  # HTTP connections at once (a thread each); more are answered 503
    # Slow clients (see http_clients.py): idle keep-alive, request headers, body grace and minimum rate.
    idle_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    body_grace_s: float = 10.0
    min_body_rate: int = 64 * 1024  # bytes/s
    synchronous: str = "FULL"  # SQLite synchronous: FULL survives power loss, NORMAL a process kill
    retention_interval_s: float = 60.0


_ADDRESS = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.\-]*))?:?(?P<port>\d{1,5})$")


def parse_address(value: str, flag: str) -> tuple[str, int]:
    """``127.0.0.1:4318``, ``[::1]:4318``, ``:4318`` or ``4318`` (loopback)."""
    text = value.strip()
    match = _ADDRESS.match(text)
    if not match or (match.group("host") and ":" not in text and not text.isdigit()):
        raise UsageError(f"{flag} {value!r}: expected HOST:PORT, e.g. {flag} 127.0.0.1:4318")
    port = int(match.group("port"))
    if port > 65535:
        raise UsageError(f"{flag} {value!r}: port must be 0-65535")
    host = match.group("v6") or match.group("host") or "127.0.0.1"
    return host, port


_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]?i?B?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 1000**2, "MB": 1000**2, "MIB": 1024**2,
               "G": 1000**3, "GB": 1000**3, "GIB": 1024**3, "T": 1000**4, "TB": 1000**4, "TIB": 1024**4}


def parse_size(value: str, flag: str) -> int:
    """``2GB``, ``500MB``, ``8MiB``, ``1048576``."""
    match = _SIZE.match(value)
    unit = (match.group("unit") or "").upper() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise UsageError(f"{flag} {value!r}: expected a size such as 500MB, 2GB or 8MiB")
    size = int(float(match.group("number")) * _SIZE_UNITS[unit])
    if size <= 0:
        raise UsageError(f"{flag} {value!r}: must be more than zero")
    return size


_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d|w)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str, flag: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w``."""
    match = _DURATION.match(value)
    if not match:
        raise UsageError(f"{flag} {value!r}: expected a duration such as 12h, 7d or 2w")
    seconds = float(match.group("number")) * _DURATION_UNITS[match.group("unit").lower()]
    if seconds <= 0:
        raise UsageError(f"{flag} {value!r}: must be more than zero")
    return seconds
