"""One report from everything takealook knows, findings ranked by what they cost users.

``build(traces, audit, comparison)`` takes the findings the analyzers joined
(``takealook.analyzers.join.combine``: severity and cost to users come from
there, each advised index with its estimated saving from measured statement
time), names each in one line, attaches the evidence the report shows beside it
(the endpoint's slowest trace as a waterfall, the measured before/after of the
endpoints it touches when a load comparison was given) and ranks them: what
costs users time first, by how much; then the rest by severity.
``combined_doc.py`` lays it out.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

SCHEMA_VERSION = 1
SEVERITIES = ("critical", "high", "medium", "low", "info")


@dataclass(frozen=True)
class Ranked:
    rank: int
    kind: str
    title: str
    source: str  # "traces" | "database"
    severity: str
    impact_ms_per_min: Optional[float]  # None: not seen in traces
    estimated: bool  # the impact is a prediction (an index's saving), not measured time
    service: Optional[str]
    database: Optional[str]
    endpoints: tuple[str, ...]  # entry endpoints whose users wait, as traces name them
    statement: Optional[str]
    fingerprint: Optional[str]
    fix: Optional[str]
    trace_ids: tuple[str, ...]
    pg_stats: Any = None  # analyzers.db StatementStat of the statement
    index: Any = None  # analyzers.db SuggestedIndex that fixes it
    index_impact: Any = None  # analyzers.join IndexImpact: the figures of the estimate
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
    traces_comparison: Any = None  # analyzers.traces.compare TracesComparison (--before/--after filters)


def build(traces=None, audit=None, comparison=None, applied_index: Optional[str] = None) -> CombinedReport:
    from takealook.analyzers.join import combine

    joined = combine(traces, audit)
    evidence = _Evidence(traces, comparison)
    items = sorted((evidence.ranked(f) for f in joined.findings), key=_order)
    ranked = tuple(_with_rank(item, number) for number, item in enumerate(items, 1))
    return CombinedReport(SCHEMA_VERSION, ranked, traces, audit, comparison, applied_index, joined.notes)


def _order(item: Ranked):
    # What costs users time comes first, by how much; then the rest (an unused index, an open
    # database, a health note that costs nobody a millisecond) by severity.
    costly = (item.impact_ms_per_min or 0.0) > 0
    return (0 if costly else 1, -(item.impact_ms_per_min or 0.0), SEVERITIES.index(item.severity))


def _with_rank(item: Ranked, rank: int) -> Ranked:
    from dataclasses import replace

    return replace(item, rank=rank)


def load_name(endpoint: str) -> str:
    """A trace endpoint as load runs name it: both are named by ``takealook.routes`` ("GET /orders/{id}")."""
    from takealook.routes import endpoint_name

    method, _, route = endpoint.partition(" ")
    return endpoint_name(method, route) if route else endpoint


class _Evidence:
    """What the report shows beside a finding: a waterfall, measured before/after; and its one-line title."""

    def __init__(self, traces, comparison):
        self.slowest = {}
        for slow in getattr(traces, "slowest", ()):
            self.slowest.setdefault(slow.endpoint, slow)
        self.measured = {e.name: e for e in getattr(comparison, "endpoints", ())}

    def ranked(self, finding) -> Ranked:
        shared = {f.name: getattr(finding, f.name) for f in fields(Ranked) if hasattr(finding, f.name)}
        shared["fix"] = finding.fix or (_advice(finding.kind) if finding.source == "traces" else None) or None
        return Ranked(rank=0, title=_title(finding), waterfall=self.waterfall_for(finding.endpoints),
                      measured=self.measured_for(finding.endpoints), **shared)

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


def _advice(kind: str) -> str:
    from takealook.report.traces import advice

    return advice(kind)


def _title(finding) -> str:
    if finding.kind == "missing_index" and finding.index is not None:
        index = finding.index
        saving = max((s.saving_pct or 0.0 for s in index.statements), default=0.0)
        return (f"missing index on {index.table} ({', '.join(index.columns)}): "
                f"{saving:.0f}% less cost for {len(index.statements)} statement(s)"
                + ("" if index.verified else " (not verified: HypoPG unavailable)"))
    if finding.source == "traces":
        from takealook.report.traces import describe

        return describe(finding.detail)
    return finding.detail.title


def summary_lines(report: CombinedReport, top: int = 3) -> list[str]:
    """What the terminal says after the report is written."""
    from takealook.report.render import fmt_value

    lines = [f"{len(report.findings)} findings; the top {min(top, len(report.findings))}:"]
    for item in report.findings[:top]:
        estimate = "an estimated " if item.estimated else ""
        cost = f"{estimate}{fmt_value(item.impact_ms_per_min)} ms of users' time per minute" \
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
