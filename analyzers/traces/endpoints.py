"""Endpoints as users feel them, and services as their callers see them.

An entry endpoint is the service, method and route of a trace's entry span (the
root server span, or a browser document-load or fetch root; see ``trace.py``).
Per entry endpoint: requests per minute, error rate, p50/p95/p99 end-to-end
latency, and per request the number of services involved, SQL statements and
outbound HTTP calls. Per service: the same figures over all its server spans
(entry or called by another service).

When traces are sampled, counts of traces under-state traffic: if the HTTP
server duration metric counted more requests for an endpoint than there are
traces, its rate and error rate come from the metric (``rate_source:
"metrics"``) and its latencies still from the spans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from takealook.analyzers.traces.critical_path import PathPart
from takealook.analyzers.traces.rates import RequestCount
from takealook.analyzers.traces.stats import merge_into, ms, percentiles, ratio
from takealook.analyzers.traces.trace import TraceView, is_error


@dataclass(frozen=True)
class EndpointStats:
    service: str
    method: str
    route: str
    endpoint: str  # "METHOD route", how findings name it
    source: str  # "server" | "browser"
    requests: int  # traces seen
    requests_per_min: float
    rate_source: str  # "spans" | "metrics"
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    services_per_request: float
    sql_per_request: float
    outbound_calls_per_request: float
    critical_path: dict[str, float] = field(default_factory=dict)
    critical_path_parts: tuple[PathPart, ...] = ()
    slowest_trace_ids: tuple[str, ...] = ()
    requests_measured: Optional[int] = None  # from metric points, when they counted more than the traces


@dataclass(frozen=True)
class ServiceStats:
    service: str
    requests: int  # server spans
    requests_per_min: float
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    spans: int
    sql_spans: int
    sql_per_request: float
    outbound_calls_per_request: float


class _Tally:
    __slots__ = ("durations", "errors", "services", "sql", "db", "outbound")

    def __init__(self):
        self.durations: list[int] = []
        self.errors = 0
        self.services = 0
        self.sql = 0
        self.db = 0  # any database span, SQL or not
        self.outbound = 0

    def merge(self, other: "_Tally") -> None:
        self.durations.extend(other.durations)
        self.errors += other.errors
        self.services += other.services
        self.sql += other.sql
        self.db += other.db
        self.outbound += other.outbound


class EndpointAggregator:
    """Counts and latencies per entry endpoint and per service, one trace at a time."""

    def __init__(self):
        self.endpoints: dict[tuple, _Tally] = {}
        self.entries: dict[tuple, object] = {}
        self.services: dict[str, _Tally] = {}
        self.service_spans: dict[str, int] = {}

    def add(self, view: TraceView) -> None:
        services = self.services
        counts = self.service_spans
        for service, n in view.span_counts.items():
            counts[service] = counts.get(service, 0) + n
            if service not in services:
                services[service] = _Tally()
        for span in view.servers:
            tally = services[span.service]
            tally.durations.append(span.duration_ns)
            if span.status == "error" or (span.http_status is not None and span.http_status >= 500):
                tally.errors += 1
        for span in view.sql:
            tally = services[span.service]
            tally.sql += 1
            tally.db += 1
        for span in view.other_db:
            services[span.service].db += 1
        for span in view.calls:
            services[span.service].outbound += 1
        entry = view.entry
        if entry is None:
            return
        tally = self.endpoints.get(entry.key)
        if tally is None:
            tally = self.endpoints[entry.key] = _Tally()
            self.entries[entry.key] = entry
        tally.durations.append(view.root.duration_ns)
        tally.errors += is_error(view.root)
        tally.services += len(view.span_counts)
        tally.sql += len(view.sql)
        tally.outbound += len(view.calls)

    def merge(self, other: "EndpointAggregator") -> None:
        """Add the tallies of an aggregator that saw other traces (another process's)."""
        for mine, theirs in ((self.endpoints, other.endpoints), (self.services, other.services)):
            for key, tally in theirs.items():
                if key in mine:
                    mine[key].merge(tally)
                else:
                    mine[key] = tally
        for key, entry in other.entries.items():
            self.entries.setdefault(key, entry)
        merge_into(self.service_spans, other.service_spans)

    def endpoint_stats(self, key, minutes: float, measured: Optional[RequestCount]) -> EndpointStats:
        tally = self.endpoints[key]
        entry = self.entries[key]
        n = len(tally.durations)
        p50, p95, p99 = percentiles(tally.durations)
        requests_per_min, error_rate, source, total = n / minutes, ratio(tally.errors, n), "spans", None
        if measured is not None and measured.requests > n:
            requests_per_min = measured.requests / minutes
            error_rate = ratio(measured.errors, measured.requests)
            source, total = "metrics", measured.requests
        return EndpointStats(
            service=entry.service, method=entry.method, route=entry.route, endpoint=entry.label,
            source=entry.source, requests=n, requests_per_min=round(requests_per_min, 3), rate_source=source,
            error_rate=error_rate, p50_ms=ms(p50), p95_ms=ms(p95), p99_ms=ms(p99),
            mean_ms=ms(sum(tally.durations) / n), services_per_request=round(tally.services / n, 2),
            sql_per_request=round(tally.sql / n, 2), outbound_calls_per_request=round(tally.outbound / n, 2),
            requests_measured=total,
        )

    def service_stats(self, minutes: float) -> list[ServiceStats]:
        rows = []
        for service, tally in self.services.items():
            n = len(tally.durations)
            p50, p95, p99 = percentiles(tally.durations)
            rows.append(ServiceStats(
                service=service, requests=n, requests_per_min=round(n / minutes, 3),
                error_rate=ratio(tally.errors, n), p50_ms=ms(p50), p95_ms=ms(p95), p99_ms=ms(p99),
                spans=self.service_spans.get(service, 0), sql_spans=tally.sql,
                sql_per_request=round(tally.sql / n, 2) if n else 0.0,
                outbound_calls_per_request=round(tally.outbound / n, 2) if n else 0.0,
            ))
        rows.sort(key=lambda row: (-row.requests, row.service))
        return rows
