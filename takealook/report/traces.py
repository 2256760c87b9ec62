"""The trace report: a ``Document`` (text, Markdown, HTML) and the JSON contract of ``traces report``.

``document(report)`` lays out the findings ranked by their cost to users, the
entry endpoints, their critical paths (stacked bars of shares), a waterfall of
each endpoint's slowest trace, the services, the statements and the
instrumentation's health. ``contract(report)`` is the JSON object of
docs/json.md (docs/schemas/traces-report.schema.json). ``describe(finding)`` and ``advice(kind)`` are one-line texts
the combined report reuses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from takealook.analyzers.traces.analysis import TraceReport
from takealook.report.model import (
    Code,
    Document,
    KeyValues,
    Paragraph,
    Section,
    StackedBars,
    Table,
    Waterfall,
    WaterfallSpan,
)
from takealook.report.render import fmt_value

HEALTH_KINDS = ("orphan_span", "missing_db_spans", "clock_skew", "broken_trace")
MAX_DETAILED = 10  # findings with a detail section of their own
MAX_WATERFALLS = 8
STATEMENT_CHARS = 90

ADVICE = {
    "n_plus_one": "Load the rows in one statement: a JOIN, an IN list, or the ORM's "
                  "select_related/prefetch_related (Django) or selectinload/joinedload (SQLAlchemy).",
    "repeated_http": "Call once and reuse the answer, or ask the callee for a batch endpoint.",
    "sequential_calls": "If neither call needs the other's answer, issue them concurrently "
                        "(a thread pool, or asyncio.gather with an async client).",
    "public_address_call": "Call the service over the private network (an internal host name or private "
                           "address) instead of its public URL.",
    "slow_statement": "Look at its plan (EXPLAIN ANALYZE) and at `takealook db indexes` for an index.",
    "error": "Open the traces below: the exception's stack trace is in the span's events.",
    "orphan_span": "Make sure every caller exports its spans (browser, proxy) and that export queues "
                   "are not dropping spans.",
    "missing_db_spans": "If the service uses a database, instrument its driver (run it under takealook-run).",
    "clock_skew": "Synchronise the hosts' clocks (NTP/chrony); per-service times across these calls are shifted.",
    "broken_trace": "Instrument the callee (takealook-run) and let it accept the W3C traceparent header.",
    "connection_per_request": "Keep connections open between requests: in Django set CONN_MAX_AGE (60 s, say) "
                              "with CONN_HEALTH_CHECKS = True, or Django 5.1's pool (OPTIONS "
                              "{\"pool\": True} with psycopg 3); elsewhere a pool (SQLAlchemy's, psycopg_pool); "
                              "or pgbouncer in front of PostgreSQL, which also caps the server's connections.",
}


def describe(f) -> str:
    """One line saying what a finding is."""
    kind = f.kind
    if kind == "n_plus_one":
        statements = getattr(f, "statements", ()) or (f.statement,)
        what = _short(f.statement) if len(statements) == 1 else \
            f"a loop of {len(statements)} statements ({_short(f.statement)}, …) run {f.iterations} times"
        return (f"{f.count}× {what} under {f.operation} in {f.service}: "
                f"{_n(f.total_ms)} ms per request (median of {f.occurrences}), {f.share_of_latency:.0%} of its latency")
    if kind == "connection_per_request":
        return (f"{f.service} opens a database connection in {f.share_of_requests:.0%} of its requests "
                f"({f.requests_connecting} of {f.requests}): {_n(f.connect_ms)} ms per request, "
                f"{f.share_of_latency:.0%} of their time")
    if kind == "repeated_http":
        what = "identical calls" if f.identical else "calls to one route"
        return f"{f.count} {what} {f.call} from {f.service} under {f.operation}: {_n(f.total_ms)} ms per request"
    if kind == "sequential_calls":
        return (f"{len(f.calls)} calls one after another ({' → '.join(f.calls)}) in {f.service}: "
                f"{_n(f.total_ms)} ms, {_n(f.saving_ms)} ms less in parallel")
    if kind == "public_address_call":
        return (f"{f.service} calls {f.callee_service} at {f.host} ({f.reason}): "
                f"{_n(f.overhead_ms_per_request)} ms per request outside {f.callee_service}'s own time")
    if kind == "slow_statement":
        return f"p95 {f.p95_ms:g} ms over {f.calls} calls in {f.service}: {_short(f.statement)}"
    if kind == "error":
        message = f": {f.message}" if f.message else ""
        return f"{f.exception_type}{message} in {f.service} ({f.count} failed requests)"
    if kind == "orphan_span":
        return (f"{f.spans} spans of {f.service} whose parent never arrived "
                f"({f.entry} at the top of their trace, {f.inner} mid-trace)")
    if kind == "missing_db_spans":
        return f"{f.service} answered {f.server_spans} requests without a single database span"
    if kind == "clock_skew":
        return (f"{f.service}'s spans start up to {_n(f.max_skew_ms)} ms before their caller's "
                f"({f.parent_service}): the hosts' clocks disagree")
    if kind == "broken_trace":
        callee = f" ({f.callee_service})" if f.callee_service else ""
        return f"{f.calls} calls from {f.service} to {f.host}{callee} have no server span under them"
    return kind


def _n(value) -> str:
    """A figure as people read it: 76.9, 1,234, 0.42."""
    return fmt_value(float(value)) if value is not None else "—"


def advice(kind: str) -> str:
    return ADVICE.get(kind, "")


def _short(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= STATEMENT_CHARS else text[: STATEMENT_CHARS - 1] + "…"


def _when(ns) -> str:
    if ns is None:
        return "?"
    try:
        return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns"


# --------------------------------------------------------------------------- json


def contract(report: TraceReport) -> dict:
    """The JSON object of ``takealook traces report --format json``."""
    totals = dataclasses.asdict(report.totals)
    return {
        "schema_version": report.schema_version,
        "totals": totals,
        "endpoints": list(report.endpoints),
        "findings": list(report.findings),
        "services": list(report.services),
        "statements": list(report.statements),
        "slowest_traces": [{"endpoint": s.endpoint, "service": s.service, "trace_id": s.trace_id,
                            "duration_ms": s.duration_ms} for s in report.slowest],
        "settings": report.settings,
        "notes": list(report.notes),
    }


# --------------------------------------------------------------------------- document


def document(report: TraceReport, title: str = "Where requests spend their time") -> Document:
    t = report.totals
    meta = [("window", f"{_when(t.window_start_ns)} – {_when(t.window_end_ns)} ({_n(t.window_minutes)} min)"),
            ("traces", f"{t.traces:,} analysed of {t.traces_in_window:,} (a sample)" if t.sampled else t.traces),
            ("spans", t.spans), ("services", ", ".join(t.services) or "—")]
    if t.skipped_spans:
        meta.append(("spans skipped", t.skipped_spans))
    sections = [
        Section("Notes", tuple(Paragraph(note, "warning") for note in report.notes)) if report.notes else None,
        _findings_section(report),
        _endpoints_section(report),
        _critical_path_section(report),
        _waterfalls_section(report),
        _services_section(report),
        _statements_section(report),
        _health_section(report),
    ]
    return Document(title, tuple(s for s in sections if s is not None), meta=tuple(meta))


def _performance(report: TraceReport) -> list:
    return [f for f in report.findings if f.kind not in HEALTH_KINDS]


def _findings_section(report: TraceReport) -> Section:
    findings = _performance(report)
    if not findings:
        return Section("Findings", (Paragraph("No N+1 queries, repeated or sequential calls, public-address "
                                              "calls, connections per request, slow statements or errors found.",
                                              "good"),))
    rows = [(i + 1, f.impact_ms_per_min, f.kind, f.endpoint, describe(f)) for i, f in enumerate(findings)]
    table = Table.of(("#", "ms/min", "kind", "endpoint", "what"), rows, right=("#", "ms/min"))
    intro = Paragraph("Ranked by their cost to users: milliseconds of user-visible time per minute of traffic "
                      "(what fixing them would give back).")
    details = tuple(_finding_detail(i + 1, f) for i, f in enumerate(findings[:MAX_DETAILED]))
    return Section("Findings", (intro, table), details)


def _finding_detail(rank: int, f) -> Section:
    items = [("endpoint", f"{f.endpoint} ({getattr(f, 'endpoint_service', '')})"), ("service", f.service),
             ("impact", f"{_n(f.impact_ms_per_min)} ms per minute of traffic")]
    for name in ("severity", "operation", "occurrences", "affected_share", "count", "count_p95", "iterations",
                 "total_ms", "total_ms_p95", "saving_ms", "share_of_latency", "calls_per_request",
                 "overhead_ms_per_request", "p95_ms", "mean_ms", "calls", "message", "requests",
                 "requests_connecting", "connects_per_request", "connect_ms", "connect_ms_p95"):
        value = getattr(f, name, None)
        if value not in (None, "", ()) and not isinstance(value, tuple):
            items.append((name.replace("_", " "), f"{value:.0%}" if name.endswith("share") or
                          name == "share_of_latency" else value))
    blocks: list = [Paragraph(describe(f)), KeyValues(tuple(items))]
    statements = getattr(f, "statements", ()) or ((f.statement,) if getattr(f, "statement", None) else ())
    if statements:
        blocks.append(Code(";\n".join(statements), "sql"))
    figures = getattr(f, "pg_stat_statements", None)
    if figures is not None:
        blocks.append(Paragraph(f"pg_stat_statements ({figures.dsn_database}): {figures.calls} calls, "
                                f"mean {_n(figures.mean_exec_ms)} ms, total {_n(figures.total_exec_ms)} ms, "
                                f"{figures.rows} rows"))
    hint = getattr(f, "index_advice", None)
    if hint is not None:
        proof = "verified with HypoPG" if hint.verified else "not verified"
        saving = f", {_n(hint.saving_pct)}% cheaper plan" if hint.saving_pct is not None else ""
        blocks.append(Paragraph(f"Suggested index ({proof}{saving}):"))
        blocks.append(Code(hint.create_sql, "sql"))
    if f.kind == "sequential_calls":
        blocks.append(Code("\n".join(f.calls), "text"))
    if f.trace_ids:
        blocks.append(Paragraph("Traces: " + ", ".join(f.trace_ids)))
    blocks.append(Paragraph(advice(f.kind)))
    return Section(f"{rank}. {f.kind.replace('_', ' ')} — {f.endpoint}", tuple(blocks))


def endpoint_label(e) -> str:
    """An endpoint as the tables show it: a catch-all's other row says how many pages it stands for."""
    return f"{e.endpoint} (other pages: {e.other_paths})" if getattr(e, "other_paths", 0) else e.endpoint


def _endpoints_section(report: TraceReport) -> Section:
    sampled = report.totals.sampled
    rows = [(endpoint_label(e), e.service, e.requests, *((e.traces_analysed,) if sampled else ()), e.requests_per_min,
             f"{e.error_rate:.1%}", f"{e.client_error_rate:.1%}", e.p50_ms, e.p95_ms, e.p99_ms,
             e.services_per_request, e.sql_per_request, e.outbound_calls_per_request) for e in report.endpoints]
    table = Table.of(("endpoint", "service", "requests", *(("traces analysed",) if sampled else ()), "req/min",
                      "errors", "4xx", "p50 ms", "p95 ms", "p99 ms", "services", "SQL/req", "calls/req"), rows,
                     right=("errors", "4xx"))
    blocks: list = [Paragraph("Entry endpoints (root server spans, browser roots), busiest-slowest first; errors "
                              "are 5xx answers and failures, 4xx the answers refused (login walls, bad input)."),
                    table]
    pages = sorted({e.route_template for e in report.endpoints if e.by_path or e.other_paths})
    if pages:
        blocks.append(Paragraph("Named by their path: the pages of catch-all routes (" + ", ".join(pages) + "); "
                                "past the busiest of a route, the rest are one row named by the route."))
    if sampled:
        blocks.append(Paragraph("Requests, rates, errors and percentiles are over every request in the window; "
                                "services, SQL and calls per request (and the findings) over the traces analysed: "
                                "a sample of each endpoint's slowest, failed and random traces."))
    metered = [e.endpoint for e in report.endpoints if e.rate_source == "metrics"]
    if metered:
        blocks.append(Paragraph("Rates from metric points (traces are sampled) for: " + ", ".join(metered)))
    return Section("Endpoints as users feel them", tuple(blocks))


def _critical_path_section(report: TraceReport) -> Section | None:
    endpoints = [e for e in report.endpoints if e.critical_path][:15]
    if not endpoints:
        return None
    rows = tuple((e.endpoint, tuple((name, round(100 * share, 1)) for name, share in e.critical_path.items()))
                 for e in endpoints)
    chart = StackedBars("Share of critical-path time: each service's own code, SQL, outbound HTTP", rows)
    table_rows = [(e.endpoint, p.service, p.category, p.ms_per_request, f"{p.share:.0%}")
                  for e in endpoints[:5] for p in e.critical_path_parts[:8]]
    table = Table.of(("endpoint", "service", "time in", "ms/request", "share"), table_rows, right=("share",))
    note = Paragraph("The critical path follows, from the entry span, the child that finished last; gaps are "
                     "the parent's own time; children running in parallel with it are not on it.")
    return Section("Critical path", (note, chart, table))


def _waterfalls_section(report: TraceReport) -> Section | None:
    if not report.slowest:
        return None
    blocks: list = []
    for slow in report.slowest[:MAX_WATERFALLS]:
        spans = tuple(WaterfallSpan(f"{r.service}: {r.name}", r.service, r.start_ms, r.duration_ms, r.depth,
                                    r.error) for r in slow.rows)
        blocks.append(Waterfall.of(f"{slow.endpoint} ({slow.service}) — trace {slow.trace_id}, "
                                f"{_n(slow.duration_ms)} ms", spans))
        if slow.rows_left_out:
            blocks.append(Paragraph(f"{slow.rows_left_out} more spans not drawn."))
    return Section("Slowest trace per endpoint", tuple(blocks))


def _services_section(report: TraceReport) -> Section:
    rows = [(s.service, s.requests, s.requests_per_min, f"{s.error_rate:.1%}", f"{s.client_error_rate:.1%}",
             s.p50_ms, s.p95_ms, s.p99_ms, s.spans, s.sql_per_request, s.outbound_calls_per_request)
            for s in report.services]
    return Section("Services", (Table.of(("service", "server spans", "req/min", "errors", "4xx", "p50 ms", "p95 ms",
                                          "p99 ms", "spans", "SQL/req", "calls/req"), rows,
                                         right=("errors", "4xx")),))


def _statements_section(report: TraceReport) -> Section | None:
    if not report.statements:
        return None
    joined = any(s.pg_stat_statements is not None for s in report.statements)
    advised = any(s.index_advice is not None for s in report.statements)
    rows = []
    for s in report.statements:
        row = [_short(s.statement), ", ".join(s.services), s.calls, s.total_ms, s.mean_ms, s.p95_ms,
               ", ".join(e.endpoint for e in s.endpoints[:3])]
        if joined:
            figures = s.pg_stat_statements
            row += [figures.calls if figures else None, figures.mean_exec_ms if figures else None]
        if advised:
            row.append(s.index_advice.create_sql if s.index_advice else None)
        rows.append(tuple(row))
    headers = ["statement", "service", "calls", "total ms", "mean ms", "p95 ms", "endpoints"]
    if joined:
        headers += ["pgss calls", "pgss mean ms"]
    if advised:
        headers.append("suggested index")
    return Section("Statements by total time", (Table.of(headers, rows),))


def _health_section(report: TraceReport) -> Section:
    health = [f for f in report.findings if f.kind in HEALTH_KINDS]
    t = report.totals
    blocks: list = []
    if t.skipped_spans:
        reasons = ", ".join(f"{count} {reason}" for reason, count in t.skipped_reasons.items())
        blocks.append(Paragraph(f"{t.skipped_spans} spans skipped: {reasons}.", "warning"))
    if t.traces_without_entry:
        blocks.append(Paragraph(f"{t.traces_without_entry} traces have no entry endpoint (no root server span "
                                "nor browser root: background jobs, or a root that never arrived)."))
    if health:
        rows = [(f.kind, f.service, describe(f), ", ".join(f.trace_ids[:2])) for f in health]
        blocks.append(Table.of(("kind", "service", "what", "traces"), rows))
        blocks.extend(Paragraph(f"{kind.replace('_', ' ')}: {advice(kind)}")
                      for kind in dict.fromkeys(f.kind for f in health))
    if not blocks:
        blocks.append(Paragraph("Every span has its parent, every call its server span, clocks agree.", "good"))
    return Section("Instrumentation health", tuple(blocks))
