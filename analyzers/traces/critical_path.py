"""Critical path: where the time of a request went, as the user waited for it.

Per trace: start at the entry span, repeatedly follow the child that finished
last (clipped to its parent's window and to the start of the child chosen
before it); the time no chosen child covers is the parent's own time. Children
that overlap the chosen one ran in parallel and cost the user nothing extra, so
they are not on the path. The path's segments add up to the entry span's
duration exactly.

Each segment is charged to the span's service and to what the span is: "sql"
(a statement), "connect" (opening a database connection), "http" (an outbound call's own time: network, TLS, queueing,
whatever the callee's server span does not cover), another database's name
(``redis``...), or "code" (the app's own code, including gaps between spans).

Per endpoint, ``CriticalPathAggregator`` adds the traces up: the share of
critical-path time in each service's own code, in SQL and in outbound HTTP
(the flat ``shares`` dict of the JSON contract), the same split per service,
and the slowest traces' ids as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from takealook.analyzers.traces.stats import TopSlowest, merge_into, ms, ratio, rekey
from takealook.analyzers.traces.trace import CODE, SQL, SQL_SYSTEMS, TraceView, category
from takealook.collector import Span


_SQL_OR_UNSET = SQL_SYSTEMS | {None}


@dataclass(frozen=True)
class PathPart:
    service: str
    category: str  # code | sql | connect | http | another database system
    ms_per_request: float
    share: float


@dataclass(frozen=True)
class EndpointPath:
    traces: int
    shares: dict[str, float]  # service name -> its own code's share; "sql", "http": all services'
    parts: tuple[PathPart, ...]  # the same time, split per service and category, largest first
    slowest_trace_ids: tuple[str, ...]


def critical_path(view: TraceView, root: Span | None = None) -> dict[tuple[str, str], int]:
    """Nanoseconds of one trace's critical path per (service, category)."""
    root = root or view.root
    totals: dict[tuple[str, str], int] = {}
    if root is None:
        return totals
    children = view.children
    stack = [(root, root.start_ns, root.end_ns)]
    while stack:
        span, low, high = stack.pop()
        own = 0
        until = high  # everything after `until` is already accounted for
        kids = children.get(span.span_id)
        if kids:
            if len(kids) > 1:
                kids = _latest_first(kids)
            for kid in kids:
                start = kid.start_ns if kid.start_ns > low else low
                if start >= until:
                    continue
                end = kid.start_ns + kid.duration_ns
                if end > until:
                    end = until
                if end <= start:
                    continue
                own += until - end
                if kid.span_id in children:
                    stack.append((kid, start, end))
                else:  # a leaf (most spans): all of its clipped time is its own
                    # Most leaves are statements: their category without the call.
                    sql = kid.db_statement is not None and kid.db_system in _SQL_OR_UNSET
                    key = (kid.service, SQL if sql else category(kid))
                    totals[key] = totals.get(key, 0) + (end - start)
                until = start
        own += until - low
        if own:
            key = (span.service, category(span))
            totals[key] = totals.get(key, 0) + own
    return totals


def _end(span: Span) -> int:
    return span.start_ns + span.duration_ns


def _latest_first(kids: list[Span]) -> list[Span]:
    """Children by end, latest first. They are mostly stored in the order they ran, one after another:
    then reversing is enough, and checking that costs less than a sort's key calls."""
    previous = 0
    for kid in kids:
        end = kid.start_ns + kid.duration_ns
        if end <= previous:  # out of order, or a tie (the sort keeps ties in their order; reversing would not)
            return sorted(kids, key=_end, reverse=True)
        previous = end
    return kids[::-1]


class CriticalPathAggregator:
    """Critical paths added up per endpoint key."""

    def __init__(self, evidence: int):
        self.evidence = evidence
        self.ns: dict[tuple, dict[tuple[str, str], int]] = {}
        self.total_ns: dict[tuple, int] = {}
        self.traces: dict[tuple, int] = {}
        self.slowest: dict[tuple, TopSlowest] = {}

    def add(self, key: tuple, view: TraceView) -> None:
        root = view.root
        sums = self.ns.get(key)
        if sums is None:
            sums = self.ns[key] = {}
        for part, value in critical_path(view, root).items():
            sums[part] = sums.get(part, 0) + value
        self.total_ns[key] = self.total_ns.get(key, 0) + root.duration_ns
        self.traces[key] = self.traces.get(key, 0) + 1
        top = self.slowest.get(key)
        if top is None:
            top = self.slowest[key] = TopSlowest(self.evidence)
        if root.duration_ns > top.floor:
            top.add(root.duration_ns, view.trace_id)

    def merge(self, other: "CriticalPathAggregator") -> None:
        for table in ("ns", "total_ns", "traces", "slowest"):
            merge_into(getattr(self, table), getattr(other, table))

    def rekey(self, fold) -> None:
        for table in ("ns", "total_ns", "traces", "slowest"):
            setattr(self, table, rekey(getattr(self, table), fold, position=None))

    def result(self, key: tuple) -> EndpointPath:
        sums = self.ns.get(key, {})
        total = self.total_ns.get(key, 0)
        traces = self.traces.get(key, 0)
        flat: dict[str, int] = {}
        for (service, kind), value in sums.items():
            name = service if kind == CODE else kind
            flat[name] = flat.get(name, 0) + value
        shares = {name: ratio(value, total) for name, value in sorted(flat.items(), key=lambda kv: -kv[1])}
        parts = tuple(
            PathPart(service, kind, ms(value / traces) if traces else 0.0, ratio(value, total))
            for (service, kind), value in sorted(sums.items(), key=lambda kv: -kv[1])
        )
        top = self.slowest.get(key)
        return EndpointPath(traces, shares, parts, top.ids() if top else ())
