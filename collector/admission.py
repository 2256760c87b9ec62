"""The collector's memory bound: how many bytes of request bodies it holds at once, and for what.

``--max-memory`` bounds the resident memory of the whole process. Part of
it is fixed whatever the clients do (``fixed_bytes``): the interpreter and
libraries, SQLite's page cache, the converter's caches, the group of bodies
the writer is converting, and what gRPC receives before a handler sees it.
The rest is the ``MemoryBudget`` for request bodies: a body must reserve
its bytes before it is read (HTTP, from its ``Content-Length``) or as soon
as it has arrived (gRPC), and keeps them until it is answered (the body
waits in the write queue meanwhile). A body that does not fit is refused
with 429 / RESOURCE_EXHAUSTED and a retry delay, before it is read where
the protocol allows; the clients retry.

A body reserves more than its size while it is being turned into a
protobuf request: JSON takes about seven times its size as Python objects
while it is parsed (``JSON_FACTOR``), gzip its decompressed size (grown as
it is decompressed).
"""

from __future__ import annotations

import threading
from typing import Optional

from takealook.errors import UsageError

JSON_FACTOR = 10  # bytes held per byte of JSON body while it is parsed (measured: about 7)
# The resident memory of the collector before any request (the interpreter, protobuf, gRPC,
# SQLite), rounded up: 45 MB measured at start, ~60 MB once every code path has run.
BASE_BYTES = 80 << 20
SQLITE_CACHE_BYTES = 64 << 20  # schema.connect_writer: PRAGMA cache_size
CONVERTER_CACHE_BYTES = 3 * (16 << 20)  # convert.CACHE_BYTES for attribute sets, pairs and resources
# Converting a group of bodies holds about this many times the group's size in decoded
# messages and rows (measured: 2.8 for the rows, plus the decoded protobuf).
CONVERT_FACTOR = 4
GRPC_WORKERS = 8  # gRPC handler threads; each may hold one received message before it reserves


def fixed_bytes(max_body: int, max_group_bytes: int, grpc: bool) -> int:
    """The part of ``--max-memory`` that is not for request bodies."""
    converting = CONVERT_FACTOR * max(max_body, max_group_bytes)
    receiving = GRPC_WORKERS * max_body if grpc else 0
    return BASE_BYTES + SQLITE_CACHE_BYTES + CONVERTER_CACHE_BYTES + converting + receiving


def body_budget(max_memory: int, max_body: int, max_group_bytes: int, grpc: bool) -> int:
    """Bytes of request bodies the collector may hold; UsageError when ``max_memory`` is too small
    for even a few bodies of ``max_body`` (one JSON body, or four protobuf ones)."""
    fixed = fixed_bytes(max_body, max_group_bytes, grpc)
    needed = fixed + max(JSON_FACTOR, 4) * max_body
    if max_memory < needed:
        raise UsageError(f"--max-memory {max_memory >> 20}MiB is too small for --max-body {max_body >> 20}MiB: "
                         f"it needs at least {-(-needed >> 20)}MiB (or a smaller --max-body)")
    return max_memory - fixed


class MemoryBudget:
    """Bytes reserved by request bodies in memory, up to ``limit``; thread-safe."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> Optional["Reservation"]:
        """A reservation of ``size`` bytes, or None if they are not free now."""
        with self._lock:
            if self.used + size > self.limit:
                return None
            self.used += size
        return Reservation(self, size)

    def _change(self, delta: int) -> bool:
        with self._lock:
            if delta > 0 and self.used + delta > self.limit:
                return False
            self.used += delta
            return True


class Reservation:
    """Bytes reserved for one body; ``resize`` as it grows or shrinks, ``release`` when answered."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: MemoryBudget, size: int):
        self._budget, self.size = budget, size

    def resize(self, size: int) -> bool:
        """Hold ``size`` bytes from now on; False (and unchanged) if growing does not fit."""
        if not self._budget._change(size - self.size):
            return False
        self.size = size
        return True

    def release(self) -> None:
        self._budget._change(-self.size)
        self.size = 0

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
