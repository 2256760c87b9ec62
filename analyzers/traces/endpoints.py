"""Endpoints as users feel them, and services as their callers see them.

An entry endpoint is the service, method and route of a trace's entry span (the
root server span, or a browser document-load or fetch root; see ``trace.py``).
Per entry endpoint: requests per minute, error rate (5xx and failed spans),
client error rate (4xx answers: a login wall answering 401 is not an error of
the server, but it is not the page either), p50/p95/p99 end-to-end latency, and
per request the number of services involved, SQL statements and outbound HTTP
calls. Per service: the same figures over all its server spans (entry or called
by another service).

Endpoints are named by ``takealook.routes``: a catch-all route's requests are
split by their path, and past ``paths_per_route`` of them the rest are folded
into one row named by the route's template (``fold_paths``).

When traces are sampled, counts of traces under-state traffic: if the HTTP
server duration metric counted more requests for a route than there are server
spans of it, the endpoint's rate and error rate come from the metric
(``rate_source: "metrics"``), scaled by the endpoint's share of those spans (a
route both users and other services call meters both), and its latencies still
from the spans.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from takealook.analyzers.traces.critical_path import PathPart
from takealook.analyzers.traces.rates import RequestCount
from takealook.analyzers.traces.stats import merge_into, ms, percentiles, ratio, rekey
from takealook.analyzers.traces.trace import Entry, TraceView, is_error
from takealook.routes import route_template


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
    error_rate: float  # 5xx answers and failed entry spans
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
    client_error_rate: float = 0.0  # 4xx answers
    route_template: str = ""  # the route's template: "/{path}" for a page of a catch-all route
    by_path: bool = False  # a page of a catch-all route, named by its path
    other_paths: int = 0  # on a catch-all's "other" row: the paths folded into it (at least)
    # Traces the per-trace figures (per-request counts, critical path, findings) rest on: ``requests`` unless
    # the report was made from a sample of a large store (see ``sampling.py``).
    traces_analysed: int = 0


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
    client_error_rate: float = 0.0  # 4xx answers


class _Tally:
    __slots__ = ("durations", "errors", "client_errors", "services", "sql", "db", "outbound", "db_requests",
                 "marker")

    def __init__(self):
        self.durations: list[int] = []
        self.errors = 0
        self.client_errors = 0
        self.services = 0
        self.sql = 0
        self.db = 0  # any database span, SQL or not
        self.outbound = 0
        self.db_requests = 0  # a service's server spans in traces where it used its database
        self.marker = 0  # the last trace (a number) where it did

    def merge(self, other: "_Tally") -> None:
        self.durations.extend(other.durations)
        self.errors += other.errors
        self.client_errors += other.client_errors
        self.services += other.services
        self.sql += other.sql
        self.db += other.db
        self.outbound += other.outbound
        self.db_requests += other.db_requests


class EndpointAggregator:
    """Counts and latencies per entry endpoint and per service, one trace at a time."""

    def __init__(self):
        self.endpoints: dict[tuple, _Tally] = {}
        self.entries: dict[tuple, object] = {}
        self.services: dict[str, _Tally] = {}
        self.service_spans: dict[str, int] = {}
        self.other_paths: dict[tuple, int] = {}  # the "other" row of a catch-all -> paths folded into it
        self.route_spans: dict[tuple, int] = {}  # (service, method, route as recorded) -> server spans
        self.traces = 0
        self.count_routes = True  # False when there are no metric points: nothing to scale

    def add(self, view: TraceView) -> None:
        services = self.services
        counts = self.service_spans
        for service, n in view.span_counts.items():
            counts[service] = counts.get(service, 0) + n
            if service not in services:
                services[service] = _Tally()
        self.traces += 1
        marker = self.traces
        for span in view.sql:
            tally = services[span.service]
            tally.sql += 1
            tally.db += 1
            tally.marker = marker
        for span in view.connects:
            services[span.service].marker = marker
        routes = self.route_spans
        count_routes = self.count_routes
        root = view.root
        for span in view.servers:
            tally = services[span.service]
            tally.durations.append(span.duration_ns)
            if tally.marker == marker:
                tally.db_requests += 1
            # Server spans called by another service (entries are counted as entries): named when the
            # result is made, one normalization per route rather than per span.
            if span is not root and count_routes and span.http_route:
                key = (span.service, span.http_method, span.http_route)
                routes[key] = routes.get(key, 0) + 1
            status = span.http_status
            if span.status == "error" or (status is not None and status >= 500):
                tally.errors += 1
            elif status is not None and 400 <= status < 500:
                tally.client_errors += 1
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
        tally.durations.append(root.duration_ns)
        if is_error(root):
            tally.errors += 1
        elif root.http_status is not None and 400 <= root.http_status < 500:
            tally.client_errors += 1
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
        merge_into(self.other_paths, other.other_paths)
        merge_into(self.route_spans, other.route_spans)

    def fold_paths(self, keep: int) -> dict[tuple, tuple]:
        """Fold the pages of each catch-all route past its ``keep`` busiest into the route's one row.

        Returns old key -> new key for the other aggregators' ``rekey``; empty when nothing folds.
        """
        pages: dict[tuple, list[tuple]] = {}
        for key, entry in self.entries.items():
            if entry.by_path:
                pages.setdefault((entry.service, entry.method, entry.template), []).append(key)
        fold: dict[tuple, tuple] = {}
        for (service, method, template), keys in pages.items():
            if len(keys) <= keep:
                continue
            keys.sort(key=lambda k: (-len(self.endpoints[k].durations), k[2]))
            for key in keys[keep:]:
                entry = self.entries[key]
                other = other_row(entry)
                fold[key] = other.key
                self.entries.setdefault(other.key, other)
                self.other_paths[other.key] = self.other_paths.get(other.key, 0) + 1
        if fold:
            self.endpoints = rekey(self.endpoints, lambda k: fold.get(k, k), position=None)
            for key in fold:
                self.entries.pop(key, None)
        return fold

    def served(self) -> dict[tuple, int]:
        """Server spans (entry or not) per (service, method, route template)."""
        out: dict[tuple, int] = {key: len(tally.durations) for key, tally in self.endpoints.items()}
        for (service, method, route), n in self.route_spans.items():
            key = (service, method or "", route_template(route).text)
            out[key] = out.get(key, 0) + n
        return out

    def endpoint_stats(self, key, minutes: float, measured: Optional[RequestCount],
                       served: Optional[dict] = None) -> EndpointStats:
        tally = self.endpoints[key]
        entry = self.entries[key]
        n = len(tally.durations)
        p50, p95, p99 = percentiles(tally.durations)
        requests_per_min, error_rate, source, total = n / minutes, ratio(tally.errors, n), "spans", None
        client_error_rate = ratio(tally.client_errors, n)
        served = max(n, (served or {}).get(key, 0))
        # A catch-all's metric counts every page together: it tells no page's (nor the other row's) traffic.
        if measured is not None and measured.requests > served and not route_template(entry.template or "/").catch_all:
            total = round(measured.requests * n / served)
            requests_per_min = total / minutes
            error_rate = ratio(measured.errors, measured.requests)
            client_error_rate = ratio(measured.client_errors, measured.requests)
            source = "metrics"
        return EndpointStats(
            service=entry.service, method=entry.method, route=entry.route, endpoint=entry.label,
            source=entry.source, requests=n, requests_per_min=round(requests_per_min, 3), rate_source=source,
            error_rate=error_rate, p50_ms=ms(p50), p95_ms=ms(p95), p99_ms=ms(p99),
            mean_ms=ms(sum(tally.durations) / n), services_per_request=round(tally.services / n, 2),
            sql_per_request=round(tally.sql / n, 2), outbound_calls_per_request=round(tally.outbound / n, 2),
            requests_measured=total, client_error_rate=client_error_rate, route_template=entry.template or entry.route,
            by_path=entry.by_path, other_paths=self.other_paths.get(key, 0), traces_analysed=n,
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
                client_error_rate=ratio(tally.client_errors, n),
            ))
        rows.sort(key=lambda row: (-row.requests, row.service))
        return rows


@dataclass
class EntryFigures:
    """An endpoint's figures over all its requests, computed by the store's engine (``sampling.py``)."""

    requests: int
    errors: int
    client_errors: int
    duration_ns: int
    quantiles_ns: tuple[float, float, float]  # p50, p95, p99
    first_ns: int
    end_ns: int

    def add(self, other: "EntryFigures") -> None:
        """Another group named alike (routes written two ways, pages folded into a route's row): counts add
        up, percentiles are averaged by requests (an approximation: quantiles do not add)."""
        total = self.requests + other.requests
        self.quantiles_ns = tuple((a * self.requests + b * other.requests) / total
                                  for a, b in zip(self.quantiles_ns, other.quantiles_ns))
        self.requests, self.errors = total, self.errors + other.errors
        self.client_errors += other.client_errors
        self.duration_ns += other.duration_ns
        self.first_ns, self.end_ns = min(self.first_ns, other.first_ns), max(self.end_ns, other.end_ns)

    def apply(self, stats: EndpointStats, minutes: float) -> EndpointStats:
        """``stats`` (from the traces analysed) with the engine's counts, rates and percentiles.

        Rates from metric points (traces sampled before the store) stay: they count what the store never saw.
        """
        n = self.requests
        p50, p95, p99 = self.quantiles_ns
        if stats.rate_source == "metrics":
            return replace(stats, requests=n, p50_ms=ms(p50), p95_ms=ms(p95), p99_ms=ms(p99),
                           mean_ms=ms(self.duration_ns / n))
        return replace(stats, requests=n, requests_per_min=round(n / minutes, 3), rate_source="spans",
                       requests_measured=None, error_rate=ratio(self.errors, n),
                       client_error_rate=ratio(self.client_errors, n), p50_ms=ms(p50), p95_ms=ms(p95),
                       p99_ms=ms(p99), mean_ms=ms(self.duration_ns / n))


def other_row(entry: Entry) -> Entry:
    """The row of a catch-all route that stands for its pages not shown on their own: named by the template."""
    return Entry(entry.service, entry.method, entry.template, entry.source, entry.template, False)
