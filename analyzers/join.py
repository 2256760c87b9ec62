"""One join of what the traces saw, what pg_stat_statements measured and what the index advice predicts.

Statements meet by pglast fingerprint (``takealook.sqltext``): ``WHERE id = 7``
in a span, ``= %s`` in the app and ``= $1`` in pg_stat_statements are one
statement. Three callers, one module:

- ``traces report --dsn``: ``read_database(dsn, advise_for)`` reads a database
  (read-only, through ``takealook.analyzers.db``) and ``join_statements``
  attaches its figures (``DatabaseFigures``) and advice (``IndexHint``) to the
  traced statements;
- ``db audit``: ``audit_findings`` turns each advised index into a
  ``missing_index`` finding and points the slow statements and scanned tables
  it serves at it;
- ``takealook report``: ``combine(traces, audit)`` returns every finding of
  both sources as one typed list (``JoinedFinding``), each with its severity
  and its cost to users; the report orders and renders them, nothing else.

**Impact of a missing index, honestly.** A statement's time in the window is
what pg_stat_statements measured for it (its mean execution time) times the
calls the traces saw in the window, never more calls than pg_stat_statements
counted: a span's duration also holds the driver, the network and the fetch,
which no index shortens. The predicted saving is that time times the planner's
predicted cost ratio (HypoPG), never above the time itself, and is labelled an
estimate. An index no trace saw is weighed by the time pg_stat_statements
measured over its own period.

**Severity follows milliseconds of users' time per minute** (``severity_for``),
never a ratio: a 99% cheaper plan for a statement that costs 19 ms a minute is
a low finding.

psycopg and pglast are imported only by the functions that read a database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Optional, Sequence

from takealook.analyzers.traces.slow_statements import DatabaseFigures, IndexHint, StatementStats

HIGH_MS_PER_MIN = 1_000.0  # a second of someone's waiting every minute
MEDIUM_MS_PER_MIN = 100.0
SEVERITIES = ("critical", "high", "medium", "low", "info")
# Trace findings that describe the instrumentation, not the users' time.
HEALTH_KINDS = frozenset({"orphan_span", "missing_db_spans", "clock_skew", "broken_trace"})
_PREREQUISITES = ("missing_extension", "extension_not_loaded", "missing_privilege")


def round_down(value: float) -> float:
    """To the microsecond, downwards: a figure shown as measured never rounds past what was measured."""
    return math.floor(value * 1000.0) / 1000.0


def severity_for(ms_per_min: Optional[float], floor: str = "low") -> str:
    """``high`` from 1 s of users' time per minute, ``medium`` from 100 ms, else ``low``; at least ``floor``."""
    value = ms_per_min or 0.0
    level = "high" if value >= HIGH_MS_PER_MIN else "medium" if value >= MEDIUM_MS_PER_MIN else "low"
    return min(level, floor, key=SEVERITIES.index)


# --------------------------------------------------------------------------- traces report --dsn


@dataclass(frozen=True)
class DatabaseRead:
    database: str
    figures: dict[str, DatabaseFigures]  # by fingerprint
    advice: dict[str, IndexHint]  # by fingerprint
    notes: tuple[str, ...]  # what kept us from reading or advising, with what to do


def read_database(dsn: Optional[str], advise_for: Sequence[str] = ()) -> DatabaseRead:
    """pg_stat_statements' figures of one database, and index advice for ``advise_for`` when given."""
    from takealook.analyzers.db.connection import connect
    from takealook.analyzers.db.statements import statement_report
    from takealook.sqltext import to_dollar_params

    with connect(dsn) as session:
        report = statement_report(session)
        notes = tuple(f"{session.display}: {f.title}; {f.fix}" if f.fix else f"{session.display}: {f.title}"
                      for f in report.findings if f.kind in _PREREQUISITES)
        figures = figures_by_fingerprint(session.database, report.all)
        advice: dict[str, IndexHint] = {}
        if advise_for:
            from takealook.analyzers.db.index_advice import advise

            found = advise(session, [to_dollar_params(q) for q in advise_for], statements=report.all)
            advice = hints_by_fingerprint(found)
            notes += tuple(f"{session.display}: {f.title}" for f in found.findings if f.kind not in _PREREQUISITES)
        return DatabaseRead(session.database, figures, advice, notes)


def figures_by_fingerprint(database: str, stats: Iterable) -> dict[str, DatabaseFigures]:
    """``StatementStat`` rows added up per fingerprint (one statement run by several roles is one row each)."""
    sums: dict[str, list] = {}
    for stat in stats:
        if not stat.fingerprint:
            continue
        entry = sums.setdefault(stat.fingerprint, [0, 0.0, 0, 0, 0])
        entry[0] += stat.calls
        entry[1] += stat.total_ms
        entry[2] += stat.rows
        entry[3] += stat.shared_blks_hit
        entry[4] += stat.shared_blks_read
    return {
        key: DatabaseFigures(database, calls, round_down(total), round(total / calls, 3) if calls else 0.0,
                             rows, hit, read)
        for key, (calls, total, rows, hit, read) in sums.items()
    }


def hints_by_fingerprint(advice) -> dict[str, IndexHint]:
    """The best suggested index per statement fingerprint, from an ``IndexAdvice``."""
    hints: dict[str, IndexHint] = {}
    for index in advice.indexes:
        for effect in index.statements:
            if not effect.fingerprint:
                continue
            known = hints.get(effect.fingerprint)
            if known is None or (effect.saving_pct or 0) > (known.saving_pct or 0):
                hints[effect.fingerprint] = IndexHint(index.create_sql, effect.saving_pct, index.verified)
    return hints


def join_statements(statements: Sequence[StatementStats], reads: Sequence[DatabaseRead]) -> list[StatementStats]:
    """The traced statements with pg_stat_statements' figures and index advice where a fingerprint matches.

    When several databases run the statement, the one the span named (``db.name``) wins.
    """
    out = []
    for row in statements:
        matches = [read for read in reads if row.fingerprint and (row.fingerprint in read.figures
                                                                  or row.fingerprint in read.advice)]
        same_db = [read for read in matches if read.database in row.databases]
        read = (same_db or matches or [None])[0]
        if read is None:
            out.append(row)
            continue
        out.append(replace(row, pg_stat_statements=read.figures.get(row.fingerprint),
                           index_advice=read.advice.get(row.fingerprint) or row.index_advice))
    return out


# --------------------------------------------------------------------------- index impact


@dataclass(frozen=True)
class StatementImpact:
    """One statement an advised index serves, with the figures its estimate is made of."""

    fingerprint: Optional[str]
    query: str
    saving_pct: Optional[float]  # the planner's predicted cost reduction (HypoPG)
    traced_calls: int  # calls the traces saw in the window
    pgss_calls: Optional[int]  # pg_stat_statements' calls over its own period
    pgss_mean_ms: Optional[float]  # its mean execution time
    calls_counted: int  # min(traced_calls, pgss_calls): pg_stat_statements vouches for no more
    measured_ms: float  # pgss_mean_ms x calls_counted: the statement's execution time in the window
    predicted_ms: float  # measured_ms x saving, never above measured_ms (an estimate)


@dataclass(frozen=True)
class IndexImpact:
    database: Optional[str]
    statements: tuple[StatementImpact, ...]
    window_minutes: Optional[float]  # the traces' window; None when no trace saw the statements
    measured_ms: float
    predicted_ms: float
    impact_ms_per_min: Optional[float]  # predicted_ms per minute of the window (None: not seen in traces)
    period_ms_per_min: Optional[float]  # without traces: the advice's benefit per minute of pgss's period
    severity: str
    estimated: bool = True  # always: a planner's prediction, not a measurement


def index_impact(index, database: Optional[str], traced: dict[str, StatementStats],
                 pgss: dict[str, DatabaseFigures], window_minutes: Optional[float],
                 pgss_period_s: Optional[float]) -> IndexImpact:
    """The predicted saving of ``index`` (a ``SuggestedIndex``) in the traces' window, from measured time."""
    rows = []
    for effect in index.statements:
        seen = traced.get(effect.fingerprint or "")
        figures = pgss.get(effect.fingerprint or "")
        if seen is None:
            continue
        traced_calls = seen.calls
        mean = figures.mean_exec_ms if figures is not None else None
        counted = min(traced_calls, figures.calls) if figures is not None else 0
        # mean x calls, as the share of pg_stat_statements' own total (no rounding drift past it)
        measured = figures.total_exec_ms * counted / figures.calls if figures is not None and figures.calls else 0.0
        ratio = min(max((effect.saving_pct or 0.0) / 100.0, 0.0), 1.0)
        rows.append(StatementImpact(effect.fingerprint, effect.query, effect.saving_pct, traced_calls,
                                    figures.calls if figures else None, mean, counted, round_down(measured),
                                    round_down(min(measured * ratio, measured))))
    measured = round_down(sum(r.measured_ms for r in rows))
    predicted = round_down(min(sum(r.predicted_ms for r in rows), measured))
    period_rate = None
    if pgss_period_s:
        period_rate = round(index.benefit_ms / (pgss_period_s / 60.0), 3) if pgss_period_s >= 1 else None
    if rows and window_minutes:
        rate = round(predicted / window_minutes, 3)
        return IndexImpact(database, tuple(rows), window_minutes, measured, predicted, rate, period_rate,
                           severity_for(rate))
    severity = severity_for(period_rate) if period_rate is not None else "medium"
    return IndexImpact(database, tuple(rows), None, measured, predicted, None, period_rate, severity)


# --------------------------------------------------------------------------- db audit


def audit_findings(findings: list, advice, statements, pgss_period_s: Optional[float]) -> list:
    """A ``missing_index`` finding per advised index; slow statements and scanned tables point at it."""
    from takealook.analyzers.db.findings import Finding

    by_fingerprint: dict[str, Any] = {}
    by_table: dict[str, Any] = {}
    total_ms = statements.total_ms if statements else 0.0
    out = []
    for index in advice.indexes:
        for effect in index.statements:
            if effect.fingerprint:
                by_fingerprint.setdefault(effect.fingerprint, index)
        by_table.setdefault(index.table, index)
        impact = index_impact(index, None, {}, {}, None, pgss_period_s)
        out.append(_missing_index(Finding, index, impact, total_ms, pgss_period_s))
    for finding in findings:
        data = finding.data or {}
        index = None
        if finding.kind in ("slow_statement", "costly_statement"):
            index = by_fingerprint.get(data.get("fingerprint") or "")
        elif finding.kind == "seq_scan_heavy":
            index = by_table.get(data.get("table") or "")
        out.append(replace(finding, fix=index.create_sql) if index else finding)
    return out


def _missing_index(finding_type, index, impact: IndexImpact, total_ms: float, period_s: Optional[float]):
    share = 100.0 * index.benefit_ms / total_ms if total_ms else 0.0
    best = max((e.saving_pct or 0.0 for e in index.statements), default=0.0)
    proof = (f"HypoPG: plan cost falls by up to {best:.0f}%" if index.verified
             else "not verified with HypoPG (estimated from the parse tree and the current plan)")
    rate = impact.period_ms_per_min
    saved = (f"an estimated {rate:,.1f} ms of statement time saved per minute" if rate is not None
             else f"an estimated {index.benefit_ms:,.0f} ms of statement time saved")
    return finding_type(
        "missing_index", impact.severity, f"index {index.table} ({', '.join(index.definitions or index.columns)})",
        detail=f"serves {len(index.statements)} statement(s), {share:.1f}% of statement time: {saved} "
               f"since pg_stat_statements was reset; {proof}",
        fix=index.create_sql, subject=index.table,
        data={"table": index.table, "columns": list(index.columns), "verified": index.verified,
              "size_bytes": index.size_bytes, "benefit_ms": index.benefit_ms,
              "benefit_ms_per_min": rate, "statements_period_s": None if period_s is None else round(period_s),
              "fingerprints": [e.fingerprint for e in index.statements],
              "queryids": [e.queryid for e in index.statements]})


# --------------------------------------------------------------------------- takealook report


@dataclass(frozen=True)
class JoinedFinding:
    """A finding of the traces or of a database audit, with what it costs users and how bad it is."""

    kind: str
    source: str  # "traces" | "database"
    severity: str
    impact_ms_per_min: Optional[float]  # users' time per minute of traffic; None: no trace saw it
    estimated: bool  # the impact is a prediction (an index's saving), not time the traces measured
    service: Optional[str]
    database: Optional[str]
    endpoints: tuple[str, ...]  # entry endpoints whose users wait, as the traces name them
    statement: Optional[str]
    fingerprint: Optional[str]
    fix: Optional[str]  # SQL or a step, when the analyzer has one
    trace_ids: tuple[str, ...]
    pg_stats: Any = None  # the db analyzer's StatementStat of the statement
    index: Any = None  # the db analyzer's SuggestedIndex that fixes it
    index_impact: Optional[IndexImpact] = None
    detail: Any = None  # the source's own finding (a trace finding, a db Finding, a SuggestedIndex)


@dataclass(frozen=True)
class Joined:
    findings: tuple[JoinedFinding, ...]
    notes: tuple[str, ...]


def combine(traces=None, audit=None) -> Joined:
    """Every finding of a ``TraceReport`` and an ``AuditReport`` (either may be None), joined by fingerprint.

    Each advised index becomes one finding with its estimated impact; a trace's
    slow-statement finding for a statement an index serves is folded into it
    (one problem, one line); a database finding for a statement the traces saw
    is told by the trace or index finding; the same finding on several
    databases of one server is one finding.
    """
    sources = _Sources(traces, audit)
    items = [_index_finding(sources, database, index) for database in sources.audited
             for index in getattr(database.index_advice, "indexes", ()) or ()]
    covered = {e.fingerprint for item in items for e in item.index.statements if e.fingerprint}
    items += [_trace_finding(sources, f) for f in getattr(traces, "findings", ())
              if not (f.kind == "slow_statement" and (getattr(f, "fingerprint", None) or None) in covered)]
    items += _database_findings(sources)
    return Joined(tuple(items), tuple(sources.notes))


class _Sources:
    """The lookups every part of the join needs, by fingerprint."""

    def __init__(self, traces, audit):
        self.notes: list[str] = []
        totals = getattr(traces, "totals", None)
        self.window_minutes = (getattr(totals, "window_minutes", 0.0) or None) if traces is not None else None
        self.traced = {s.fingerprint: s for s in getattr(traces, "statements", ()) if s.fingerprint}
        self.audited = []
        self.pg_stats: dict = {}  # fingerprint -> StatementStat (the first database that has it)
        self.figures: dict = {}  # database -> fingerprint -> DatabaseFigures
        for database in getattr(audit, "databases", ()):
            if database.error:
                self.notes.append(f"database {database.dsn} was not audited: {database.error}")
                continue
            self.audited.append(database)
            stats = getattr(database.statements, "all", ()) or ()
            for stat in stats:
                if stat.fingerprint:
                    self.pg_stats.setdefault(stat.fingerprint, stat)
            self.figures[database.database] = figures_by_fingerprint(database.database or "", stats)


def _index_finding(sources: _Sources, database, index) -> JoinedFinding:
    period = getattr(database.statements, "period_s", None)
    impact = index_impact(index, database.database, sources.traced, sources.figures.get(database.database, {}),
                          sources.window_minutes, period)
    endpoints: list[str] = []
    trace_ids: list[str] = []
    for effect in index.statements:
        seen = sources.traced.get(effect.fingerprint or "")
        if seen is None:
            continue
        endpoints += [share.endpoint for share in seen.endpoints if share.endpoint not in endpoints]
        trace_ids += [t for t in seen.trace_ids if t not in trace_ids]
    first = next((e for e in index.statements if e.fingerprint in sources.traced), None) or \
        (index.statements[0] if index.statements else None)
    statement = sources.traced[first.fingerprint].statement if first is not None and \
        first.fingerprint in sources.traced else (first.query if first is not None else None)
    fingerprint = first.fingerprint if first is not None else None
    return JoinedFinding(
        kind="missing_index", source="database", severity=impact.severity,
        impact_ms_per_min=impact.impact_ms_per_min, estimated=True, service=None, database=database.database,
        endpoints=tuple(endpoints), statement=statement, fingerprint=fingerprint, fix=index.create_sql,
        trace_ids=tuple(trace_ids[:5]), pg_stats=sources.pg_stats.get(fingerprint), index=index,
        index_impact=impact, detail=index)


def _trace_finding(sources: _Sources, f) -> JoinedFinding:
    fingerprint = getattr(f, "fingerprint", None) or None
    endpoint = getattr(f, "endpoint", None)
    impact = float(f.impact_ms_per_min)
    if f.kind in HEALTH_KINDS:
        severity = "low"
    else:  # a failing request is worth a look however little time it costs
        severity = severity_for(impact, floor="medium" if f.kind == "error" else "low")
    return JoinedFinding(
        kind=f.kind, source="traces", severity=severity, impact_ms_per_min=impact, estimated=False,
        service=getattr(f, "service", None), database=None, endpoints=(endpoint,) if endpoint else (),
        statement=getattr(f, "statement", None), fingerprint=fingerprint, fix=None,
        trace_ids=tuple(getattr(f, "trace_ids", ())[:5]), pg_stats=sources.pg_stats.get(fingerprint), detail=f)


def _database_findings(sources: _Sources) -> list[JoinedFinding]:
    items: list[JoinedFinding] = []
    same: dict = {}
    for database in sources.audited:
        for f in database.findings:
            fingerprint = (f.data or {}).get("fingerprint")
            if f.kind == "missing_index":
                continue  # one finding per advised index, with its statements (``_index_finding``)
            if f.kind in ("slow_statement", "costly_statement") and fingerprint in sources.traced:
                continue  # the trace finding tells it, with its cost to users
            key = (f.kind, f.title, f.fix)
            if key in same:  # the same server setting, seen through each of its databases
                first = same[key]
                items[first] = replace(items[first], database=f"{items[first].database}, {database.database}")
                continue
            same[key] = len(items)
            items.append(JoinedFinding(
                kind=f.kind, source="database", severity=f.severity, impact_ms_per_min=None, estimated=False,
                service=None, database=database.database, endpoints=(), statement=(f.data or {}).get("query"),
                fingerprint=fingerprint, fix=f.fix, trace_ids=(), pg_stats=sources.pg_stats.get(fingerprint),
                detail=f))
    return items
