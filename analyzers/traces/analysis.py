"""All the trace analyses in one pass over a stream of traces.

    from takealook.analyzers.traces import Settings, analyze
    report = analyze(traces, metric_points, Settings(n_plus_one_min_count=5))

``traces`` is any iterable of traces, each a sequence of ``Span`` of one
trace (the store's ``iter_traces`` yields exactly that; tests build them by
hand). A trace with a ``load`` attribute set (the store's ``TraceSpans``) is
load-test traffic: analysed like the rest, except that its spans are never
orphans (its top span's parent is the load generator's; see ``health.py``). Each trace is indexed once (``TraceView``) and handed to every
analysis; only aggregates are kept, plus the slowest trace of each endpoint
for its waterfall, so memory does not grow with the number of spans.

The result, ``TraceReport``, is plain frozen data: totals (with the spans
skipped and why), endpoints as users feel them with their critical paths,
services, the costliest statements, and the findings ranked by
``impact_ms_per_min`` (milliseconds of user-visible time per minute of
traffic; health findings, which cost users nothing directly, come last).

Rates need a duration: the ``Window`` when both ends are given, else the span
of time the entry spans cover (at least one second).

Endpoints are named by ``takealook.routes``; the pages of a catch-all route are
endpoints of their own up to ``Settings.paths_per_route`` (the busiest), and
the rest are folded into one row named by the route's template when the result
is made (every aggregator re-keyed alike). While reading, at most
``PATHS_TRACKED`` pages per route are told apart, so memory stays bounded
however many paths a route serves.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Optional, Sequence

from takealook.analyzers.traces.connections import ConnectionAggregator
from takealook.analyzers.traces.critical_path import CriticalPathAggregator
from takealook.analyzers.traces.endpoints import (
    EndpointAggregator, EndpointStats, EntryFigures, ServiceStats, other_row,
)
from takealook.analyzers.traces.failures import ErrorAggregator
from takealook.analyzers.traces.health import HealthAggregator
from takealook.analyzers.traces.n_plus_one import RepeatAggregator, find_repeats
from takealook.analyzers.traces.public_calls import PublicCallAggregator
from takealook.analyzers.traces.rates import request_counts
from takealook.analyzers.traces.sequential import SequentialAggregator, find_sequential
from takealook.analyzers.traces.settings import Settings, Window
from takealook.analyzers.traces.slow_statements import StatementAggregator, StatementStats
from takealook.analyzers.traces.stats import merge_into, ms
from takealook.analyzers.traces.trace import Entry, TraceView, is_error
from takealook.collector import MetricPoint, Span

SCHEMA_VERSION = 1
WATERFALL_MAX_SPANS = 300  # a longer waterfall is unreadable; the rest is counted
PATHS_TRACKED = 1000  # pages of one catch-all route told apart while reading; newer ones go to its other row


@dataclass(frozen=True)
class Totals:
    spans: int  # usable spans analysed
    traces: int
    services: tuple[str, ...]
    skipped_spans: int
    skipped_reasons: dict[str, int]
    traces_without_entry: int  # no root server span and no browser root (a job, a lost root)
    window_start_ns: Optional[int]
    window_end_ns: Optional[int]
    window_minutes: float
    # Traces that started in the window: ``traces`` unless the report rests on a sample of them (``sampled``).
    traces_in_window: int = 0
    sampled: bool = False


@dataclass(frozen=True)
class WaterfallRow:
    span_id: str
    service: str
    name: str
    start_ms: float  # from the trace's start
    duration_ms: float
    depth: int
    error: bool


@dataclass(frozen=True)
class SlowTrace:
    endpoint: str
    service: str
    trace_id: str
    duration_ms: float
    rows: tuple[WaterfallRow, ...]
    rows_left_out: int


@dataclass(frozen=True)
class TraceReport:
    schema_version: int
    totals: Totals
    endpoints: tuple[EndpointStats, ...]
    services: tuple[ServiceStats, ...]
    statements: tuple[StatementStats, ...]
    findings: tuple  # of the finding dataclasses, each with `kind` and `impact_ms_per_min`
    slowest: tuple[SlowTrace, ...]
    settings: Settings
    notes: tuple[str, ...] = ()  # what limited the report (a database that could not be joined...)


class TraceAnalysis:
    """Feed traces with ``add_trace`` and metric points with ``add_metric_points``; then ``result()``."""

    def __init__(self, settings: Optional[Settings] = None, window: Optional[Window] = None,
                 entry_filter: Optional[Callable[[Entry], bool]] = None):
        self.settings = settings or Settings()
        self.window = window or Window()
        self.entry_filter = entry_filter
        evidence = self.settings.evidence_traces
        self.endpoints = EndpointAggregator()
        self.paths = CriticalPathAggregator(evidence)
        self.repeats = RepeatAggregator(self.settings)
        self.connections = ConnectionAggregator(evidence)
        self.sequential = SequentialAggregator(self.settings)
        self.public = PublicCallAggregator(evidence)
        self.statements = StatementAggregator(self.settings)
        self.errors = ErrorAggregator(evidence)
        self.health = HealthAggregator(self.settings)
        self.points: list[MetricPoint] = []
        self.spans = self.traces = self.without_entry = 0
        self.read = 0  # traces handed in, analysed or not
        self.skipped: Counter = Counter()
        self.entries_seen: Counter = Counter()  # entry endpoints the filter left out
        self.first_ns: Optional[int] = None
        self.last_ns: Optional[int] = None
        self.slowest: dict[tuple, TraceView] = {}
        self.first_trace: dict[str, str] = {}
        self.pages: dict[tuple, set] = {}  # (service, method, route template) -> pages of a catch-all seen
        # Set when the traces are a sample of a large store (sampling.py): the engine's figures per entry key,
        # which replace the sample's counts, rates and percentiles, and how many traces the window holds.
        self.figures: dict[tuple, EntryFigures] = {}
        self.traces_in_window: Optional[int] = None

    def add_trace(self, spans: Sequence[Span]) -> None:
        self.read += 1
        view = TraceView(spans)
        if view.skipped:
            self.skipped.update(view.skipped)
        if not view.by_id:
            return
        if self.entry_filter is not None and (view.entry is None or not self.entry_filter(view.entry)):
            if view.entry is not None:
                self.entries_seen[view.entry.label] += 1
            return
        if view.entry is not None and view.entry.by_path:
            view.entry = self._admit(view.entry)
        self.traces += 1
        self.spans += len(view.by_id)
        for service in view.services():
            self.first_trace.setdefault(service, view.trace_id)
        self.endpoints.add(view)
        self.public.add(view)
        self.statements.add(view)
        self.health.add(view, bool(getattr(spans, "load", None)))
        self.connections.add(view)
        if view.entry is None:
            self.without_entry += 1
            return
        self._window(view.root)
        key = view.entry.key
        self.paths.add(key, view)
        self.repeats.add(view, find_repeats(view, self.settings))
        self.sequential.add(view, find_sequential(view))
        self.errors.add(view)
        slowest = self.slowest.get(key)
        if slowest is None or view.root.duration_ns > slowest.root.duration_ns:
            self.slowest[key] = view

    def _admit(self, entry: Entry) -> Entry:
        """The page itself while its route has fewer than PATHS_TRACKED pages, else the route's other row."""
        group = (entry.service, entry.method, entry.template)
        pages = self.pages.get(group)
        if pages is None:
            pages = self.pages[group] = set()
        if entry.route in pages:
            return entry
        if len(pages) < PATHS_TRACKED:
            pages.add(entry.route)
            return entry
        return other_row(entry)

    def _fold_paths(self) -> None:
        """Pages of a catch-all route past the busiest ``paths_per_route`` become the route's one row."""
        fold = self.endpoints.fold_paths(self.settings.paths_per_route)
        self._refigure(fold)
        if not fold:
            return
        rename = lambda key: fold.get(key, key)  # noqa: E731 - passed to every aggregator
        for name in ("paths", "repeats", "sequential", "public", "statements", "errors", "connections"):
            getattr(self, name).rekey(rename)
        slowest: dict[tuple, TraceView] = {}
        for key, view in self.slowest.items():
            mine = slowest.get(rename(key))
            if mine is None or view.root.duration_ns > mine.root.duration_ns:
                slowest[rename(key)] = view
        self.slowest = slowest

    def _refigure(self, fold: dict) -> None:
        """The engine's figures keyed as the endpoints are once pages are folded into their route's row."""
        figures: dict[tuple, EntryFigures] = {}
        for key, mine in self.figures.items():
            key = fold.get(key, key)
            if key in figures:
                figures[key].add(mine)
            else:
                figures[key] = EntryFigures(**vars(mine))
        self.figures = figures

    def merge(self, other: "TraceAnalysis") -> None:
        """Add what another analysis (of other traces, in another process) saw; earlier traces first."""
        self.read += other.read
        self.spans += other.spans
        self.traces += other.traces
        self.without_entry += other.without_entry
        self.skipped.update(other.skipped)
        self.entries_seen.update(other.entries_seen)
        self.points.extend(other.points)
        if other.first_ns is not None:
            self.first_ns = other.first_ns if self.first_ns is None else min(self.first_ns, other.first_ns)
            self.last_ns = other.last_ns if self.last_ns is None else max(self.last_ns, other.last_ns)
        for key, view in other.slowest.items():
            mine = self.slowest.get(key)
            if mine is None or view.root.duration_ns > mine.root.duration_ns:
                self.slowest[key] = view
        for service, trace_id in other.first_trace.items():
            self.first_trace.setdefault(service, trace_id)
        merge_into(self.pages, other.pages)
        for name in ("endpoints", "paths", "repeats", "sequential", "public", "statements", "errors", "health",
                     "connections"):
            getattr(self, name).merge(getattr(other, name))

    def add_metric_points(self, points: Iterable[MetricPoint]) -> None:
        """Points of the HTTP server duration metric, for rates when traces are sampled.

        Given before the traces, an empty set tells the endpoints there is no rate to scale.
        """
        self.points.extend(points)
        if not self.traces:
            self.endpoints.count_routes = bool(self.points)

    def _window(self, root: Span) -> None:
        if self.first_ns is None or root.start_ns < self.first_ns:
            self.first_ns = root.start_ns
        end = root.start_ns + root.duration_ns
        if self.last_ns is None or end > self.last_ns:
            self.last_ns = end

    def result(self) -> TraceReport:
        first, last = self.first_ns, self.last_ns
        if self.figures:  # the window as all the requests cover it, not only the sample
            first = min(f.first_ns for f in self.figures.values())
            last = max(f.end_ns for f in self.figures.values())
        start = self.window.since_ns if self.window.since_ns is not None else first
        end = self.window.until_ns if self.window.until_ns is not None else last
        minutes = max((end - start) / 60e9, 1 / 60) if start is not None and end is not None else 1 / 60
        measured = request_counts(self.points, self.window.since_ns, self.window.until_ns)
        self._fold_paths()
        endpoints: dict[tuple, EndpointStats] = {}
        served = self.endpoints.served() if measured else {}
        for key in self.endpoints.endpoints:
            stats = self.endpoints.endpoint_stats(key, minutes, measured.get(key), served)
            if key in self.figures:
                stats = self.figures[key].apply(stats, minutes)
            path = self.paths.result(key)
            endpoints[key] = _with_path(stats, path)
        statements = self.statements.statements(endpoints)
        findings = self._findings(endpoints, statements)
        totals = Totals(
            spans=self.spans, traces=self.traces, services=tuple(sorted(self.endpoints.service_spans)),
            skipped_spans=sum(self.skipped.values()), skipped_reasons=dict(self.skipped.most_common()),
            traces_without_entry=self.without_entry, window_start_ns=start, window_end_ns=end,
            window_minutes=round(minutes, 3), traces_in_window=self.traces_in_window or self.traces,
            sampled=self.traces_in_window is not None and self.read < self.traces_in_window,
        )
        ranked = sorted(endpoints.values(), key=lambda e: (-e.p95_ms * e.requests_per_min, e.endpoint))
        return TraceReport(
            schema_version=SCHEMA_VERSION, totals=totals, endpoints=tuple(ranked),
            services=tuple(self.endpoints.service_stats(minutes)), statements=tuple(statements),
            findings=tuple(findings), slowest=tuple(self._slowest(endpoints)), settings=self.settings,
        )

    def with_statements(self, report: TraceReport, statements: list[StatementStats],
                        notes: Sequence[str] = ()) -> TraceReport:
        """The report again with statements replaced (pg_stat_statements joined) and findings redone."""
        endpoints = {(e.service, e.method, e.route): e for e in report.endpoints}
        findings = self._findings(endpoints, statements)
        return replace(report, statements=tuple(statements), findings=tuple(findings),
                       notes=report.notes + tuple(notes))

    def _findings(self, endpoints: dict, statements: list[StatementStats]) -> list:
        service_sql = {}
        for service, tally in self.endpoints.services.items():
            service_sql[service] = (len(tally.durations), tally.db)
        performance = (
            self.repeats.findings(endpoints) + self.sequential.findings(endpoints)
            + self.public.findings(endpoints) + self.statements.findings(statements, endpoints)
            + self.errors.findings(endpoints)
            + self.connections.findings(endpoints, {s: t.db_requests for s, t in self.endpoints.services.items()})
        )
        performance.sort(key=lambda f: (-f.impact_ms_per_min, f.kind, f.endpoint, f.service))
        health = self.health.findings(service_sql, self.public.own_hosts, self.first_trace)
        return performance + health

    def _slowest(self, endpoints: dict) -> list[SlowTrace]:
        out = []
        for key, view in self.slowest.items():
            stats = endpoints[key]
            rows = waterfall_rows(view)
            out.append(SlowTrace(stats.endpoint, stats.service, view.trace_id, ms(view.root.duration_ns),
                                 tuple(rows[:WATERFALL_MAX_SPANS]), max(0, len(rows) - WATERFALL_MAX_SPANS)))
        out.sort(key=lambda s: -s.duration_ms)
        return out


def _with_path(stats: EndpointStats, path) -> EndpointStats:
    return replace(stats, critical_path=path.shares, critical_path_parts=path.parts,
                   slowest_trace_ids=path.slowest_trace_ids)


def waterfall_rows(view: TraceView) -> list[WaterfallRow]:
    """The spans under the trace's root, depth first, children by start time."""
    root = view.root
    rows: list[WaterfallRow] = []
    stack = [(root, 0)]
    while stack and len(rows) <= WATERFALL_MAX_SPANS * 4:
        span, depth = stack.pop()
        rows.append(WaterfallRow(span.span_id, span.service, _label(span), ms(span.start_ns - root.start_ns),
                                 ms(span.duration_ns), depth, is_error(span)))
        for kid in sorted(view.kids(span), key=lambda s: s.start_ns, reverse=True):
            stack.append((kid, depth + 1))
    return rows


def _label(span: Span) -> str:
    """What a waterfall row says: the statement of a query, the URL of a call, else the span's name."""
    if span.db_statement:
        return " ".join(span.db_statement.split())[:120]
    if span.kind == "client" and span.url_full:
        return f"{span.http_method or ''} {span.url_full}".strip()
    return span.name


def analyze(traces: Iterable[Sequence[Span]], metric_points: Iterable[MetricPoint] = (),
            settings: Optional[Settings] = None, window: Optional[Window] = None,
            entry_filter: Optional[Callable[[Entry], bool]] = None) -> TraceReport:
    """Every analysis over ``traces`` (each a sequence of one trace's spans)."""
    analysis = TraceAnalysis(settings, window, entry_filter)
    analysis.add_metric_points(metric_points)
    for spans in traces:
        analysis.add_trace(spans)
    return analysis.result()
