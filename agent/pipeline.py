"""From an ended span to the exporter, at the least cost to the app.

Inside the app a span that ends waits as it is in a queue. When 128 spans wait, or one has waited a
second (the idle thread checks twice a second), the waiting spans are encoded together as OTLP protobuf
(``otlp.span_field``: a statement's attribute block is encoded once and kept on its set), grouped by
scope, ``marshal``-ed and sent as ONE message over a Unix ``SOCK_SEQPACKET`` socket to the exporter
(``exporter.py``), which runs in a helper process and frames the spans of its messages into one OTLP
request and posts it. The send is non-blocking: if the exporter cannot keep up, the message is dropped
and counted, never waited for.

Why encode in the app rather than in the helper: a span handed over as a tuple cost the app a
tuple and ``marshal``-ing its fields and attributes, and then the helper decoded it all again and
encoded it (~22,000 instructions a span of the helper's, in gunicorn under the agent's bench). Encoded
in the app, a span costs the app a little more (~+6,000 instructions a span) and the helper far less
(~-18,000), in gunicorn: 13% less of the agent's CPU in all (docs/agent.md has the figures). The
bytes are the same either way.

Why encode 128 spans together rather than each as it ends: inside a busy app the agent's code and
data are cold at every span (the app ran its own between two spans), and a span's encoding took
~4.6 µs there against ~0.6 µs in a loop; encoded one after another, the spans share the warm encoder.
By perf samples in the bench's app (bench/agent_profile.py, Python 3.12 with -X perf), encoding, queueing
and handing spans over went from ~55 to ~21 µs a request (5 spans),
while the instructions did not change. A batch costs ~270 µs with the bench's mix and a new id at every
request (~2 µs a span, most of it the URL rules and attribute blocks of paths never seen before; a busy
machine). The idle thread encodes it, woken by the 128th span: paid by the request that ended that
span, it landed on the same endpoints run after run and made an A/A comparison call /health slower.
Past 4 batches waiting (the idle thread behind), the app sends itself.

Why batch across requests rather than send at each request's end: a message
costs a system call in the app and a wake-up of the helper (a context switch,
a ``recv``, a ``marshal.loads`` and its Python overhead), together more than
the spans of a small request cost to make; one message per 128 spans makes
that share small. The price is that spans reach the collector up to a second
later, and a process killed with SIGKILL loses its last second of spans
(a normal exit flushes them).

Why a helper process: OpenTelemetry's batch processor encodes and posts from a
thread inside the app, and that thread holds the GIL for milliseconds at a
time, so requests stall behind it (the p99 cost of in-process export). A
seqpacket socket keeps message boundaries, so forked workers (gunicorn,
uWSGI) share one socket safely; the exporter sees end-of-file when the last
process holding the socket exits, and then flushes and exits itself.

With ``TAKEALOOK_EXPORT=thread`` the same messages go to an in-process
exporter thread instead (for platforms that forbid helper processes).
"""

from __future__ import annotations

import atexit
import errno
import logging
import marshal
import os
import threading
import time
import uuid
from collections import deque
from typing import Callable, Optional

from takealook.agent.metrics import ServerDurationHistogram
from takealook.agent.otlp import Record, attributes_block, span_field
from takealook.agent.redact import DEFAULT as DEFAULT_RULES, REDACTED

log = logging.getLogger("takealook.agent")

PROTOCOL = 3  # (3, kind, resource, count, items): spans [(scope name, version, [span field, ...])], or metric points
FLUSH_AT = 128  # spans per message at most
MAX_WAIT_S = 1.0  # a buffered span waits at most this long (checked by the idle thread)
MAX_MESSAGE = 192 * 1024  # under the default socket send buffer; bigger batches are split
WARN_EVERY_S = 60.0
_monotonic = time.monotonic


class Pipeline:
    """Buffers ended spans and metric deltas and sends them as messages through ``send``.

    ``send(payload: bytes) -> bool`` returns False when the message could not be
    queued (exporter busy or gone); those spans are counted as dropped.
    """

    _fork_warned = False

    def __init__(self, send: Callable[[bytes], bool], resource: dict, metric_interval_s: float,
                 export_traces: bool = True, export_metrics: bool = True):
        self._send = send
        self._base_resource = dict(resource)
        self._metric_interval = metric_interval_s
        self._export_traces = export_traces
        self._export_metrics = export_metrics
        self.histogram = ServerDurationHistogram()
        self.url_rules = DEFAULT_RULES  # the agent's Redactor (its settings), set by start()
        self.on_fork: Optional[Callable[[], None]] = None  # called when a fork is found by the pid
        self.sent = 0
        self.dropped = 0
        self._dropped_unreported = 0
        self._last_warning = float("-inf")
        self._closed = False
        self._reset_process_state()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)
        atexit.register(self.close)

    # -- per process
    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._ended: deque = deque()  # ended spans (LeanSpans, Records), not yet encoded
        self._durations: deque = deque()  # requests' durations and series, not yet in the histogram
        self._oldest = 0.0
        self._next_metrics = time.monotonic() + self._metric_interval
        self._idle_thread: Optional[threading.Thread] = None
        self._wake = threading.Event()
        resource = dict(self._base_resource)
        resource["service.instance.id"] = str(uuid.uuid4())
        resource["process.pid"] = self._pid
        self.resource = resource
        self._resource_bytes = marshal.dumps(resource)

    def _after_fork(self) -> None:
        # The parent's buffered spans are the parent's to send.
        self._reset_process_state()
        self.histogram.reset()

    def check_fork(self) -> None:
        """Called when a new trace starts under uWSGI (the tracer checks the pid then) and before each message."""
        self._check_fork()

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:  # forked without at-fork hooks (uWSGI without py-call-osafterfork)
            self._after_fork()
            if self.on_fork is not None:  # the ids' generator is reseeded too (tracer._Ids.check_fork)
                self.on_fork()
            if not Pipeline._fork_warned:
                Pipeline._fork_warned = True
                log.warning("takealook: process %d was forked without Python's at-fork hooks (uWSGI: set "
                            "py-call-osafterfork = true); the agent noticed and recovered", self._pid)

    # -- spans
    def on_end(self, span) -> None:
        """Every ended span comes here and waits as it is, in a queue; every FLUSH_AT spans (or after
        MAX_WAIT_S) the waiting spans are encoded together and sent (``flush``)."""
        if not self._export_traces:
            return
        ended = self._ended
        if not ended:
            self._oldest = _monotonic()
        ended.append(span)  # a deque: appends and pops are atomic, so no lock is taken for a span
        waiting = len(ended)
        if waiting >= FLUSH_AT:
            # The idle thread encodes and sends the batch, so no request of the app pays for it whole (it
            # landed on the same endpoints request after request); past 4 batches, the app sends itself.
            if waiting >= 4 * FLUSH_AT or self._idle_thread is None:
                self.flush()
            else:
                self._wake.set()
        elif self._idle_thread is None:
            self._start_idle_thread()

    def record_request(self, seconds: float, method: str, route: str, status: int, scheme: str,
                       load: str) -> None:
        """A served request, for the duration histogram: queued (an append is atomic) and counted with
        others when spans are sent or the idle thread wakes, sampled or not (this is what gives rates and
        error ratios when traces are sampled)."""
        self._durations.append((seconds, method, route, status, scheme, load))
        if self._idle_thread is None:
            self._start_idle_thread()

    def _count_durations(self) -> None:
        durations = self._durations
        self.histogram.record_all([durations.popleft() for _ in range(len(durations))])

    def add(self, record: tuple) -> None:
        """Buffers one span given as a record tuple (``otlp.Record``'s fields: the SDK bridge's)."""
        self.on_end(Record(*record))

    def flush(self) -> None:
        # A fork is checked for here, once a message (and under uWSGI at each new trace: ``check_fork``),
        # not at each span: getpid is a system call. A child forked without at-fork hooks holds a copy of the
        # parent's queue; _check_fork starts it afresh, so the parent's spans are not sent twice.
        self._check_fork()
        ended = self._ended
        with self._lock:  # one flush at a time; the spans it takes are its own (a pop is atomic)
            spans = [ended.popleft() for _ in range(len(ended))]
        if spans:
            scopes = _encoded(spans, self.url_rules)
            self._ship(b"spans", sum(len(fields) for _, _, fields in scopes), scopes)
        if self._durations:
            self._count_durations()
        if self._export_metrics and time.monotonic() >= self._next_metrics:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        self._next_metrics = time.monotonic() + self._metric_interval
        self._count_durations()
        points = self.histogram.collect()
        if points:
            self._ship(b"metrics", len(points), points)

    def _ship(self, kind: bytes, count: int, items: list) -> None:
        payload = marshal.dumps((PROTOCOL, kind, self._resource_bytes, count, items))
        if len(payload) > MAX_MESSAGE and count > 1:
            for half in _halves(kind, items):
                self._ship(kind, *half)
            return
        try:
            ok = self._send(payload)
        except OSError as error:
            ok = False
            if error.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EPIPE, errno.ECONNREFUSED,
                                   errno.ECONNRESET, errno.EMSGSIZE):
                log.debug("takealook: send failed: %s", error)
        if kind == b"spans":
            if ok:
                self.sent += count
            else:
                self.dropped += count
                self._dropped_unreported += count
                self._warn_dropped()

    def _warn_dropped(self) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning("takealook: dropped %d spans (the exporter is busy or gone: is the collector up?); "
                        "the app is not affected", self._dropped_unreported)
            self._dropped_unreported = 0

    # -- background
    def _start_idle_thread(self) -> None:
        self._check_fork()
        with self._lock:
            if self._idle_thread is not None:
                return
            thread = threading.Thread(target=self._idle_loop, name="takealook-flush", daemon=True)
            self._idle_thread = thread
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down
            pass

    def _idle_loop(self) -> None:
        """Sends what waits longer than MAX_WAIT_S, and metrics on time, when requests are few."""
        pid = os.getpid()
        while not self._closed and os.getpid() == pid:
            self._wake.wait(MAX_WAIT_S / 2)
            self._wake.clear()
            try:
                if self._durations:
                    self._count_durations()
                if self._ended and (len(self._ended) >= FLUSH_AT or time.monotonic() - self._oldest >= MAX_WAIT_S):
                    self.flush()
                elif self._export_metrics and time.monotonic() >= self._next_metrics:
                    self.flush_metrics()
            except Exception:  # never let the flusher die of a telemetry error
                log.debug("takealook: flush failed", exc_info=True)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
            if self._export_metrics:
                self.flush_metrics()
        finally:
            self._closed = True
            self._wake.set()


URL = object()  # the third item of a span's ``deferred`` when its value is an outgoing URL (else: the route)


def apply_url_rules(span, redactor) -> None:
    """Puts the URL a span left for later through the URL rules (``redact``): a server path by the route it
    was served under, an outgoing URL whole. The span's attribute stays empty until then, so nothing
    leaves unredacted; when the rules fail, it is ``REDACTED``."""
    keys, value, route = span.deferred
    try:
        text = redactor.url(value) if route is URL else redactor.server_path(value, route)
    except Exception:
        text = REDACTED if route is URL else "/" + REDACTED
    for key in keys:
        span.attributes[key] = text


def _encoded(spans: list, redactor) -> list:
    """[(scope name, version, [span field, ...]), ...] of ended spans, each encoded by ``otlp.span_field``.

    A span whose attributes are still those of its shared set (``tracer.SharedAttributes``: a
    statement's) is written with the set's block, encoded once and kept on the set. Still those: equal,
    and each value that is not a string the same object (``1 == True``); any other span, a changed copy
    included, has its own attributes encoded (most from the encoder's caches). A span that cannot be
    encoded is left out, the others go. A URL a span left for later goes through the URL rules first:
    run for 128 spans in a row, they are warm, as the encoder is (``apply_url_rules``)."""
    scopes: dict = {}
    last_scope = fields = None
    for span in spans:
        try:
            if span.deferred is not None:
                apply_url_rules(span, redactor)
            block = None
            shared = span.shared
            if shared is not None:
                attributes = span.attributes
                if attributes is shared.attributes or attributes == shared.attributes:
                    for key, value in shared.pinned:
                        if attributes[key] is not value:
                            break
                    else:
                        block = shared.block
                        if block is None:
                            block = shared.block = attributes_block(shared.attributes)
            field = span_field(span, block)
        except Exception:  # telemetry must never fail the app: this span is lost, not the batch
            log.debug("takealook: could not encode a span", exc_info=True)
            continue
        scope = span.scope
        if scope is not last_scope:  # most spans are of one scope, the agent's: no lookup for them
            fields = scopes.get(scope)
            if fields is None:
                fields = scopes[scope] = []
            last_scope = scope
        fields.append(field)
    return [(name, version, fields) for (name, version), fields in scopes.items()]


def _halves(kind: bytes, items: list) -> tuple:
    """A message's items in two messages of about half the spans (or points) each: (count, items)."""
    if kind != b"spans":
        half = len(items) // 2
        return (half, items[:half]), (len(items) - half, items[half:])
    flat = [(name, version, field) for name, version, fields in items for field in fields]
    half = len(flat) // 2
    return tuple((len(part), _grouped(part)) for part in (flat[:half], flat[half:]))


def _grouped(flat: list) -> list:
    scopes: dict = {}
    for name, version, field in flat:
        scopes.setdefault((name, version), []).append(field)
    return [(name, version, fields) for (name, version), fields in scopes.items()]
