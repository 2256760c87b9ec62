"""The database audit: ``takealook db audit``, and the API the combined report calls.

Use::

    from takealook.analyzers.db.audit import audit_database, audit_databases
    audit = audit_database("postgresql://app@db/orders", AuditOptions())   # raises on connection failure
    report = audit_databases([dsn1, dsn2], AuditOptions())                 # never raises per DSN

``audit_database`` connects read-only (see ``connection``) and runs, each on
its own short read-only transaction: the statements that cost most
(``statements``), the index advice on that workload (``index_advice``), index
health, table health, sessions and exposure. Every part returns typed
``Finding``s; a part that fails (a timeout, a privilege) becomes a
``check_failed`` finding and the others still run. ``DatabaseAudit.findings``
is every finding, most severe first; a slow statement an advised index serves
gets that index's CREATE INDEX as its fix.

``audit_databases`` audits each DSN in turn; a DSN that cannot be reached
(refused, wrong password, not PostgreSQL, bad DSN) gets a ``DatabaseAudit``
with ``error`` set (one line, password masked) and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import psycopg

from takealook.analyzers.db.connection import Session, connect, mask_dsn
from takealook.analyzers.db.exposure import exposure
from takealook.analyzers.db.findings import Finding, check_failed, ordered
from takealook.analyzers.db.index_advice import IndexAdvice, SuggestedIndex, advise
from takealook.analyzers.db.index_health import index_health
from takealook.analyzers.db.options import AuditOptions
from takealook.analyzers.db.sessions import SessionsReport, session_health
from takealook.analyzers.db.statements import StatementReport, statement_report
from takealook.analyzers.db.tables import TablesReport, table_health
from takealook.errors import TakealookError

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DatabaseAudit:
    dsn: str  # masked
    database: str | None = None
    server_version: str | None = None
    user: str | None = None
    error: str | None = None
    findings: tuple[Finding, ...] = ()
    statements: StatementReport | None = None
    index_advice: IndexAdvice | None = None
    tables: TablesReport | None = None
    sessions: SessionsReport | None = None

    @property
    def audited(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class AuditReport:
    databases: tuple[DatabaseAudit, ...]

    @property
    def audited(self) -> int:
        return sum(1 for d in self.databases if d.audited)


def audit_databases(dsns: Sequence[str | None], options: AuditOptions | None = None,
                    progress: Progress | None = None) -> AuditReport:
    out = []
    for dsn in dsns or [None]:
        try:
            out.append(audit_database(dsn, options, progress))
        except TakealookError as error:
            shown = mask_dsn(dsn)
            message = str(error)
            if message.startswith(shown + ": "):
                message = message[len(shown) + 2:]
            out.append(DatabaseAudit(dsn=shown, error=message))
    return AuditReport(tuple(out))


def audit_database(dsn: str | None, options: AuditOptions | None = None,
                   progress: Progress | None = None) -> DatabaseAudit:
    options = options or AuditOptions()
    with connect(dsn, options.connect) as session:
        return _audit(session, options, progress)


def _audit(session: Session, options: AuditOptions, progress: Progress | None) -> DatabaseAudit:
    findings: list[Finding] = []

    def run(name: str, check, default=None):
        if progress:
            progress(name, 0, 1)
        try:
            return check()
        except psycopg.Error as error:
            findings.append(check_failed(name, session.describe_error(error)))
            return default
        finally:
            session.end()

    statements = run("statements", lambda: statement_report(session, options.top, options.thresholds))
    advice = None
    if options.advise and statements is not None:
        advice = run("index advice", lambda: advise(session, (), options.index, statements.all, progress))
    tables = run("tables", lambda: table_health(session, options.thresholds))
    sessions = run("sessions", lambda: session_health(session, options.thresholds))
    findings += run("index health", lambda: index_health(session), [])
    findings += run("exposure", lambda: exposure(session), [])
    for part in (statements, advice, tables, sessions):
        findings += list(getattr(part, "findings", ()) or ())
    if advice is not None:
        findings = _join_advice(findings, advice, statements)
    return DatabaseAudit(dsn=session.display, database=session.database, server_version=session.server_version,
                         user=session.user, findings=ordered(findings), statements=statements,
                         index_advice=advice, tables=tables, sessions=sessions)


def _join_advice(findings: list[Finding], advice: IndexAdvice, statements: StatementReport | None) -> list[Finding]:
    """A missing_index finding per advised index; slow statements and scanned tables point at it."""
    by_fingerprint: dict[str, SuggestedIndex] = {}
    by_table: dict[str, SuggestedIndex] = {}
    total_ms = statements.total_ms if statements else 0.0
    out = []
    for index in advice.indexes:
        for effect in index.statements:
            if effect.fingerprint:
                by_fingerprint.setdefault(effect.fingerprint, index)
        by_table.setdefault(index.table, index)
        out.append(_missing_index(index, total_ms))
    for finding in findings:
        data = finding.data or {}
        index = by_fingerprint.get(data.get("fingerprint") or "") if finding.kind in (
            "slow_statement", "costly_statement") else by_table.get(data.get("table") or "") if (
            finding.kind == "seq_scan_heavy") else None
        out.append(replace(finding, fix=index.create_sql) if index else finding)
    return out


def _missing_index(index: SuggestedIndex, total_ms: float) -> Finding:
    share = 100.0 * index.benefit_ms / total_ms if total_ms else 0.0
    severity = "high" if share >= 10 else "medium" if share >= 1 or not total_ms else "low"
    best = max((e.saving_pct or 0.0 for e in index.statements), default=0.0)
    proof = (f"HypoPG: plan cost falls by up to {best:.0f}%" if index.verified
             else "not verified with HypoPG (estimated from the parse tree and the current plan)")
    return Finding(
        "missing_index", severity, f"index {index.table} ({', '.join(index.definitions or index.columns)})",
        detail=f"serves {len(index.statements)} statement(s), {share:.1f}% of statement time; {proof}",
        fix=index.create_sql, subject=index.table,
        data={"table": index.table, "columns": list(index.columns), "verified": index.verified,
              "size_bytes": index.size_bytes, "benefit_ms": index.benefit_ms,
              "fingerprints": [e.fingerprint for e in index.statements],
              "queryids": [e.queryid for e in index.statements]})
