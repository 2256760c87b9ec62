"""N+1 queries and repeated outbound HTTP calls.

Within one parent span, a run of at least ``n_plus_one_min_count`` SQL spans
with the same statement fingerprint that take at least ``n_plus_one_min_ms``
together is an N+1 (the ORM loading a relation one row at a time). The same
run of outbound HTTP calls to one route of one host (``/items/1``,
``/items/2``...) is an N+1 over HTTP, and ``repeated_http_min_count`` calls
with the very same method and URL are repeated identical calls (any repeat is
avoidable, so no time threshold applies to those).

Spans that overlap in time ran in parallel: a deliberate fan-out (a thread
pool, ``asyncio.gather``) costs the user one call's time, not the sum, so a
group where most consecutive spans overlap is not flagged.

Findings are reported once per entry endpoint, operation and statement (or
call): how often a request hits it, its typical count and time, its share of
the endpoint's latency, and ``impact_ms_per_min``: the avoidable time (the run
minus one statement or call, what a join, an ``IN`` list or a batch endpoint
would leave) per minute of the endpoint's traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median_low
from typing import Optional

from takealook.analyzers.traces.settings import Settings
from takealook.analyzers.traces.stats import TopSlowest, merge_into, ms, ratio
from takealook.analyzers.traces.trace import TraceView, host_of, route_of, template_path
from takealook.collector import Span


@dataclass(frozen=True)
class Repeat:
    """One run of repeated spans in one trace."""

    kind: str  # "n_plus_one" | "repeated_http"
    service: str
    operation: str
    key: str  # statement fingerprint, or "METHOD URL" / "METHOD host route"
    text: str  # the statement, or the call
    count: int
    total_ns: int
    identical: bool


@dataclass(frozen=True)
class NPlusOne:
    kind: str
    service: str  # where the statements run
    endpoint: str  # the entry endpoint whose users wait
    endpoint_service: str
    operation: str  # the server span (in `service`) the run happens under
    statement: str
    fingerprint: str
    count: int  # statements per occurrence (median)
    count_max: int
    total_ms: float  # time of the run per occurrence (mean)
    occurrences: int  # traces with the run
    affected_share: float  # of the endpoint's traces
    share_of_latency: float  # the run's time / those traces' latency
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]


@dataclass(frozen=True)
class RepeatedHttp:
    kind: str
    service: str  # the caller
    endpoint: str
    endpoint_service: str
    operation: str
    call: str  # "GET https://host/path" (identical) or "GET host /route/{id}"
    identical: bool  # the very same URL each time (else one route with different values)
    count: int
    count_max: int
    total_ms: float
    occurrences: int
    affected_share: float
    share_of_latency: float
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]


def find_repeats(view: TraceView, settings: Settings) -> list[Repeat]:
    """The N+1 runs and repeated calls of one trace, one per parent and statement/call."""
    groups: dict[tuple, list[Span]] = {}
    if len(view.sql) >= settings.n_plus_one_min_count:
        for span in view.sql:
            key = span.db_fingerprint or (span.db_statement or span.name).strip()
            group = groups.get((span.parent_span_id, "n_plus_one", key, False))
            if group is None:
                groups[(span.parent_span_id, "n_plus_one", key, False)] = [span]
            else:
                group.append(span)
    if len(view.calls) >= min(settings.n_plus_one_min_count, settings.repeated_http_min_count):
        for call in view.calls:
            method = call.http_method or ""
            # A URL with a value the agent recorded as REDACTED cannot prove two calls identical.
            if call.url_full and "REDACTED" not in call.url_full:
                groups.setdefault((call.parent_span_id, "repeated_http", f"{method} {call.url_full}", True),
                                  []).append(call)
            route = _callee_route(view, call)
            groups.setdefault((call.parent_span_id, "repeated_http", f"{method} {host_of(call) or '?'} {route}",
                               False), []).append(call)
    found: list[Repeat] = []
    minimum = min(settings.n_plus_one_min_count, settings.repeated_http_min_count)
    for (parent_id, kind, key, identical), spans in groups.items():
        if len(spans) >= minimum:
            repeat = _judge(view, parent_id, kind, key, identical, spans, settings)
            if repeat is not None:
                found.append(repeat)
    return _drop_shadowed(found)


def _judge(view, parent_id, kind, key, identical, spans, settings) -> Optional[Repeat]:
    count = len(spans)
    total = sum(s.duration_ns for s in spans)
    if kind == "repeated_http" and identical:
        if count < settings.repeated_http_min_count:
            return None
    elif count < settings.n_plus_one_min_count or total < settings.n_plus_one_min_ms * 1e6:
        return None
    if _mostly_parallel(spans):
        return None
    first = spans[0]
    parent = view.by_id.get(parent_id)
    text = (first.db_statement or first.name) if kind == "n_plus_one" else key
    return Repeat(kind, first.service, _operation(view, parent), key, text, count, total, identical)


def _mostly_parallel(spans: list[Span]) -> bool:
    """True when most consecutive spans (by start) begin before the ones before them have ended."""
    ordered = sorted(spans, key=lambda s: s.start_ns)
    overlaps = 0
    latest_end = ordered[0].start_ns + ordered[0].duration_ns
    for span in ordered[1:]:
        if span.start_ns < latest_end:
            overlaps += 1
        latest_end = max(latest_end, span.start_ns + span.duration_ns)
    return overlaps * 2 > len(ordered) - 1


def _drop_shadowed(found: list[Repeat]) -> list[Repeat]:
    """Identical calls are also one route's N+1 over HTTP; report them once, as identical."""
    identical = {(r.service, r.operation, r.count, r.total_ns) for r in found if r.identical}
    return [r for r in found if r.identical or r.kind != "repeated_http"
            or (r.service, r.operation, r.count, r.total_ns) not in identical]


def _callee_route(view: TraceView, call: Span) -> str:
    server = view.server_child(call)
    if server is not None and server.http_route:
        return server.http_route
    return template_path(call.url_path or _url_path(call.url_full))


def _url_path(url: Optional[str]) -> str:
    if not url or "://" not in url:
        return url or "/"
    rest = url.split("://", 1)[1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else "/"


def _operation(view: TraceView, span: Optional[Span]) -> str:
    """The nearest server span at or above ``span``, as "METHOD route" (or the span's name)."""
    start = span
    for _ in range(64):  # bounded: a parent chain longer than this is not a real trace
        if span is None:
            break
        if span.kind == "server":
            route = route_of(span)
            return f"{span.http_method} {route}" if span.http_method else route
        span = view.by_id.get(span.parent_span_id) if span.parent_span_id else None
    return start.name if start is not None else "?"


class RepeatAggregator:
    """Repeats added up per (entry endpoint, kind, service, operation, statement or call)."""

    def __init__(self, evidence: int):
        self.evidence = evidence
        self.groups: dict[tuple, dict] = {}

    def add(self, view: TraceView, repeats: list[Repeat]) -> None:
        entry = view.entry
        if entry is None or not repeats:
            return
        seen = set()
        for repeat in repeats:
            key = (entry.key, repeat.kind, repeat.service, repeat.operation, repeat.key, repeat.identical)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = {"counts": [], "total": 0, "latency": 0, "traces": 0,
                                            "text": repeat.text, "top": TopSlowest(self.evidence)}
            group["counts"].append(repeat.count)
            group["total"] += repeat.total_ns
            if key not in seen:  # one parent or several, a trace counts once
                seen.add(key)
                group["traces"] += 1
                group["latency"] += view.root.duration_ns
            group["top"].add(repeat.total_ns, view.trace_id)

    def merge(self, other: "RepeatAggregator") -> None:
        merge_into(self.groups, other.groups)

    def findings(self, endpoints: dict) -> list:
        """``endpoints`` maps an entry key to its ``EndpointStats``."""
        out = []
        for (entry_key, kind, service, operation, key, identical), group in self.groups.items():
            stats = endpoints.get(entry_key)
            if stats is None:
                continue
            counts = group["counts"]
            occurrences = group["traces"]
            per_occurrence = group["total"] / occurrences
            count = median_low(counts)
            avoidable = group["total"] - group["total"] / max(1, sum(counts)) * len(counts)
            impact = avoidable / 1e6 / stats.requests * stats.requests_per_min
            common = dict(
                service=service, endpoint=stats.endpoint, endpoint_service=stats.service, operation=operation,
                count=count, count_max=max(counts), total_ms=ms(per_occurrence), occurrences=occurrences,
                affected_share=ratio(occurrences, stats.requests),
                share_of_latency=ratio(group["total"], group["latency"]),
                impact_ms_per_min=round(impact, 3), trace_ids=group["top"].ids(),
            )
            if kind == "n_plus_one":
                fingerprint = "" if key == group["text"].strip() else key  # no fingerprint: grouped by text
                out.append(NPlusOne(kind=kind, statement=group["text"], fingerprint=fingerprint, **common))
            else:
                out.append(RepeatedHttp(kind=kind, call=group["text"], identical=identical, **common))
        return out
