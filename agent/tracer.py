"""A lean implementation of the OpenTelemetry tracing API for the agent.

Why not the SDK's ``TracerProvider``: its spans cost about 17 µs each to start
and end (attribute validation under a lock, a processor chain, a ``SpanContext``
built eagerly), which on a 1.7 ms endpoint with six spans is 6% before any
instrumentation runs. These spans implement the same API (``get_span_context``,
``set_attribute``, ``record_exception``, ``end``, ...), so user code calling
``opentelemetry.trace.get_tracer(...)`` works unchanged; they are a few
microseconds each and, when ended, hand a plain tuple to the pipeline
(``pipeline.py``), which ships it out of the process. Sampling uses the SDK's
samplers, so ``OTEL_TRACES_SAMPLER`` means what it means everywhere.
"""

from __future__ import annotations

import os
import random
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from opentelemetry import trace
from opentelemetry.trace import (
    INVALID_SPAN,
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.status import Status, StatusCode

from takealook.agent import errorscrub

_time_ns = time.time_ns
_new_object = object.__new__
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_ATTR_TYPES = (str, bool, int, float)
MAX_ATTRIBUTE_LENGTH = 8192  # longer strings (a huge SQL text) are cut: the span must stay small
MAX_EVENTS = 32

# Kind and status numbers as OTLP writes them.
KIND_NUMBERS = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4,
                SpanKind.CONSUMER: 5}
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


class _Ids:
    """Random trace and span ids from a private generator, reseeded after fork.

    A private ``random.Random`` leaves the app's own random state alone. A fork through ``os.fork``
    reseeds it at once (an at-fork hook); one that bypasses Python's hooks (uWSGI without
    ``py-call-osafterfork``), where two workers would otherwise draw equal ids, is found by the pid:
    at every new trace under uWSGI, elsewhere when the pipeline next sends (``check_fork``), so no
    other server pays a ``getpid`` system call (1-4 µs in a VM) at every request.
    """

    def __init__(self):
        self._pid = os.getpid()
        self._random = random.Random()
        self.on_fork: Optional[Callable[[], None]] = None  # the pipeline's check, run at the same moment
        self.every_trace = _forks_without_hooks()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._pid = os.getpid()
        self._random.seed()

    def check_fork(self) -> None:
        if os.getpid() != self._pid:
            self._after_fork()
            if self.on_fork is not None:
                self.on_fork()

    def trace_id(self) -> int:
        if self.every_trace:
            self.check_fork()
        value = self._random.getrandbits(128)
        return value or 1

    def span_id(self) -> int:
        value = self._random.getrandbits(64)
        return value or 1


def _forks_without_hooks() -> bool:
    """Whether this process may be forked past Python's at-fork hooks: under uWSGI (its ``uwsgi`` module is
    built in), which forks in C unless ``py-call-osafterfork`` is set."""
    return "uwsgi" in sys.builtin_module_names or "uwsgi" in sys.modules


def clean_value(value: Any) -> Any:
    """An attribute value as OpenTelemetry allows it, or None to drop it."""
    if isinstance(value, _ATTR_TYPES):
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_LENGTH:
            return value[:MAX_ATTRIBUTE_LENGTH]
        return value
    if isinstance(value, (list, tuple)):
        items = tuple(v for v in value if isinstance(v, _ATTR_TYPES))
        return items if len(items) == len(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")[:MAX_ATTRIBUTE_LENGTH]
    return None


class SharedAttributes:
    """An attribute set many spans start with (a statement's on a connection): each such span gets its
    own copy in ``attributes`` and this in ``shared``. A span that ends with its copy as it was (equal,
    and every value that is not a string the very object, since ``1 == True == 1.0``) is encoded with
    the set's attribute block, encoded once and kept here (``pipeline.py``); a span whose copy changed
    (an ``error.type``, a batch size, any ``set_attribute``) has its own encoded. The set's attributes
    are never changed after it is made."""

    __slots__ = ("attributes", "pinned", "block")

    def __init__(self, attributes: dict):
        self.attributes = attributes
        self.pinned = tuple((key, value) for key, value in attributes.items() if type(value) is not str)
        self.block = None  # the OTLP attributes block, once a span has been encoded with it


class LeanSpan(trace.Span):
    """A recording span. Cheap to make; its data leaves as a tuple when it ends."""

    __slots__ = ("trace_id", "span_id", "parent_id", "parent_remote", "name", "kind", "start_ns", "end_ns",
                 "attributes", "events", "links", "status_code", "status_text", "trace_state", "scope",
                 "_context", "_on_end", "_error_text", "shared", "deferred")

    def __init__(self, name: str, trace_id: int, span_id: int, parent_id: int, parent_remote: bool,
                 kind: int, attributes: Optional[dict], trace_state: Optional[TraceState], scope: tuple,
                 on_end: Callable[["LeanSpan"], None], start_ns: Optional[int] = None):
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.parent_remote = parent_remote
        self.kind = kind
        self.attributes = attributes if attributes is not None else {}
        self.trace_state = trace_state
        self.scope = scope
        self.events = None
        self.links = None
        self.status_code = STATUS_UNSET
        self.status_text = ""
        self.end_ns = 0
        self._context = None
        self._on_end = on_end
        self._error_text = None
        self.shared = None
        self.deferred = None  # a URL the pipeline puts through the URL rules when it encodes the span
        self.start_ns = start_ns or _time_ns()

    # -- the OpenTelemetry Span API
    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            context = self._context = SpanContext(self.trace_id, self.span_id, False, _SAMPLED,
                                                  self.trace_state)
        return context

    def is_recording(self) -> bool:
        return self.end_ns == 0

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_ns == 0 and isinstance(key, str) and key:
            value = clean_value(value)
            if value is not None:
                self.attributes[key] = value

    def set_attributes(self, attributes) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes=None, timestamp: Optional[int] = None) -> None:
        if self.end_ns:
            return
        if self.events is None:
            self.events = []
        if len(self.events) < MAX_EVENTS:
            clean = {k: v for k, v in ((k, clean_value(v)) for k, v in (attributes or {}).items()) if v is not None}
            self.events.append((str(name), timestamp or time.time_ns(), clean))

    def add_link(self, context: SpanContext, attributes=None) -> None:
        if self.end_ns or context is None or not context.is_valid:
            return
        if self.links is None:
            self.links = []
        clean = {k: v for k, v in ((k, clean_value(v)) for k, v in (attributes or {}).items()) if v is not None}
        self.links.append((context.trace_id, context.span_id, clean))

    def update_name(self, name: str) -> None:
        if self.end_ns == 0:
            self.name = name

    def set_status(self, status, description: Optional[str] = None) -> None:
        if self.end_ns or self.status_code == STATUS_OK:
            return  # OK is final (the spec)
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is StatusCode.ERROR:
            self.status_code, self.status_text = STATUS_ERROR, self._scrubbed(description) if description else ""
        elif code is StatusCode.OK:
            self.status_code, self.status_text = STATUS_OK, ""

    def record_exception(self, exception: BaseException, attributes=None, timestamp: Optional[int] = None,
                         escaped: bool = False) -> None:
        """The exception event, its message and stack trace without values (``errorscrub``)."""
        if self.end_ns:
            return
        statement = self.attributes.get("db.query.text", "")
        message = errorscrub.describe(exception, statement)
        event = {
            "exception.type": errorscrub.qualified_name(type(exception)),
            "exception.message": message[:MAX_ATTRIBUTE_LENGTH],
            "exception.stacktrace": errorscrub.stacktrace(exception, statement)[-MAX_ATTRIBUTE_LENGTH:],
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)
        # OpenTelemetry's use_span() then sets the status to "Type: str(exception)": known by its text.
        try:
            self._error_text = (f"{type(exception).__name__}: {exception}", f"{type(exception).__name__}: {message}")
        except Exception:
            self._error_text = None

    def _scrubbed(self, description: str) -> str:
        known = self._error_text
        if known is not None and description == known[0]:
            return known[1][:512]
        return errorscrub.scrub_text(description)[:512]

    def fail(self, error: BaseException, overwrite_type: bool = True) -> None:
        """Marks the span failed by ``error``: an exception event, ERROR status, ``error.type``."""
        self.record_exception(error)
        self.status_code = STATUS_ERROR
        known = self._error_text
        self.status_text = (known[1] if known is not None else
                            errorscrub.status_text(error, self.attributes.get("db.query.text", "")))[:512]
        if overwrite_type or "error.type" not in self.attributes:
            self.attributes["error.type"] = type(error).__qualname__

    def end(self, end_time: Optional[int] = None) -> None:
        if self.end_ns:
            return
        self.end_ns = end_time or _time_ns()
        try:
            self._on_end(self)
        except Exception:  # telemetry must never fail the app
            pass

    def __repr__(self) -> str:
        return f"<LeanSpan {self.name!r} trace={self.trace_id:032x} span={self.span_id:016x}>"


class LeanTracer(trace.Tracer):
    def __init__(self, provider: "LeanTracerProvider", name: str, version: str, on_end=None):
        self._provider = provider
        self._scope = (name or "", version or "")
        self._on_end = on_end  # None: the provider's

    def start_span(self, name: str, context=None, kind: SpanKind = SpanKind.INTERNAL, attributes=None,
                   links=None, start_time: Optional[int] = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> trace.Span:
        if attributes:
            attributes = {k: v for k, v in ((k, clean_value(v)) for k, v in attributes.items()) if v is not None}
        span = self._provider.make_span(name, trace.get_current_span(context), KIND_NUMBERS.get(kind, 1),
                                        attributes, self._scope, links, start_time, self._on_end)
        if links and isinstance(span, LeanSpan):
            for link in links:
                span.add_link(link.context, link.attributes)
        return span

    @contextmanager
    def start_as_current_span(self, name: str, context=None, kind: SpanKind = SpanKind.INTERNAL,
                              attributes=None, links=None, start_time: Optional[int] = None,
                              record_exception: bool = True, set_status_on_exception: bool = True,
                              end_on_exit: bool = True) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                            set_status_on_exception=set_status_on_exception) as current:
            yield current


class LeanTracerProvider(trace.TracerProvider):
    """Makes LeanSpans; ``on_end`` receives each recording span when it ends."""

    def __init__(self, on_end: Callable[[LeanSpan], None], sampler=None,
                 on_end_of_scope: Optional[Callable[[str], Optional[Callable]]] = None):
        self._on_end = on_end
        # A scope may get its own on_end (contrib instrumentations' spans are scrubbed first: contrib_policy).
        self._on_end_of_scope = on_end_of_scope
        self._sampler = sampler  # None: parent-based always-on, the default, decided inline
        self._ids = _Ids()
        self._span_bits = self._ids._random.getrandbits  # the same generator after a fork (it is reseeded)
        self.span_bits = self._span_bits
        self.on_end = on_end  # where ended spans go: records made without a span object too (dbapi.py)
        # Whether a child of a LeanSpan is sampled as its parent is, with nothing else to decide (the default
        # sampler): then the agent's own DB spans are written straight as records (dbapi.py).
        self.inline_children = sampler is None
        self._tracers: dict = {}

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: Optional[str] = None,
                   schema_url: Optional[str] = None, attributes=None) -> trace.Tracer:
        key = (instrumenting_module_name, instrumenting_library_version)
        tracer = self._tracers.get(key)
        if tracer is None:
            on_end = self._on_end_of_scope(instrumenting_module_name or "") if self._on_end_of_scope else None
            tracer = self._tracers[key] = LeanTracer(self, instrumenting_module_name,
                                                     instrumenting_library_version or "", on_end)
        return tracer

    def make_span(self, name: str, parent: trace.Span, kind: int, attributes: Optional[dict], scope: tuple,
                  links=None, start_time: Optional[int] = None, on_end=None) -> trace.Span:
        if self._sampler is None:  # the default sampler, decided inline for the two common cases
            if isinstance(parent, LeanSpan):  # a child, sampled as its parent is
                trace_id, parent_id, state = parent.trace_id, parent.span_id, parent.trace_state
            elif parent is INVALID_SPAN:  # a new trace, sampled
                trace_id, parent_id, state = self._ids.trace_id(), 0, None
            else:
                trace_id = None
            if trace_id is not None:
                # What LeanSpan(...) does, without the call of its __init__ (a fifth of a span's making).
                span = _new_object(LeanSpan)
                span.name = name
                span.trace_id = trace_id
                span.span_id = self._span_bits(64) or 1
                span.parent_id = parent_id
                span.parent_remote = False
                span.kind = kind
                span.attributes = attributes if attributes is not None else {}
                span.trace_state = state
                span.scope = scope
                span.events = span.links = span._context = span._error_text = span.shared = span.deferred = None
                span.status_code = STATUS_UNSET
                span.status_text = ""
                span.end_ns = 0
                span._on_end = on_end or self._on_end
                span.start_ns = start_time or _time_ns()
                return span
        ids = self._ids
        if isinstance(parent, LeanSpan):
            trace_id, parent_id, remote, sampled, state = parent.trace_id, parent.span_id, False, True, \
                parent.trace_state
            parent_context = None
        else:
            parent_context = parent.get_span_context()
            if parent_context.is_valid:
                trace_id, parent_id, remote = parent_context.trace_id, parent_context.span_id, \
                    parent_context.is_remote
                sampled, state = parent_context.trace_flags.sampled, parent_context.trace_state
            else:
                trace_id, parent_id, remote, sampled, state = ids.trace_id(), 0, False, True, None
        if self._sampler is not None:
            sampled, state, extra = self._sample(parent, parent_context, trace_id, name, kind, attributes, links)
            if extra:
                attributes = {**(attributes or {}), **extra}
        span_id = ids.span_id()
        if not sampled:
            return NonRecordingSpan(SpanContext(trace_id, span_id, False, _NOT_SAMPLED, state))
        return LeanSpan(name, trace_id, span_id, parent_id, remote, kind, attributes, state, scope,
                        on_end or self._on_end, start_time)

    def _sample(self, parent, parent_context, trace_id, name, kind, attributes, links):
        from opentelemetry import context as otel_context

        kinds = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT, 4: SpanKind.PRODUCER,
                 5: SpanKind.CONSUMER}
        parent_ctx = trace.set_span_in_context(parent, otel_context.Context()) \
            if (parent_context is None or parent_context.is_valid) else None
        result = self._sampler.should_sample(parent_ctx, trace_id, name, kinds.get(kind, SpanKind.INTERNAL),
                                             attributes, links)
        return result.decision.is_sampled(), result.trace_state, dict(result.attributes or {})


def build_sampler(name: str, ratio: float):
    """The SDK sampler for OTEL_TRACES_SAMPLER, or None for the inline default."""
    if name == "parentbased_always_on":
        return None
    from opentelemetry.sdk.trace import sampling

    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "traceidratio": sampling.TraceIdRatioBased(ratio),
        "parentbased_traceidratio": sampling.ParentBased(sampling.TraceIdRatioBased(ratio)),
    }[name]


__all__ = ["LeanSpan", "SharedAttributes", "LeanTracer", "LeanTracerProvider", "build_sampler", "INVALID_SPAN_CONTEXT"]
