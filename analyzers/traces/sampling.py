"""Reports whose cost does not grow with the store: figures by the engine, per-trace analyses over a sample.

A ClickHouse table may hold billions of spans. Reading every trace into Python
would make a report's time and memory grow with it, so over a large window
(``SAMPLE_MIN_TRACES`` traces or more, any store) the report is made in two
parts:

- the store computes, over every root server span in the window, each entry
  endpoint's requests, failures, 4xx answers, mean and exact p50/p95/p99
  (``entry_groups``: one SQL aggregate on ClickHouse; on SQLite one pass over
  the root spans, counted in ``collector/read_sample.py``), named here as the
  trace analysis names endpoints (``trace.entry_of``);
- the per-trace analyses (critical path, per-request counts, N+1, sequential
  and repeated calls, errors, connections, statements, health) run over a
  bounded, stratified sample of whole traces per endpoint
  (``StoreReader.sample_traces``): its ``SLOWEST`` slowest traces, up to
  ``FAILED`` failed ones, and ``SHARE`` more at random, so slow and failing
  requests are always looked at and the cost is about
  ``(SLOWEST + FAILED + SHARE)`` traces per endpoint whatever the table's size.

The report says so: ``totals.sampled``, ``totals.traces_in_window`` beside
``totals.traces`` (the traces analysed), each endpoint's ``traces_analysed``,
and a note. Findings' counts (occurrences, shares of requests) are over the
sample, which over-represents slow and failed requests; their impact uses the
endpoint's real rate. Groups named alike (a route recorded two ways, pages
folded into their route's row) add their counts; their percentiles are
averaged by requests.

Smaller windows are read whole, as before: their figures all rest on every
trace.
"""

from __future__ import annotations

from typing import Optional

from takealook.analyzers.traces.endpoints import EntryFigures
from takealook.analyzers.traces.trace import entry_of
from takealook.collector import Span
from takealook.routes import route_template

SAMPLE_MIN_TRACES = 20_000
SLOWEST, FAILED, SHARE = 30, 30, 120


def can_sample(store) -> bool:
    return hasattr(store, "entry_groups") and hasattr(store, "sample_traces")


def by_path(route: str) -> bool:
    """Whether requests of ``route`` (as recorded) are endpoints of their own path: a catch-all's pages."""
    return route_template(route).catch_all


def entry_figures(groups) -> dict[tuple, EntryFigures]:
    """The engine's groups (``EntryGroup``) as figures per entry key, named as ``TraceView`` names entries."""
    out: dict[tuple, EntryFigures] = {}
    for g in groups:
        root = Span("", "", None, g.service, g.name or "?", "server", g.first_ns, 0, "unset",
                    http_method=g.method or None, http_route=g.route or None, url_path=g.path or None)
        entry = entry_of(root)
        if entry is None:
            continue
        figures = EntryFigures(g.requests, g.errors, g.client_errors, g.duration_ns, g.quantiles_ns, g.first_ns,
                               g.end_ns)
        if entry.key in out:
            out[entry.key].add(figures)
        else:
            out[entry.key] = figures
    return out


def sample_note(traces: int, in_window: int) -> Optional[str]:
    if traces >= in_window:
        return None
    return (f"per-trace figures (critical paths, per-request counts, findings) rest on a sample of {traces:,} of the "
            f"{in_window:,} traces in the window: per endpoint its {SLOWEST} slowest, up to {FAILED} failed and "
            f"{SHARE} more at random; requests, rates, errors and percentiles are over all of them")
