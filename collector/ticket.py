"""A request body on its way through the writer, and what its submitter waits for.

``Ticket.state`` moves QUEUED -> WRITING (the writer took it into a group)
-> COMMITTED (durable mode: waiting for the fsync) -> DONE, or back from
WRITING to QUEUED when a write attempt failed and will be retried, or from
QUEUED to WITHDRAWN when its submitter gave up (it is then never stored).
The writer changes it under its lock (see ``writer.py``).
"""

from __future__ import annotations

import threading
from typing import Optional

from takealook.collector.convert import Converted

# Ticket states.
QUEUED, WRITING, COMMITTED, DONE, WITHDRAWN = range(5)


class DurabilityLost(Exception):
    """An fsync failed: nothing is acknowledged any more (see ``writer.py``)."""


class Ticket:
    """A submitted request body; ``wait`` until it is committed, found invalid, or failed."""

    __slots__ = ("kind", "body", "size", "_done", "converted", "invalid", "error", "state")

    def __init__(self, kind: str, body: bytes):
        self.kind, self.body, self.size = kind, body, len(body)
        self._done = threading.Event()
        self.converted: Optional[Converted] = None  # set once converted
        self.invalid: Optional[str] = None  # why the body is not an OTLP request, or cannot be stored
        self.error: Optional[BaseException] = None  # the store failed
        self.state = QUEUED  # changed under the writer's lock

    def wait(self, timeout: Optional[float]) -> bool:
        """True once finished (check ``invalid`` and ``error``); False on timeout."""
        return self._done.wait(timeout)

    def _finish(self) -> None:
        self.body = b""  # the memory goes now, not when the submitter lets go
        self.state = DONE
        self._done.set()
