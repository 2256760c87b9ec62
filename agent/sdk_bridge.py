"""When the app set up OpenTelemetry's SDK itself, its spans are shipped by takealook too.

``BridgeProcessor`` is an SDK ``SpanProcessor``: each ended ``ReadableSpan``
becomes the same record a LeanSpan does, in the same pipeline.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import SpanProcessor

from takealook.agent.tracer import KIND_NUMBERS


class BridgeProcessor(SpanProcessor):
    def __init__(self, pipeline):
        self._pipeline = pipeline

    def on_end(self, span) -> None:
        try:
            context, parent = span.context, span.parent
            if not context.trace_flags.sampled:
                return
            scope = span.instrumentation_scope
            events = [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events] or None
            links = [(l.context.trace_id, l.context.span_id, dict(l.attributes or {})) for l in span.links] or None
            record = (context.trace_id, context.span_id, parent.span_id if parent else 0,
                      bool(parent and parent.is_remote), span.name, KIND_NUMBERS.get(span.kind, 1),
                      span.start_time, span.end_time, span.status.status_code.value, span.status.description or "",
                      dict(span.attributes or {}), events, links,
                      context.trace_state.to_header() if context.trace_state else "",
                      scope.name if scope else "", (scope.version or "") if scope else "")
            self._pipeline.add(record)
        except Exception:
            pass
