"""The thread that makes committed groups durable before their requests are acknowledged."""

from __future__ import annotations

import threading
import time
from typing import Optional

from takealook.collector.ticket import Ticket


class Syncer:
    """The thread that makes committed groups durable (``store.sync``) and then acknowledges them.

    Groups committed while an fsync runs share the next one, as requests share
    a commit. An fsync that fails fails its groups and every later one (the
    writer then refuses everything: ``Writer.lose_durability``).
    """

    def __init__(self, writer):  # a writer.Writer: its store, finish and lose_durability
        self._writer = writer
        self._pending: list[list[Ticket]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self.seconds = 0.0  # how long the last fsync took
        self._thread = threading.Thread(target=self._run, name="takealook-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, group: list[Ticket]) -> None:
        with self._cond:
            self._pending.append(group)
            self._cond.notify()

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        writer = self._writer
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                groups, self._pending = self._pending, []
            error: Optional[BaseException] = writer.broken_error
            if error is None:
                began = time.monotonic()
                try:
                    writer.store.sync()
                except OSError as failure:
                    error = writer.lose_durability(failure)
                self.seconds = time.monotonic() - began
            for group in groups:
                writer.finish(group, error)
