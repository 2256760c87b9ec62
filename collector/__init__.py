"""takealook's collector: the OTLP receiver and the span store (SQLite, WAL).

Readers (the analyzers, the load-test generator) use the read API only::

    from takealook.collector import open_store
    with open_store(path) as store:
        store.summary(); store.iter_traces(...); store.trace(trace_id)
        store.root_spans(...); store.metric_points(...)

Importing this package stays cheap: the receiver (protobuf, gRPC) is imported
only by ``takealook.collector.server`` and the ``collect`` command.
"""

from takealook.collector.model import KINDS, STATUSES, MetricPoint, Span, SpanEvent, SpanLink, TraceSpans
from takealook.collector.location import StoreURL, is_url, parse_store
from takealook.collector.read import Load, StoreReader, StoreSummary, open_store

__all__ = ["KINDS", "STATUSES", "Load", "MetricPoint", "Span", "SpanEvent", "SpanLink", "StoreReader",
           "StoreSummary", "StoreURL", "TraceSpans", "is_url", "open_store", "parse_store"]
