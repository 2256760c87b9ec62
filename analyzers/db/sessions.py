"""Sessions: connections against max_connections, idle-in-transaction, long-running statements.

``session_health(session, thresholds)`` reads ``pg_stat_activity`` (client
backends only, our own connection excluded) and returns a ``SessionsReport``:

- ``connections_near_limit``: client connections at ``connections_ratio`` of
  what ``max_connections`` leaves after the reserved superuser slots;
- ``idle_in_transaction``: a session that opened a transaction and has been
  idle in it for ``idle_in_transaction_s``; it holds locks and snapshots that
  stop vacuum;
- ``long_running_statement``: a statement active for ``long_running_s``.

A role without ``pg_read_all_stats`` sees other roles' sessions without their
state or query; the report counts them and the finding says what to grant.
Statement texts are shortened; values in them are whatever the application sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from takealook.analyzers.db.catalog import quote_ident
from takealook.analyzers.db.connection import Session
from takealook.analyzers.db.findings import Finding
from takealook.analyzers.db.options import Thresholds

_ACTIVITY_SQL = """
SELECT pid, usename AS user, application_name AS application, host(client_addr) AS client, state,
       extract(epoch FROM now() - state_change)::float8 AS state_age_s,
       extract(epoch FROM now() - query_start)::float8 AS query_age_s,
       extract(epoch FROM now() - xact_start)::float8 AS transaction_age_s,
       left(query, 300) AS query
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
ORDER BY pid
"""

_LIMITS_SQL = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS reserved
"""


@dataclass(frozen=True)
class SessionInfo:
    pid: int
    user: str | None
    application: str | None
    client: str | None
    state: str | None
    state_age_s: float | None
    query_age_s: float | None
    transaction_age_s: float | None
    query: str | None


@dataclass(frozen=True)
class SessionsReport:
    connections: int
    max_connections: int
    active: int
    idle_in_transaction: int
    hidden: int  # sessions whose state this role may not see
    findings: tuple[Finding, ...]


def session_health(session: Session, thresholds: Thresholds | None = None) -> SessionsReport:
    t = thresholds or Thresholds()
    sessions = [SessionInfo(**row) for row in session.query(_ACTIVITY_SQL)]
    limits = session.query_one(_LIMITS_SQL)
    session.end()
    usable = max(1, limits["max_connections"] - limits["reserved"])
    total = len(sessions) + 1  # and ours
    idle = [s for s in sessions if (s.state or "").startswith("idle in transaction")]
    hidden = sum(1 for s in sessions if s.state is None)
    findings: list[Finding] = []
    if total >= t.connections_ratio * usable:
        findings.append(Finding(
            "connections_near_limit", "high", f"{total} of {usable} connections in use",
            detail="new connections are refused at the limit; each one costs server memory",
            fix="put a pooler (PgBouncer, transaction mode) in front, or lower each app's pool size",
            subject=session.database, data={"connections": total, "max_connections": limits["max_connections"]}))
    for s in idle:
        if (s.state_age_s or 0) >= t.idle_in_transaction_s:
            findings.append(_idle(s))
    for s in sessions:
        if s.state == "active" and (s.query_age_s or 0) >= t.long_running_s:
            findings.append(_long(s))
    if hidden:
        findings.append(Finding(
            "missing_privilege", "info", f"{hidden} sessions of other roles are hidden",
            fix=f"GRANT pg_read_all_stats TO {quote_ident(session.user)};", subject=session.user,
            data={"privilege": "pg_read_all_stats", "hidden_sessions": hidden}))
    active = sum(1 for s in sessions if s.state == "active") + 1
    return SessionsReport(total, limits["max_connections"], active, len(idle), hidden, tuple(findings))


def _who(s: SessionInfo) -> dict:
    return {"pid": s.pid, "user": s.user, "application": s.application, "client": s.client, "query": s.query}


def _idle(s: SessionInfo) -> Finding:
    return Finding(
        "idle_in_transaction", "high" if (s.state_age_s or 0) >= 600 else "medium",
        f"pid {s.pid} ({s.application or s.user}) idle in a transaction for {s.state_age_s:,.0f} s",
        detail="it holds its locks and its snapshot, so vacuum cannot clean behind it; last statement: "
               f"{(s.query or '').strip()[:120]}",
        fix=f"SELECT pg_terminate_backend({s.pid}); then fix the code path that leaves the transaction open, "
            "and set idle_in_transaction_session_timeout = '60s' for the app role",
        subject=f"pid {s.pid}", data={**_who(s), "idle_s": round(s.state_age_s or 0, 1)})


def _long(s: SessionInfo) -> Finding:
    return Finding(
        "long_running_statement", "medium", f"pid {s.pid} has run one statement for {s.query_age_s:,.0f} s",
        detail=(s.query or "").strip()[:200],
        fix=f"SELECT pg_cancel_backend({s.pid}); and set a statement_timeout for the app role",
        subject=f"pid {s.pid}", data={**_who(s), "running_s": round(s.query_age_s or 0, 1)})
