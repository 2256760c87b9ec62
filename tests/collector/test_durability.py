"""Durability of acknowledgements: the writer commits without waiting for the disk and its syncer
thread fsyncs the write-ahead log before any answer goes out."""

from __future__ import annotations

import errno
import os
import threading

from takealook.collector import open_store
from takealook.collector.ingest import Ingest
from takealook.collector.store import SpanStore
from takealook.collector.writer import TRACES, Writer
from tests.collector.conftest import raw_request
from tests.conftest import wait_for


class _GatedStore(SpanStore):
    """A real store whose fsync waits for the test to open a gate (or fails, when told to)."""

    def __init__(self, path, failure: OSError | None = None):
        super().__init__(path, synchronous="NORMAL")
        self.gate = threading.Event()
        self.syncs = 0
        self.failure = failure

    def sync(self) -> None:
        self.gate.wait(10)
        self.syncs += 1
        if self.failure is not None:
            raise self.failure
        super().sync()


def test_acknowledgement_waits_for_the_fsync(tmp_path):
    store = _GatedStore(tmp_path / "spans.db")
    writer = Writer(store, durable=True)
    writer.start()
    try:
        first = writer.submit(TRACES, raw_request(50, seed=1).SerializeToString())
        second = writer.submit(TRACES, raw_request(50, seed=2).SerializeToString())
        # Committed (a reader sees the spans), but nobody is told before the log is on disk.
        wait_for(lambda: writer.stats.spans_stored == 100, timeout=10)
        with open_store(tmp_path / "spans.db") as reader:
            assert reader.summary().spans == 100
        assert not first.wait(0.3) and not second.wait(0)
        store.gate.set()
        assert first.wait(10) and second.wait(10)
        assert first.error is None and second.error is None
        assert store.syncs <= 2  # groups committed during an fsync share the next one
    finally:
        store.gate.set()
        writer.stop()


def test_after_a_failed_fsync_nothing_is_acknowledged(tmp_path):
    store = _GatedStore(tmp_path / "spans.db", failure=OSError(errno.EIO, "Input/output error"))
    store.gate.set()
    writer = Writer(store, durable=True)
    writer.start()
    try:
        ingest = Ingest(writer, ack_timeout=10)
        answer = ingest.traces(raw_request(20, seed=3).SerializeToString())
        assert answer.outcome == "broken"
        assert "Input/output error" in answer.message and "restart the collector" in answer.message
        # As PostgreSQL does: no later fsync is trusted, so nothing is acknowledged any more.
        store.failure = None
        later = ingest.traces(raw_request(20, seed=4).SerializeToString())
        assert later.outcome == "broken" and later.message == answer.message
        assert ingest.refusal(100).outcome == "broken"
        assert store.syncs == 1 and writer.stats.spans_stored == 20
    finally:
        writer.stop()


def test_without_durable_the_commit_is_the_acknowledgement(tmp_path):
    store = _GatedStore(tmp_path / "spans.db")  # the gate stays shut: sync must not be called
    writer = Writer(store, durable=False)
    writer.start()
    try:
        assert Ingest(writer, ack_timeout=10).traces(raw_request(20, seed=4).SerializeToString()).outcome == "ok"
        assert store.syncs == 0
    finally:
        store.gate.set()
        writer.stop()


def test_sync_follows_the_write_ahead_log(tmp_path):
    from takealook.collector.convert import Converter

    path = tmp_path / "spans.db"
    store = SpanStore(path, synchronous="NORMAL")
    try:
        store.sync()  # nothing written yet: nothing to do, no error
        store.write([Converter().traces(raw_request(30, seed=5).SerializeToString()).batch])
        store.sync()
        wal = f"{path}-wal"
        assert os.path.getsize(wal) > 0
        # A checkpoint that truncates the log keeps the file; later commits are synced through it.
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.write([Converter().traces(raw_request(30, seed=6).SerializeToString()).batch])
        store.sync()
        assert os.fstat(store._wal_fd).st_ino == os.stat(wal).st_ino
    finally:
        store.close()
    with open_store(path) as reader:
        assert reader.summary().spans == 60
