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
is every finding, most severe first; each advised index is a ``missing_index``
finding and a slow statement it serves gets its CREATE INDEX as the fix
(``takealook.analyzers.join.audit_findings``: the one join of statements and
advice).

``audit_databases`` audits each DSN in turn; a DSN that cannot be reached
(refused, wrong password, not PostgreSQL, bad DSN) gets a ``DatabaseAudit``
with ``error`` set (one line, password masked) and the others go on. An
unexpected error (a bug of ours) is caught the same way: in one part it is
that part's ``check_failed`` finding, outside the parts that database's
``error``; the other parts and databases are still audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import psycopg

from takealook.analyzers.db.connection import Session, connect, mask_dsn, mask_secrets, one_line
from takealook.analyzers.db.exposure import exposure
from takealook.analyzers.db.findings import Finding, check_failed, ordered
from takealook.analyzers.db.index_advice import IndexAdvice, advise
from takealook.analyzers.db.index_health import index_health
from takealook.analyzers.db.options import AuditOptions
from takealook.analyzers.db.sessions import SessionsReport, session_health
from takealook.analyzers.db.statements import StatementReport, statement_report
from takealook.analyzers.db.tables import TablesReport, table_health
from takealook.analyzers.join import audit_findings
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
        except Exception as error:  # noqa: BLE001 - one database's failure must not lose the others' sections
            message = mask_secrets(one_line(error), dsn)
            out.append(DatabaseAudit(dsn=mask_dsn(dsn), error=f"unexpected {type(error).__name__}: {message} "
                                                             "(a takealook bug: please report it)"))
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
        except Exception as error:  # noqa: BLE001 - a bug of ours must cost one section, not the audit
            findings.append(check_failed(name, f"unexpected {type(error).__name__}: "
                                               f"{session.describe_error(error)} (a takealook bug: please report it)"))
            return default
        finally:
            session.end()

    statements = run("statements", lambda: statement_report(session, options.top, options.thresholds))
    advice = None
    if options.advise and statements is not None:
        advice = run("index advice", lambda: advise(session, (), options.index, statements.all, progress))
    tables = run("tables", lambda: table_health(session, options.thresholds))
    sessions = run("sessions", lambda: session_health(session, options.thresholds))
    findings += run("index health", lambda: index_health(session, options.thresholds), [])
    findings += run("exposure", lambda: exposure(session), [])
    for part in (statements, advice, tables, sessions):
        findings += list(getattr(part, "findings", ()) or ())
    if advice is not None:
        findings = audit_findings(findings, advice, statements, getattr(statements, "period_s", None))
    return DatabaseAudit(dsn=session.display, database=session.database, server_version=session.server_version,
                         user=session.user, findings=ordered(findings), statements=statements,
                         index_advice=advice, tables=tables, sessions=sessions)
