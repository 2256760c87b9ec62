"""A new database connection in most requests: ``connection_per_request``.

Django's default ``CONN_MAX_AGE = 0`` closes the connection at the end of every
request, so the next one connects again: a TCP handshake, TLS when enabled,
authentication and the backend's start-up, often a few milliseconds of a
request that runs its queries in less. The agent records each connect as a
client span (``connect <database>``, see ``takealook.agent.instrument.dbapi``).

Per service, over its requests that used the database (its server spans in
traces where it ran a statement or connected; counted by ``endpoints``): how
many opened a connection, and that time per request. Reported when at least ``MOST`` of those requests
connected (a pool connects once per worker, so a handful of requests at start-up
do not count), with ``impact_ms_per_min``: the connect time on entry requests
per minute of their traffic (a pool gives all of it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median_low

from takealook.analyzers.traces.n_plus_one import severity
from takealook.analyzers.traces.stats import TopSlowest, merge_into, ms, percentile, ratio, rekey
from takealook.analyzers.traces.trace import TraceView
from takealook.collector import Span

MOST = 0.5  # share of a service's database requests that connected
MIN_REQUESTS = 5  # connecting requests needed before a service is judged at all


@dataclass(frozen=True)
class ConnectionPerRequest:
    kind: str  # "connection_per_request"
    service: str
    endpoint: str  # the entry endpoint with most connecting requests
    endpoint_service: str
    endpoints: tuple[str, ...]  # every entry endpoint whose requests connected, most first
    databases: tuple[str, ...]
    requests: int  # the service's requests that used the database
    requests_connecting: int
    share_of_requests: float  # requests_connecting / requests
    connects_per_request: float  # mean over the connecting requests
    connect_ms: float  # time connecting per connecting request (median)
    connect_ms_p95: float
    share_of_latency: float  # connect time / the connecting requests' time
    severity: str
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]


class ConnectionAggregator:
    """Per service: requests that used the database, and those of them that connected."""

    def __init__(self, evidence: int):
        self.evidence = evidence
        self.groups: dict[str, dict] = {}
        self.entry_ns: dict[tuple, int] = {}  # (service, entry key) -> connect ns on entry requests

    def add(self, view: TraceView) -> None:
        if view.connects:  # most traces: nothing to do
            self._connects(view)

    def _connects(self, view: TraceView) -> None:
        per_request: dict[str, list] = {}  # server span id -> [server span, ns, connects]
        for span in view.connects:
            server = _server_of(view, span)
            if server is None:
                continue
            row = per_request.setdefault(server.span_id, [server, 0, 0])
            row[1] += span.duration_ns
            row[2] += 1
            group = self._group(span.service)
            if span.db_name:
                group["databases"].add(span.db_name)
        entry = view.entry
        for server, ns, connects in per_request.values():
            group = self._group(server.service)
            group["ns"].append(ns)
            group["connects"] += connects
            group["latency"] += server.duration_ns
            group["top"].add(ns, view.trace_id)
            if entry is not None:
                key = (server.service, entry.key)
                self.entry_ns[key] = self.entry_ns.get(key, 0) + ns
                group["endpoints"][entry.key] = group["endpoints"].get(entry.key, 0) + 1

    def _group(self, service: str) -> dict:
        group = self.groups.get(service)
        if group is None:
            group = self.groups[service] = {"ns": [], "connects": 0, "latency": 0, "databases": set(),
                                            "endpoints": {}, "top": TopSlowest(self.evidence)}
        return group

    def merge(self, other: "ConnectionAggregator") -> None:
        merge_into(self.groups, other.groups)
        merge_into(self.entry_ns, other.entry_ns)

    def rekey(self, fold) -> None:
        self.entry_ns = rekey(self.entry_ns, fold, position=1)
        for group in self.groups.values():
            group["endpoints"] = rekey(group["endpoints"], fold, position=None)

    def findings(self, endpoints: dict, db_requests: dict[str, int]) -> list[ConnectionPerRequest]:
        """``db_requests``: per service, its requests that used the database (``EndpointAggregator``)."""
        out = []
        for service, group in sorted(self.groups.items()):
            connecting = len(group["ns"])
            requests = max(db_requests.get(service, 0), connecting)
            if connecting < MIN_REQUESTS or connecting < MOST * requests:
                continue
            impact = 0.0
            for (owner, entry_key), ns in self.entry_ns.items():
                stats = endpoints.get(entry_key)
                if owner == service and stats is not None:
                    impact += ns / 1e6 / stats.requests * stats.requests_per_min
            ranked = [endpoints[k] for k, _ in sorted(group["endpoints"].items(), key=lambda kv: -kv[1])
                      if k in endpoints]
            ordered = sorted(group["ns"])
            share = ratio(sum(ordered), group["latency"])
            out.append(ConnectionPerRequest(
                kind="connection_per_request", service=service,
                endpoint=ranked[0].endpoint if ranked else "", endpoint_service=ranked[0].service if ranked else "",
                endpoints=tuple(e.endpoint for e in ranked), databases=tuple(sorted(group["databases"])),
                requests=requests, requests_connecting=connecting, share_of_requests=ratio(connecting, requests),
                connects_per_request=round(group["connects"] / connecting, 2), connect_ms=ms(median_low(ordered)),
                connect_ms_p95=ms(percentile(ordered, 0.95)), share_of_latency=share,
                severity=severity(impact),
                impact_ms_per_min=round(impact, 3), trace_ids=group["top"].ids(),
            ))
        return out


def _server_of(view: TraceView, span: Span):
    """The nearest server span of the same service at or above ``span``, or None."""
    service = span.service
    for _ in range(64):  # bounded: a parent chain longer than this is not a real trace
        parent = view.by_id.get(span.parent_span_id) if span.parent_span_id else None
        if parent is None:
            return None
        if parent.kind == "server" and parent.service == service:
            return parent
        span = parent
    return None
