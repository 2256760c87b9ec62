"""One report from everything takealook knows, findings ranked by what they cost users.

``build(traces, audit, comparison)`` joins the three sources:

- trace findings (N+1, sequential calls, slow statements, errors, ...) carry
  ``impact_ms_per_min``: milliseconds of user-visible time per minute of traffic;
- each index the database audit advises becomes a finding whose impact is the
  time its statements took in the traces per minute times the saving HypoPG
  predicts; the statements are matched by pglast fingerprint, so the same
  statement written ``= %s`` by the app and ``= $1`` in pg_stat_statements
  meets; a trace's slow-statement finding for a statement an index fixes is
  folded into the index finding (one problem, one line);
- every finding gets its evidence: the endpoint's slowest trace (a waterfall
  across the apps), the statement's pg_stat_statements figures, the suggested
  index and its predicted saving, and the measured before/after of the
  endpoints it touches when a load comparison was given.

Findings seen in traces rank by impact; the others (an unused index, a
database open to the internet) follow by severity. ``document.py``-style
rendering lives in ``combined_doc.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as _replace
from typing import Any, Optional

SCHEMA_VERSION = 1
SEVERITIES = ("critical", "high", "medium", "low", "info")
TRACE_SEVERITY = {"error": "high", "n_plus_one": "high", "sequential_calls": "medium", "repeated_http": "medium",
                  "public_address_call": "high", "slow_statement": "medium"}


@dataclass(frozen=True)
class Ranked:
    rank: int
    kind: str
    title: str
    source: str  # "traces" | "database"
    severity: str
    impact_ms_per_min: Optional[float]  # None: not seen in traces
    service: Optional[str]
    database: Optional[str]
    endpoints: tuple[str, ...]  # entry endpoints whose users wait, as traces name them
    statement: Optional[str]
    fingerprint: Optional[str]
    fix: Optional[str]
    trace_ids: tuple[str, ...]
    pg_stats: Any = None  # analyzers.db StatementStat of the statement
    index: Any = None  # analyzers.db SuggestedIndex that fixes it
    waterfall: Any = None  # analyzers.traces SlowTrace of the (first) endpoint
    measured: tuple = ()  # loadtests EndpointComparison of the endpoints
    detail: Any = None  # the source's own finding object


@dataclass(frozen=True)
class CombinedReport:
    schema_version: int
    findings: tuple[Ranked, ...]
    traces: Any = None  # TraceReport
    audit: Any = None  # AuditReport
    comparison: Any = None  # loadtests Comparison
    applied_index: Optional[str] = None
    notes: tuple[str, ...] = ()


def build(traces=None, audit=None, comparison=None, applied_index: Optional[str] = None) -> CombinedReport:
    join = _Join(traces, audit, comparison)
    items = join.index_findings()
    covered = {fp for item in items for fp in _fingerprints(item.index)}
    items += join.trace_findings(skip_fingerprints=covered)
    items += join.database_findings()
    ordered = sorted(items, key=_order)
    ranked = tuple(_with_rank(item, number) for number, item in enumerate(ordered, 1))
    return CombinedReport(SCHEMA_VERSION, ranked, traces, audit, comparison, applied_index, tuple(join.notes))


def _order(item: Ranked):
    # What costs users time comes first, by how much; then the rest (an unused index, an open
    # database, a health note that costs nobody a millisecond) by severity.
    costly = (item.impact_ms_per_min or 0.0) > 0
    return (0 if costly else 1, -(item.impact_ms_per_min or 0.0), SEVERITIES.index(item.severity))


def _with_rank(item: Ranked, rank: int) -> Ranked:
    return _replace(item, rank=rank)


def _fingerprints(index) -> set:
    return {s.fingerprint for s in getattr(index, "statements", ()) if s.fingerprint}


def load_name(endpoint: str) -> str:
    """A trace endpoint ("GET /orders/<int:id>") as load runs name it ("GET /orders/{id}")."""
    from takealook.loadtests.generate import route_template

    method, _, route = endpoint.partition(" ")
    return f"{method} {route_template(route)}" if route else endpoint


class _Join:
    """Lookups across the sources, by fingerprint and by endpoint."""

    def __init__(self, traces, audit, comparison):
        self.traces, self.audit, self.comparison = traces, audit, comparison
        self.notes: list[str] = []
        self.minutes = max(getattr(getattr(traces, "totals", None), "window_minutes", 0.0) or 0.0, 1e-9)
        self.statements = {s.fingerprint: s for s in getattr(traces, "statements", ()) if s.fingerprint}
        self.slowest = {}
        for slow in getattr(traces, "slowest", ()):
            self.slowest.setdefault(slow.endpoint, slow)
        self.pg_stats: dict = {}
        for database in getattr(audit, "databases", ()):
            report = database.statements
            for stat in getattr(report, "all", ()) or ():
                if stat.fingerprint:
                    self.pg_stats.setdefault(stat.fingerprint, stat)
        self.measured = {e.name: e for e in getattr(comparison, "endpoints", ())}

    def measured_for(self, endpoints) -> tuple:
        found = []
        for endpoint in endpoints:
            comparison = self.measured.get(load_name(endpoint)) or self.measured.get(endpoint)
            if comparison is not None and comparison not in found:
                found.append(comparison)
        return tuple(found)

    def waterfall_for(self, endpoints):
        for endpoint in endpoints:
            if endpoint in self.slowest:
                return self.slowest[endpoint]
        return None

    # -- traces
    def trace_findings(self, skip_fingerprints: set) -> list[Ranked]:
        from takealook.report.traces import advice, describe

        items = []
        for f in getattr(self.traces, "findings", ()):
            fingerprint = getattr(f, "fingerprint", None) or None
            if f.kind == "slow_statement" and fingerprint in skip_fingerprints:
                continue
            endpoint = getattr(f, "endpoint", None)
            endpoints = (endpoint,) if endpoint else ()
            items.append(Ranked(
                rank=0, kind=f.kind, title=describe(f), source="traces",
                severity=TRACE_SEVERITY.get(f.kind, "low"), impact_ms_per_min=float(f.impact_ms_per_min),
                service=getattr(f, "service", None), database=None, endpoints=endpoints,
                statement=getattr(f, "statement", None), fingerprint=fingerprint, fix=advice(f.kind) or None,
                trace_ids=tuple(getattr(f, "trace_ids", ())[:5]), pg_stats=self.pg_stats.get(fingerprint),
                waterfall=self.waterfall_for(endpoints), measured=self.measured_for(endpoints), detail=f))
        return items

    # -- database: advised indexes
    def index_findings(self) -> list[Ranked]:
        items = []
        for database in getattr(self.audit, "databases", ()):
            advice = database.index_advice
            for index in getattr(advice, "indexes", ()) or ():
                items.append(self._index_item(database, index))
        return items

    def _index_item(self, database, index) -> Ranked:
        impact = 0.0
        seen = False
        endpoints: list[str] = []
        trace_ids: list[str] = []
        statement = None
        fingerprint = None
        for effect in index.statements:
            stats = self.statements.get(effect.fingerprint)
            if stats is None:
                continue
            seen = True
            impact += stats.total_ms / self.minutes * (effect.saving_pct or 0.0) / 100.0
            if statement is None:
                statement, fingerprint = stats.statement, effect.fingerprint
            for share in stats.endpoints:
                name = getattr(share, "endpoint", None) or str(share)
                if name not in endpoints:
                    endpoints.append(name)
            trace_ids += [t for t in stats.trace_ids if t not in trace_ids]
        first = index.statements[0] if index.statements else None
        if statement is None and first is not None:
            statement, fingerprint = first.query, first.fingerprint
        saving = max((s.saving_pct or 0.0 for s in index.statements), default=0.0)
        title = (f"missing index on {index.table} ({', '.join(index.columns)}): "
                 f"{saving:.0f}% less cost for {len(index.statements)} statement(s)"
                 + ("" if index.verified else " (not verified: HypoPG unavailable)"))
        return Ranked(
            rank=0, kind="missing_index", title=title, source="database", severity="high" if seen else "medium",
            impact_ms_per_min=impact if seen else None, service=None, database=database.database,
            endpoints=tuple(endpoints), statement=statement, fingerprint=fingerprint, fix=index.create_sql,
            trace_ids=tuple(trace_ids[:5]), pg_stats=self.pg_stats.get(fingerprint), index=index,
            waterfall=self.waterfall_for(endpoints), measured=self.measured_for(endpoints), detail=index)

    # -- database: everything else
    def database_findings(self) -> list[Ranked]:
        """Findings of the audits that no trace tells better; one line for the same finding on several databases."""
        items: list[Ranked] = []
        same: dict = {}
        for database in getattr(self.audit, "databases", ()):
            if database.error:
                self.notes.append(f"database {database.dsn} was not audited: {database.error}")
                continue
            for f in database.findings:
                if f.kind in ("missing_index", "slow_statement", "costly_statement") and \
                        _fingerprint_of(f) in self.statements:
                    continue  # seen in traces: the trace or index finding tells it with its cost to users
                if f.kind == "missing_index":
                    continue  # told by index_findings, with its statements
                key = (f.kind, f.title, f.fix)
                if key in same:  # e.g. the same server setting seen through each of its databases
                    first = same[key]
                    items[first] = _replace(items[first], database=f"{items[first].database}, {database.database}")
                    continue
                same[key] = len(items)
                items.append(Ranked(
                    rank=0, kind=f.kind, title=f.title, source="database", severity=f.severity,
                    impact_ms_per_min=None, service=None, database=database.database, endpoints=(),
                    statement=(f.data or {}).get("query"), fingerprint=_fingerprint_of(f), fix=f.fix,
                    trace_ids=(), pg_stats=self.pg_stats.get(_fingerprint_of(f)), detail=f))
        return items


def _fingerprint_of(finding) -> Optional[str]:
    data = getattr(finding, "data", None) or {}
    return data.get("fingerprint")


def summary_lines(report: CombinedReport, top: int = 3) -> list[str]:
    """What the terminal says after the report is written."""
    from takealook.report.render import fmt_value

    lines = [f"{len(report.findings)} findings; the top {min(top, len(report.findings))}:"]
    for item in report.findings[:top]:
        cost = f"{fmt_value(item.impact_ms_per_min)} ms of users' time per minute" \
            if item.impact_ms_per_min is not None else item.severity
        lines.append(f"  {item.rank}. [{cost}] {item.title}")
    if report.applied_index:
        lines.append(f"applied: {report.applied_index}")
        applied = next((f for f in report.findings if f.index is not None and
                        f.index.create_sql.strip().rstrip(";") == report.applied_index.strip().rstrip(";")), None)
        for comparison in applied.measured if applied else ():
            p95 = comparison.changes.get("p95")
            change = f" (p95 {p95.change_pct:+.0f}%)" if p95 is not None and p95.change_pct is not None else ""
            lines.append(f"  measured on {comparison.name}: {comparison.verdict}{change}")
    return lines
