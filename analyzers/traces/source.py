"""Run the trace analyses over a span store, through the collector's read API.

    from takealook.analyzers.traces.source import analyze_store
    analysis, report = analyze_store(".takealook/spans.db", Settings(), Window(since_ns=...),
                                     service="orders", endpoint="GET /orders/<int:id>")

The store streams whole traces (``StoreReader.iter_traces``) a page at a time,
so memory stays flat however large the store. ``service`` keeps the traces
that touch that service (the store filters); ``endpoint`` keeps the traces
that entered by that endpoint, written as the report names it (``GET
/orders/<id>``), as a bare route, or prefixed by its service (``gateway GET
/``). Metric points of the HTTP server duration in the window supply request
rates when traces are sampled.

``load`` says which load-test traffic to analyse (``takealook.loadmark``):
``False`` (the default) none of it, ``True`` all of it with the rest, a run
label that run alone. What was left out is said in the report's notes.

Errors are ``InputError`` with what to do: no store, a newer or foreign file,
an empty store (from the read API), or no trace in the window or for the
endpoint (from here, naming what the store does have).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from takealook.analyzers.traces.analysis import TraceAnalysis, TraceReport
from takealook.analyzers.traces.rates import SERVER_DURATION_METRICS
from takealook.analyzers.traces.sampling import (
    FAILED, SAMPLE_MIN_TRACES, SHARE, SLOWEST, by_path, can_sample, entry_figures, sample_note,
)
from takealook.analyzers.traces.settings import Settings, Window
from takealook.analyzers.traces.trace import Entry
from takealook.collector import Load, StoreURL, open_store, parse_store
from takealook.errors import InputError
from takealook.routes import route_template, template_path

Progress = Callable[[int, int], None]  # (traces done, traces in all)
MAX_JOBS = 4
PARALLEL_MIN_TRACES = 20_000


def endpoint_matcher(endpoint: Optional[str]) -> Optional[Callable[[Entry], bool]]:
    """A predicate over entries for ``--endpoint``.

    E is an endpoint as the report names it (``GET /orders/{id}``), a bare route or page
    (``/blog/``), either prefixed by its service (``gateway GET /``), or a route as the
    framework wrote it (``/orders/<int:id>``, ``^api/articles/(?P<slug>[^/.]+)$``): each
    is named by ``takealook.routes`` as the entries are. A catch-all route's template
    (``GET /{path}``) selects all of its pages.
    """
    if not endpoint:
        return None
    wanted = _forms(" ".join(endpoint.split()))

    def matches(entry: Entry) -> bool:
        names = (entry.route, entry.template or entry.route)
        for route in names:
            for name in (route, f"{entry.method} {route}"):
                if name in wanted or f"{entry.service} {name}" in wanted:
                    return True
        return False

    return matches


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def _forms(text: str) -> set[str]:
    """``text`` and the same endpoint with its route (the last word) named by ``takealook.routes``."""
    prefix, _, route = text.rpartition(" ")  # routes have no spaces; before: a service and/or a method
    prefix = " ".join(word.upper() if word.upper() in _METHODS else word for word in prefix.split())
    names = {route, route_template(route).text, template_path(route)}
    return {text} | {f"{prefix} {name}".strip() for name in names}


def analyze_store(path: str | os.PathLike, settings: Optional[Settings] = None, window: Optional[Window] = None,
                  service: Optional[str] = None, endpoint: Optional[str] = None,
                  progress: Optional[Progress] = None, jobs: Optional[int] = None,
                  load: Load = False, sample: Optional[bool] = None) -> tuple[TraceAnalysis, TraceReport]:
    """The analysis (for joins done afterwards) and its report over the store at ``path``.

    ``jobs``: processes reading the store side by side, each a slice of the window
    (default: one per CPU, at most ``MAX_JOBS``, when the window holds at least
    ``PARALLEL_MIN_TRACES`` traces; reading and building spans is most of a report's time).
    ``sample``: over a store that aggregates (ClickHouse), figures by the engine and per-trace analyses over a
    sample of traces (``sampling.py``); None (the default) when the window holds ``SAMPLE_MIN_TRACES`` or more.
    """
    window = window or Window()
    analysis = TraceAnalysis(settings, window, endpoint_matcher(endpoint))
    try:
        return _analyze(parse_store(path), analysis, window, _Filters(service, endpoint, load, sample), progress,
                        jobs)
    except sqlite3.DatabaseError as error:  # a damaged file, or one a different takealook wrote
        raise InputError(f"cannot read the span store {path}: {error}; is it a takealook store "
                         "written by this version?") from error


class _Filters:
    """What selects the traces besides the window (plain values: they travel to worker processes)."""

    def __init__(self, service: Optional[str], endpoint: Optional[str], load: Load, sample: Optional[bool] = None):
        self.service, self.endpoint, self.load, self.sample = service, endpoint, load, sample


def _analyze(path, analysis: TraceAnalysis, window: Window, filters: _Filters, progress,
             jobs: Optional[int]) -> tuple[TraceAnalysis, TraceReport]:
    service = filters.service
    with open_store(path) as store:
        total = store.count_traces(window.since_ns, window.until_ns, service=service, load=filters.load)
        summary = store.summary()
        runs = store.load_runs(window.since_ns, window.until_ns)
        # Read first: without points, no route's server spans need counting (see endpoints).
        points = [point for name in SERVER_DURATION_METRICS
                  for point in store.metric_points(name, window.since_ns, window.until_ns, service, load=filters.load)]
    analysis.add_metric_points(points)
    if isinstance(filters.load, str) and filters.load not in runs:
        raise InputError(f"no traces of load run {filters.load!r} in {path} in that time; "
                         + (f"load runs there: {', '.join(runs)}" if runs else "it holds no load-test traffic"))
    # Large windows: the store's figures over every request and a sample of traces (sampling.py).
    sample = filters.sample if filters.sample is not None else total >= SAMPLE_MIN_TRACES
    if isinstance(path, StoreURL) or sample:
        jobs = 1  # the engine reads in parallel itself, its sessions do not cross a fork; a sample is small
    elif jobs is None:
        jobs = min(os.cpu_count() or 1, MAX_JOBS) if total >= PARALLEL_MIN_TRACES else 1
    parallel = jobs > 1 and summary.start_ns is not None
    if parallel:  # with no connection open here: SQLite handles must not cross a fork
        _read_in_parallel(path, analysis, _slices(window, summary, jobs), filters, progress, total)
    notes: tuple[str, ...] = ()
    with open_store(path, allow_empty=True) as store:
        if sample and can_sample(store):
            _read_sample(store, analysis, window, filters, progress, total)
            note = sample_note(analysis.read, total)
            notes = (note,) if note else ()
        elif not parallel:
            _read(store, analysis, window, filters, progress, total)
        if analysis.traces == 0:
            raise InputError(_nothing_found(summary, window, filters, analysis, runs))
    report = analysis.result()
    return analysis, replace(report, notes=report.notes + notes + _load_notes(filters.load, runs))


def _read_sample(store, analysis: TraceAnalysis, window: Window, filters: _Filters, progress, total: int) -> None:
    """The engine's figures over every request, then the sample's traces through the analyses."""
    args = (window.since_ns, window.until_ns, filters.service, filters.load, by_path)
    analysis.figures = entry_figures(store.entry_groups(*args))
    listed = store.sample_traces(*args, SLOWEST, FAILED, SHARE)
    analysis.traces_in_window = total
    done = 0
    for spans in store.read_traces(listed):
        analysis.add_trace(spans)
        done += 1
        if progress is not None and done % 1000 == 0:
            progress(done, len(listed))
    if progress is not None:
        progress(done, len(listed))


def _load_notes(load: Load, runs: dict[str, int]) -> tuple[str, ...]:
    if load is False and runs:
        listed = ", ".join(f"{label} ({count})" for label, count in runs.items())
        return (f"left out {sum(runs.values())} traces of load tests (runs: {listed}); --include-load takes them "
                "in, --load-run LABEL analyses one run alone",)
    if load is True and runs:
        return (f"{sum(runs.values())} of the traces are load-test traffic ({', '.join(runs)})",)
    if isinstance(load, str):
        return (f"only the traces of load run {load!r}",)
    return ()


def _read(store, analysis: TraceAnalysis, window: Window, filters: _Filters, progress, total: int,
          done: int = 0) -> None:
    for spans in store.iter_traces(window.since_ns, window.until_ns, service=filters.service, load=filters.load):
        analysis.add_trace(spans)
        done += 1
        if progress is not None and done % 1000 == 0:
            progress(done, total)
    if progress is not None:
        progress(done, total)


def _slices(window: Window, summary, jobs: int) -> list[Window]:
    """``jobs`` consecutive windows covering the traces the window selects, of equal length in time."""
    low = summary.start_ns if window.since_ns is None else max(window.since_ns, summary.start_ns)
    high = summary.end_ns + 1 if window.until_ns is None else min(window.until_ns, summary.end_ns + 1)
    if high <= low:
        return [window]
    cuts = [low + (high - low) * k // jobs for k in range(jobs + 1)]
    cuts[0], cuts[-1] = window.since_ns, window.until_ns  # open ends stay open
    return [Window(cuts[k], cuts[k + 1]) for k in range(jobs)]


def _read_in_parallel(path: Path, analysis: TraceAnalysis, slices: list[Window], filters: _Filters, progress,
                      total: int) -> None:
    # fork where there is one: the workers start at once with everything imported.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    done = 0
    with ProcessPoolExecutor(max_workers=len(slices), mp_context=context) as pool:
        futures = [pool.submit(_analyze_slice, str(path), analysis.settings, part, filters,
                               analysis.endpoints.count_routes) for part in slices]
        for future in futures:  # in time order, so "first seen" stays the earliest
            part = future.result()
            analysis.merge(part)
            done += part.read
            if progress is not None:
                progress(done, total)


def _analyze_slice(path: str, settings: Settings, window: Window, filters: _Filters,
                   count_routes: bool) -> TraceAnalysis:
    """One worker's share: its slice of the window, analysed; returned to be merged (pickled)."""
    analysis = TraceAnalysis(settings, window, endpoint_matcher(filters.endpoint))
    analysis.endpoints.count_routes = count_routes
    with open_store(path, allow_empty=True) as store:
        _read(store, analysis, window, filters, None, 0)
    analysis.entry_filter = None  # a closure: it does not travel between processes
    return analysis


def _nothing_found(summary, window: Window, filters: _Filters, analysis: TraceAnalysis, runs: dict) -> str:
    service, endpoint = filters.service, filters.endpoint
    if filters.load is False and runs and analysis.read == 0:
        return (f"the only traces in that time are load-test traffic ({', '.join(runs)}): pass --include-load, "
                "or --load-run LABEL for one run")
    if summary.spans == 0:
        return (f"the span store {summary.path} has metric points but no spans yet: "
                "check that the apps export traces to `takealook collect`")
    if endpoint and analysis.entries_seen:
        seen = ", ".join(label for label, _ in analysis.entries_seen.most_common(5))
        return f"no trace entered by endpoint {endpoint!r}; entry endpoints seen: {seen}"
    if service and service not in summary.services:
        return f"no spans of service {service!r} in {summary.path}; services: {', '.join(summary.services)}"
    if analysis.skipped:
        return (f"all {sum(analysis.skipped.values())} spans in the window were unusable "
                f"({', '.join(analysis.skipped)})")
    return (f"no traces in {summary.path} between {_when(window.since_ns, 'the start')} and "
            f"{_when(window.until_ns, 'now')}; it holds traces from {_when(summary.start_ns, '?')} to "
            f"{_when(summary.end_ns, '?')}: widen --since/--until")


def _when(ns: Optional[int], default: str) -> str:
    if ns is None:
        return default
    try:
        return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):  # an absurd timestamp in the store
        return f"{ns} ns"
