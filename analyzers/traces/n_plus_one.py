"""N+1 queries and repeated outbound HTTP calls, judged per pattern across an endpoint's requests.

In one request, a *run* is at least ``n_plus_one_min_count`` SQL spans with the
same statement fingerprint under one parent span (the ORM loading a relation one
row at a time). Several fingerprints repeated together under one parent, the
same number of times and interleaved (a loop that runs 3 COUNTs per user, 50
users), are one run naming the loop's statements. The same run of outbound HTTP
calls to one route of one host (``/items/1``, ``/items/2``...) is an N+1 over
HTTP; ``repeated_http_min_count`` calls with the very same method and URL are
repeated identical calls (any repeat is avoidable, so no time threshold applies).

Spans that overlap in time ran in parallel: a deliberate fan-out (a thread
pool, ``asyncio.gather``) costs the user one call's time, not the sum, so a
group where most consecutive spans overlap is not a run.

Whether to report is decided on the pattern, over every request of the entry
endpoint that had the run (its ``occurrences``), not request by request: the
per-request count and time are medians (and p95) over those requests, and the
pattern is reported when its median time reaches ``n_plus_one_min_ms``, or its
median run is at least ``n_plus_one_long_run`` statements in at least half of
the endpoint's requests (a lazy load of 15 rows at 25 ms a request), or the
time it costs summed over the traffic reaches ``n_plus_one_min_impact_ms_per_min``
(over at least ``TRAFFIC_MIN_REQUESTS`` requests).
``impact_ms_per_min`` is the avoidable time (the run minus one pass of the
loop, what a join, an ``IN`` list or a batch endpoint would leave) per minute
of the endpoint's traffic; ``severity`` follows it as the combined report's
does (``high`` from a second of users' time per minute, ``medium`` from 100 ms).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median_low
from typing import NamedTuple, Optional

from takealook.analyzers.traces.settings import Settings
from takealook.analyzers.traces.stats import TopSlowest, merge_into, ms, percentile, ratio, rekey
from takealook.analyzers.traces.trace import TraceView, host_of, route_of
from takealook.collector import Span


# A cost summed over traffic needs traffic: a rate from a handful of requests is noise.
TRAFFIC_MIN_REQUESTS = 10


class Repeat(NamedTuple):
    """One run of repeated spans under one parent in one trace (a tuple: one or more per trace, made fast)."""

    kind: str  # "n_plus_one" | "repeated_http"
    service: str
    operation: str
    keys: tuple[str, ...]  # statement fingerprints in loop order (one for a plain N+1), or ("METHOD URL",)
    texts: tuple[str, ...]  # the statements, or the call
    count: int  # spans in the run
    iterations: int  # passes of the loop (count / statements in the loop)
    total_ns: int
    identical: bool


@dataclass(frozen=True)
class NPlusOne:
    kind: str
    service: str  # where the statements run
    endpoint: str  # the entry endpoint whose users wait
    endpoint_service: str
    operation: str  # the server span (in `service`) the run happens under
    statement: str  # the loop's first statement
    fingerprint: str
    count: int  # statements per request that had the run (median)
    count_max: int
    total_ms: float  # time of the run per request that had it (median)
    occurrences: int  # requests with the run
    affected_share: float  # of the endpoint's requests
    share_of_latency: float  # the run's time / those requests' latency
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]
    count_p95: int = 0
    total_ms_p95: float = 0.0
    iterations: int = 0  # passes of the loop per request (median); == count for one statement
    statements: tuple[str, ...] = ()  # every statement of the loop, in the order one pass runs them
    severity: str = "low"  # "high" | "medium" | "low"


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
    count_p95: int = 0
    total_ms_p95: float = 0.0
    severity: str = "low"


def find_repeats(view: TraceView, settings: Settings) -> list[Repeat]:
    """The runs of one trace: N+1 statements (loops of several fused), repeated calls."""
    found: list[Repeat] = []
    minimum = settings.n_plus_one_min_count
    if len(view.sql) >= minimum:
        groups: dict[tuple[str, str], list[Span]] = {}
        for span in view.sql:
            key = (span.parent_span_id, span.db_fingerprint or (span.db_statement or span.name).strip())
            group = groups.get(key)
            if group is None:
                groups[key] = [span]
            else:
                group.append(span)
        by_parent: dict[str, list] = {}  # the runs, per parent
        for (parent_id, key), spans in groups.items():
            if len(spans) >= minimum and not _mostly_parallel(spans):
                by_parent.setdefault(parent_id, []).append((key, spans))
        for parent_id, runs in by_parent.items():
            loops = _loops(runs) if len(runs) > 1 else (runs,)
            found += [_statement_run(view, parent_id, loop) for loop in loops]
    calls = view.calls
    if len(calls) >= minimum or (len(calls) >= settings.repeated_http_min_count
                                 and len({call.url_full for call in calls}) < len(calls)):
        found += _call_runs(view, settings)  # enough calls for a run, or some URL called twice
    return found


def _statement_run(view: TraceView, parent_id: str, loop) -> Repeat:
    operation = _operation(view, view.by_id.get(parent_id))
    if len(loop) == 1:  # one statement (most runs)
        key, spans = loop[0]
        first = spans[0]
        total = 0
        for span in spans:
            total += span.duration_ns
        return Repeat("n_plus_one", first.service, operation, (key,), (first.db_statement or first.name,),
                      len(spans), len(spans), total, False)
    first = loop[0][1][0]
    total = sum(span.duration_ns for _, group in loop for span in group)
    return Repeat("n_plus_one", first.service, operation, tuple(key for key, _ in loop),
                  tuple(group[0].db_statement or group[0].name for _, group in loop),
                  len(loop[0][1]) * len(loop), len(loop[0][1]), total, False)


def _loops(runs: list[tuple[str, list[Span]]]) -> list[list[tuple[str, list[Span]]]]:
    """Runs of one parent grouped into loops: equal counts, one of each statement per pass, in turn."""
    by_count: dict[int, list] = {}
    for run in runs:
        by_count.setdefault(len(run[1]), []).append(run)
    loops = []
    for count, members in by_count.items():
        if len(members) > 1 and _interleaved(members, count):
            starts = {key: spans[0].start_ns for key, spans in members}
            loops.append(sorted(members, key=lambda run: starts[run[0]]))
        else:
            loops.extend([run] for run in members)
    return loops


def _interleaved(members: list[tuple[str, list[Span]]], passes: int) -> bool:
    """Whether, in start order, each pass of ``len(members)`` spans holds one span of each statement."""
    tagged = sorted((span.start_ns, key) for key, spans in members for span in spans)
    width = len(members)
    return all(len({key for _, key in tagged[i * width:(i + 1) * width]}) == width for i in range(passes))


def _call_runs(view: TraceView, settings: Settings) -> list[Repeat]:
    groups: dict[tuple, list[Span]] = {}
    by_route = len(view.calls) >= settings.n_plus_one_min_count  # fewer calls cannot make a run of one route
    for call in view.calls:
        method = call.http_method or ""
        # A URL with a value the agent recorded as REDACTED cannot prove two calls identical.
        if call.url_full and "REDACTED" not in call.url_full:
            groups.setdefault((call.parent_span_id, f"{method} {call.url_full}", True), []).append(call)
        if by_route:
            key = f"{method} {host_of(call) or '?'} {_callee_route(view, call)}"
            groups.setdefault((call.parent_span_id, key, False), []).append(call)
    found = []
    for (parent_id, key, identical), spans in groups.items():
        needed = settings.repeated_http_min_count if identical else settings.n_plus_one_min_count
        if len(spans) < needed or _mostly_parallel(spans):
            continue
        found.append(Repeat("repeated_http", spans[0].service, _operation(view, view.by_id.get(parent_id)), (key,),
                            (key,), len(spans), len(spans), sum(s.duration_ns for s in spans), identical))
    return _drop_shadowed(found)


def _mostly_parallel(spans: list[Span]) -> bool:
    """True when most consecutive spans (by start) begin before the ones before them have ended."""
    overlaps = previous = latest_end = 0
    for span in spans:  # they mostly come in start order; sorted only when not
        start = span.start_ns
        if start < previous:
            return _mostly_parallel(sorted(spans, key=lambda s: s.start_ns))
        previous = start
        if start < latest_end:
            overlaps += 1
        end = start + span.duration_ns
        if end > latest_end:
            latest_end = end
    return overlaps * 2 > len(spans) - 1


def _drop_shadowed(found: list[Repeat]) -> list[Repeat]:
    """Identical calls are also one route's N+1 over HTTP; report them once, as identical."""
    identical = {(r.service, r.operation, r.count, r.total_ns) for r in found if r.identical}
    return [r for r in found if r.identical or (r.service, r.operation, r.count, r.total_ns) not in identical]


def _callee_route(view: TraceView, call: Span) -> str:
    server = view.server_child(call)
    if server is not None and (server.http_route or server.url_path):
        return route_of(server)
    return route_of(call)


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


def severity(impact_ms_per_min: float) -> str:
    """The combined report's rule (``analyzers.join.severity_for``): by users' time per minute."""
    from takealook.analyzers.join import severity_for  # lazily: the join imports this package

    return severity_for(impact_ms_per_min)


class _Pattern:
    """One pattern of one endpoint: per request that had it, its count, passes and time."""

    __slots__ = ("counts", "iterations", "totals", "latency", "texts", "top")

    def __init__(self, texts: tuple[str, ...], evidence: int):
        self.counts: list[int] = []
        self.iterations: list[int] = []
        self.totals: list[int] = []
        self.latency = 0  # of the requests that had it
        self.texts = texts
        self.top = TopSlowest(evidence)

    def merge(self, other: "_Pattern") -> None:
        self.counts.extend(other.counts)
        self.iterations.extend(other.iterations)
        self.totals.extend(other.totals)
        self.latency += other.latency
        self.top.merge(other.top)


class RepeatAggregator:
    """Runs added up per (entry endpoint, kind, service, operation, statements or call): one row per request."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.groups: dict[tuple, dict] = {}

    def add(self, view: TraceView, repeats: list[Repeat]) -> None:
        entry = view.entry
        if entry is None or not repeats:
            return
        entry_key = entry.key
        if len(repeats) == 1:  # the usual case: one run in the request
            r = repeats[0]
            key = (entry_key, r.kind, r.service, r.operation, r.keys, r.identical)
            self._add_rows(view, {key: (r.count, r.iterations, r.total_ns, r.texts)})
            return
        rows: dict[tuple, list] = {}
        for repeat in repeats:  # one pattern under several parents of one request: one row
            key = (entry_key, repeat.kind, repeat.service, repeat.operation, repeat.keys, repeat.identical)
            row = rows.get(key)
            if row is None:
                rows[key] = [repeat.count, repeat.iterations, repeat.total_ns, repeat.texts]
            else:
                row[0] += repeat.count
                row[1] += repeat.iterations
                row[2] += repeat.total_ns
        self._add_rows(view, rows)

    def _add_rows(self, view: TraceView, rows: dict[tuple, list]) -> None:
        groups = self.groups
        for key, (count, iterations, total, texts) in rows.items():
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Pattern(texts, self.settings.evidence_traces)
            group.counts.append(count)
            group.iterations.append(iterations)
            group.totals.append(total)
            group.latency += view.root.duration_ns
            if total > group.top.floor:
                group.top.add(total, view.trace_id)

    def merge(self, other: "RepeatAggregator") -> None:
        merge_into(self.groups, other.groups)

    def rekey(self, fold) -> None:
        self.groups = rekey(self.groups, fold)

    def findings(self, endpoints: dict) -> list:
        """``endpoints`` maps an entry key to its ``EndpointStats``."""
        out = []
        for (entry_key, kind, service, operation, keys, identical), group in self.groups.items():
            stats = endpoints.get(entry_key)
            if stats is None:
                continue
            finding = self._finding(stats, kind, service, operation, keys, identical, group)
            if finding is not None:
                out.append(finding)
        return out

    def _finding(self, stats, kind, service, operation, keys, identical, group):
        settings = self.settings
        counts, totals = sorted(group.counts), sorted(group.totals)
        occurrences = len(totals)
        count, total = median_low(counts), median_low(totals)
        avoidable = sum(t - t / max(1, n) for t, n in zip(group.totals, group.iterations))
        impact = avoidable / 1e6 / stats.requests * stats.requests_per_min
        affected = ratio(occurrences, stats.requests)
        if not (kind == "repeated_http" and identical) and not (
                total >= settings.n_plus_one_min_ms * 1e6
                or (count >= settings.n_plus_one_long_run and affected >= 0.5)
                or (impact >= settings.n_plus_one_min_impact_ms_per_min and occurrences >= TRAFFIC_MIN_REQUESTS)):
            return None
        share = ratio(sum(totals), group.latency)
        common = dict(
            service=service, endpoint=stats.endpoint, endpoint_service=stats.service, operation=operation,
            count=count, count_max=counts[-1], total_ms=ms(total), occurrences=occurrences, affected_share=affected,
            share_of_latency=share, impact_ms_per_min=round(impact, 3), trace_ids=group.top.ids(),
            count_p95=round(percentile(counts, 0.95)), total_ms_p95=ms(percentile(totals, 0.95)),
            severity=severity(impact),
        )
        if kind == "repeated_http":
            return RepeatedHttp(kind=kind, call=group.texts[0], identical=identical, **common)
        texts = group.texts
        lead = keys[0]
        fingerprint = "" if lead == texts[0].strip() else lead  # no fingerprint: grouped by text
        return NPlusOne(kind=kind, statement=texts[0], fingerprint=fingerprint,
                        iterations=median_low(group.iterations), statements=tuple(texts), **common)
