"""Trace ids on log records: a line logged inside a request says which trace it belongs to.

Every ``LogRecord`` gets ``otelTraceID``, ``otelSpanID``, ``otelTraceSampled``
and ``otelServiceName`` (the names OpenTelemetry's logging instrumentation
uses, so format strings written for it keep working, e.g.
``%(otelTraceID)s``); outside a span the ids are ``0``. The app's own
formatters and handlers are left alone.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from takealook.agent.tracer import LeanSpan


def install(agent) -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_takealook", False):
        return
    service = agent.settings.service_name

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            span = trace.get_current_span()
            if isinstance(span, LeanSpan):
                record.otelTraceID, record.otelSpanID, record.otelTraceSampled = \
                    f"{span.trace_id:032x}", f"{span.span_id:016x}", True
            else:
                context = span.get_span_context()
                if context.is_valid:
                    record.otelTraceID, record.otelSpanID = f"{context.trace_id:032x}", f"{context.span_id:016x}"
                    record.otelTraceSampled = context.trace_flags.sampled
                else:
                    record.otelTraceID, record.otelSpanID, record.otelTraceSampled = "0", "0", False
            record.otelServiceName = service
        except Exception:
            pass
        return record

    factory._takealook = True
    logging.setLogRecordFactory(factory)
