"""When the app set up OpenTelemetry's SDK itself, its spans are shipped by takealook too.

``BridgeProcessor`` is an SDK ``SpanProcessor``: each ended ``ReadableSpan``
becomes the same record a LeanSpan does, in the same pipeline, under the same
policy: a contrib instrumentation's attributes are scrubbed as ours are
(``contrib_policy``), and every span's status description and exception
events lose their values as a LeanSpan's do (``errorscrub``; the SDK keeps the
exception's text, not the exception, so the generic rules apply). A span that
cannot be scrubbed is not sent.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import SpanProcessor

from takealook.agent import errorscrub
from takealook.agent.contrib_policy import SCOPE_PREFIX, scrub_span
from takealook.agent.tracer import KIND_NUMBERS, MAX_ATTRIBUTE_LENGTH


class BridgeProcessor(SpanProcessor):
    def __init__(self, pipeline):
        self._pipeline = pipeline

    def on_end(self, span) -> None:
        try:
            context, parent = span.context, span.parent
            if not context.trace_flags.sampled:
                return
            scope = span.instrumentation_scope
            scope_name = scope.name if scope else ""
            attributes = dict(span.attributes or {})
            events = [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events] or None
            links = [(l.context.trace_id, l.context.span_id, dict(l.attributes or {})) for l in span.links] or None
            if scope_name.startswith(SCOPE_PREFIX):
                scrub_span(attributes, events)
            for name, _time, event_attributes in events or ():
                if name == "exception":
                    _scrub_exception(event_attributes)
            description = span.status.description or ""
            if description:
                description = errorscrub.scrub_text(description)[:512]
            record = (context.trace_id, context.span_id, parent.span_id if parent else 0,
                      bool(parent and parent.is_remote), span.name, KIND_NUMBERS.get(span.kind, 1),
                      span.start_time, span.end_time, span.status.status_code.value, description,
                      attributes, events, links,
                      context.trace_state.to_header() if context.trace_state else "",
                      scope_name, (scope.version or "") if scope else "")
            self._pipeline.add(record)
        except Exception:  # a span we cannot read or scrub is not sent
            pass


def _scrub_exception(attributes: dict) -> None:
    message = attributes.get("exception.message")
    if isinstance(message, str):
        attributes["exception.message"] = errorscrub.scrub_text(message)[:MAX_ATTRIBUTE_LENGTH]
    trace = attributes.get("exception.stacktrace")
    if isinstance(trace, str):
        attributes["exception.stacktrace"] = errorscrub.scrub_stacktrace_text(trace)[-MAX_ATTRIBUTE_LENGTH:]
