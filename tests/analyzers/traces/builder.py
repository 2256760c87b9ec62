"""Synthetic traces for exact expectations: times in milliseconds from a fixed start."""

from __future__ import annotations

import itertools
import json
from typing import Optional

from takealook.collector.model import Span
from takealook.sqltext import fingerprint

BASE_NS = 1_700_000_000 * 10**9  # 2023-11-14
_trace_numbers = itertools.count(1)


class TraceBuilder:
    """Spans of one trace; every method returns the Span it added (use it as a parent)."""

    def __init__(self, offset_ms: float = 0.0):
        number = next(_trace_numbers)
        self.trace_id = f"{number:032x}"
        self.t0 = BASE_NS + int(offset_ms * 1e6)
        self.spans: list[Span] = []
        self._ids = itertools.count(1)

    def span(self, service: str, name: str, start_ms: float, duration_ms: float, parent: Optional[Span] = None,
             kind: str = "internal", **fields) -> Span:
        span = Span(
            trace_id=self.trace_id, span_id=f"{int(self.trace_id, 16) % 10**6:06x}{next(self._ids):010x}",
            parent_span_id=fields.pop("parent_span_id", parent.span_id if parent is not None else None),
            service=service, name=name, kind=kind, start_ns=self.t0 + int(start_ms * 1e6),
            duration_ns=int(duration_ms * 1e6), status=fields.pop("status", "unset"), **fields,
        )
        self.spans.append(span)
        return span

    def server(self, service: str, method: str, route: str, start_ms: float, duration_ms: float,
               parent: Optional[Span] = None, status_code: int = 200, **fields) -> Span:
        if status_code >= 500:
            fields.setdefault("status", "error")
        return self.span(service, f"{method} {route}", start_ms, duration_ms, parent, "server", http_method=method,
                         http_route=route, http_status=status_code, **fields)

    def sql(self, service: str, statement: str, start_ms: float, duration_ms: float, parent: Span,
            db_name: str = "app", **fields) -> Span:
        return self.span(service, statement.split()[0], start_ms, duration_ms, parent, "client",
                         db_system="postgresql", db_name=db_name, db_statement=statement,
                         db_fingerprint=fingerprint(statement), **fields)

    def http(self, service: str, method: str, url: str, start_ms: float, duration_ms: float, parent: Span,
             status_code: Optional[int] = 200, **fields) -> Span:
        host = url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
        path = "/" + url.split("://", 1)[1].split("/", 1)[1] if "/" in url.split("://", 1)[1] else "/"
        return self.span(service, method, start_ms, duration_ms, parent, "client", http_method=method, url_full=url,
                         url_path=path, server_address=host, http_status=status_code, **fields)

    def call(self, caller: str, callee: str, method: str, url: str, route: str, start_ms: float,
             duration_ms: float, parent: Span, server_ms: Optional[float] = None, lag_ms: float = 0.5) -> Span:
        """A client span and, under it, the callee's server span; returns the server span."""
        client = self.http(caller, method, url, start_ms, duration_ms, parent)
        server_ms = duration_ms - 2 * lag_ms if server_ms is None else server_ms
        return self.server(callee, method, route, start_ms + lag_ms, server_ms, client)


def exception_events(kind: str, message: str) -> str:
    return json.dumps([{"name": "exception", "time_ns": BASE_NS,
                        "attributes": {"exception.type": kind, "exception.message": message}}])


def write_store(path, traces, points=()) -> None:
    """Store traces (lists of Span) and MetricPoints through the collector's write API."""
    import hashlib

    from takealook.collector.model import KINDS, STATUSES
    from takealook.collector.store import IngestBatch, SpanStore, TraceInfo

    batch = IngestBatch()

    def resource(service: str, resource_json: str = "{}") -> str:
        attributes = json.loads(resource_json or "{}")
        attributes["service.name"] = service
        text = json.dumps(attributes, sort_keys=True)
        digest = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
        batch.resources.setdefault(digest, (service, text))
        return digest

    for spans in traces:
        for s in spans:
            batch.spans.append([
                s.trace_id, s.span_id, s.parent_span_id, s.service, s.name, KINDS.index(s.kind), s.start_ns,
                s.duration_ns, STATUSES.index(s.status), s.status_message, s.http_method, s.http_route,
                s.http_status, s.url_path, s.url_full, s.server_address, s.db_system, s.db_name, s.db_statement,
                s.db_fingerprint, s.attributes_json, resource(s.service, s.resource_json), s.events_json,
                s.links_json, s.scope,
            ])
            info = batch.traces.setdefault(s.trace_id, TraceInfo(s.start_ns, s.end_ns))
            info.start_ns, info.end_ns = min(info.start_ns, s.start_ns), max(info.end_ns, s.end_ns)
            info.services.add(s.service)
            if s.kind == "server" and s.http_route:
                info.endpoints.add((s.service, s.http_route))
    for p in points:
        batch.metrics.append([
            p.service, p.name, p.unit, ("unspecified", "delta", "cumulative").index(p.temporality), p.start_ns,
            p.time_ns, p.http_method, p.http_route, p.http_status, p.count, p.sum, json.dumps(list(p.bounds)),
            json.dumps(list(p.bucket_counts)), p.attributes_json, resource(p.service),
        ])
    store = SpanStore(path, synchronous="OFF")
    try:
        store.write([batch])
    finally:
        store.close()
