"""What the instrumentations share: context propagation and suppression (URLs: ``redact``)."""

from __future__ import annotations

from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry import baggage as otel_baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagate import get_global_textmap

from takealook.agent.tracer import LeanSpan

try:
    SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY  # noqa: SLF001 - the key instrumentations agree on
except AttributeError:  # pragma: no cover - very old API
    SUPPRESS_KEY = "suppress_instrumentation"

# Set while a client span is open, so a library under another (requests on
# urllib3, a retry inside urlopen) does not add a second span for one call.
_BAGGAGE = W3CBaggagePropagator()

IN_CLIENT_CALL: ContextVar = ContextVar("takealook_in_client_call", default=False)


try:  # the keys OpenTelemetry's API keeps the current span and baggage under
    from opentelemetry.baggage import _BAGGAGE_KEY
    from opentelemetry.trace.propagation import _SPAN_KEY
except ImportError:  # pragma: no cover - an API that moved them: the public functions are as good
    _SPAN_KEY = _BAGGAGE_KEY = None


def _context_var():
    """The ContextVar behind OpenTelemetry's current context, when it is the default runtime context
    (reading and setting it directly spares two or three calls each time), else None."""
    try:
        from opentelemetry.context import _RUNTIME_CONTEXT
        from opentelemetry.context.context import Context
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

        variable = _RUNTIME_CONTEXT._current_context  # noqa: SLF001
        if type(_RUNTIME_CONTEXT) is ContextVarsRuntimeContext and isinstance(variable, ContextVar) \
                and isinstance(variable.get(), Context):
            return variable, Context
    except Exception:  # pragma: no cover - another API version or runtime context
        pass
    return None, None


_CONTEXT_VAR, _Context = _context_var() if _SPAN_KEY is not None else (None, None)
_get_current = _CONTEXT_VAR.get if _CONTEXT_VAR is not None else otel_context.get_current


def suppressed() -> bool:
    return bool(_get_current().get(SUPPRESS_KEY))


def current_span():
    """``trace.get_current_span()`` in one dict lookup instead of three calls (it runs for every span)."""
    if _SPAN_KEY is None:
        return trace.get_current_span()
    span = _get_current().get(_SPAN_KEY)
    return span if span is not None else trace.INVALID_SPAN


def _has_baggage() -> bool:
    if _BAGGAGE_KEY is None:
        return bool(otel_baggage.get_all())
    return bool(_get_current().get(_BAGGAGE_KEY))


def inject(carrier: dict, span) -> None:
    """Writes traceparent/tracestate/baggage for ``span`` into a dict of headers.

    With the default propagators (W3C trace context and baggage) the headers are written
    directly, a few times faster than the propagator chain; any other OTEL_PROPAGATORS
    setting goes through OpenTelemetry's propagators.
    """
    if isinstance(span, LeanSpan):
        inject_ids(carrier, span.trace_id, span.span_id, span.trace_state)
    else:
        get_global_textmap().inject(carrier, context=trace.set_span_in_context(span))


def inject_ids(carrier: dict, trace_id: int, span_id: int, trace_state) -> None:
    """``inject`` for a sampled span known by its ids (a call recorded without a span object)."""
    propagator = get_global_textmap()
    if _is_default(propagator):
        carrier["traceparent"] = f"00-{trace_id:032x}-{span_id:016x}-01"
        if trace_state:
            carrier["tracestate"] = trace_state.to_header()
        if _has_baggage():
            _BAGGAGE.inject(carrier)
        return
    context = trace.SpanContext(trace_id, span_id, False, trace.TraceFlags(trace.TraceFlags.SAMPLED), trace_state)
    propagator.inject(carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(context)))


_default_checked: dict = {}


def _is_default(propagator) -> bool:
    known = _default_checked.get(id(propagator))
    if known is None:
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parts = getattr(propagator, "_propagators", None)
        known = parts is not None and len(parts) == 2 and {type(p) for p in parts} == {
            TraceContextTextMapPropagator, W3CBaggagePropagator}
        _default_checked.clear()
        _default_checked[id(propagator)] = known
    return known


class EnvironGetter:
    """Reads propagation headers from a WSGI environ (``traceparent`` is ``HTTP_TRACEPARENT``)."""

    def get(self, carrier, key):
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if value is not None else None

    def keys(self, carrier):
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


_ENVIRON_GETTER = EnvironGetter()


def extract_from_environ(environ: dict):
    """The remote parent context of a request, or None when it carries no propagation header."""
    propagator = get_global_textmap()
    keys = _environ_keys.get(id(propagator))
    if keys is None:  # the composite propagator builds its set of fields anew at each call: once here
        fields = getattr(propagator, "fields", None) or ()
        keys = tuple("HTTP_" + f.upper().replace("-", "_") for f in fields)
        _environ_keys.clear()
        _environ_keys[id(propagator)] = keys
    for key in keys:
        if key in environ:
            return propagator.extract(environ, getter=_ENVIRON_GETTER)
    return None if keys else propagator.extract(environ, getter=_ENVIRON_GETTER)


_environ_keys: dict = {}


def attach(span, parent_context=None):
    if _CONTEXT_VAR is not None:  # what set_span_in_context and attach do, without their calls
        values = dict(parent_context if parent_context is not None else _CONTEXT_VAR.get())
        values[_SPAN_KEY] = span
        return _CONTEXT_VAR.set(_Context(values))
    return otel_context.attach(trace.set_span_in_context(span, parent_context))


def detach(token) -> None:
    try:
        if _CONTEXT_VAR is not None:
            _CONTEXT_VAR.reset(token)
        else:
            otel_context.detach(token)
    except Exception:  # detaching from another context: nothing of the app's is at stake
        pass
