"""The statements that cost most, from pg_stat_statements.

``statement_report(session, top, thresholds)`` reads pg_stat_statements for
the current database and ranks statements by total time, mean time, calls,
rows, shared blocks read and temp blocks written. Each ``StatementStat``
carries its ``queryid`` and the pglast ``fingerprint`` of its text (the trace
analyzer joins slow spans to these). Our own statements (tagged
``/* takealook */``) are never listed; neither are transaction control and
SET/SHOW, which cost what talking to a database costs.

Column names differ across pg_stat_statements versions (1.8 renamed
``total_time`` to ``total_exec_time`` and added planning time; 1.11 renamed
``blk_read_time`` to ``shared_blk_read_time``), so they are read from the
catalog, not assumed from a version number.

When the extension is missing, not preloaded, or the role cannot see other
users' statements, the report says so with the command to run, and is empty.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Mapping

import psycopg

from takealook.analyzers.db.catalog import quote_ident
from takealook.analyzers.db.connection import TAG, Session
from takealook.analyzers.db.findings import Finding
from takealook.analyzers.db.options import Thresholds
from takealook.analyzers.db.parse import parse_statement
from takealook.sqltext import fingerprint

RANKINGS = {"total_time": "total_ms", "mean_time": "mean_ms", "calls": "calls", "rows": "rows",
            "shared_blocks_read": "shared_blks_read", "temp_blocks_written": "temp_blks_written"}
MAX_ROWS = 5_000  # pg_stat_statements.max's default: the whole view in one read


@dataclass(frozen=True)
class StatementStat:
    queryid: int | None
    query: str
    fingerprint: str | None
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    shared_blks_read: int
    shared_blks_hit: int
    temp_blks_written: int
    blk_read_ms: float | None
    share_pct: float
    toplevel: bool | None


@dataclass(frozen=True)
class StatementReport:
    available: bool
    version: str | None
    total_ms: float
    count: int
    top: Mapping[str, tuple[StatementStat, ...]]
    findings: tuple[Finding, ...]
    all: tuple[StatementStat, ...] = field(default=(), repr=False)  # by total time; the advice's workload
    # How long pg_stat_statements has been counting (stats_age.py says from what evidence).
    period_s: float | None = None
    period_basis: str | None = None  # "stats_reset" (pg_stat_statements_info) | "server_start"


_EXTENSION_SQL = """
SELECT n.nspname AS schema, e.extversion AS version
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""

_COLUMNS_SQL = """
SELECT attname FROM pg_attribute
WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped
"""

_PRELOAD_SQL = "SELECT current_setting('shared_preload_libraries') AS preload"

# pg_stat_statements_info (extension 1.9, PostgreSQL 14+) says when the counters were last reset as a whole.
_PERIOD_SQL = """
SELECT extract(epoch FROM now() - i.stats_reset)::float8 AS age_s FROM {view} i
"""
_UPTIME_SQL = "SELECT extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS age_s"

_STATEMENTS_SQL = """
SELECT s.queryid, min(s.query) AS query, sum(s.calls)::bigint AS calls, sum({total})::float8 AS total_ms,
       sum(s.rows)::bigint AS rows, sum(s.shared_blks_read)::bigint AS shared_blks_read,
       sum(s.shared_blks_hit)::bigint AS shared_blks_hit, sum(s.temp_blks_written)::bigint AS temp_blks_written,
       {blk_read} AS blk_read_ms, {toplevel} AS toplevel
FROM {view} s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.calls > 0 AND s.query NOT LIKE '%%/* takealook */%%' {hypopg}
GROUP BY s.queryid
ORDER BY total_ms DESC
LIMIT {limit}
"""


def statement_columns(names: set[str]) -> dict[str, str]:
    """SQL for each value we need, from the columns this version of the view has."""
    total = "s.total_exec_time" if "total_exec_time" in names else "s.total_time"
    if "total_plan_time" in names:
        total = f"({total} + s.total_plan_time)"
    blk = next((c for c in ("shared_blk_read_time", "blk_read_time") if c in names), None)
    # HypoPG runs this itself (SPI) to pick a free oid for each hypothetical index; it cannot carry our tag.
    hypopg = ("AND NOT (s.query = 'SELECT max(oid) FROM pg_catalog.pg_class WHERE oid < $1' AND NOT s.toplevel)"
              if "toplevel" in names else "")
    return {"total": total, "hypopg": hypopg,
            "blk_read": f"sum(s.{blk})::float8" if blk else "NULL::float8",
            "toplevel": "bool_or(s.toplevel)" if "toplevel" in names else "NULL::bool"}


def statement_report(session: Session, top: int = 10, thresholds: Thresholds | None = None) -> StatementReport:
    thresholds = thresholds or Thresholds()
    extension = session.query_one(_EXTENSION_SQL)
    session.end()
    if extension is None:
        return _unavailable(None, _missing_extension(session))
    view = f"{quote_ident(extension['schema'])}.pg_stat_statements"
    names = {row["attname"] for row in session.query(_COLUMNS_SQL, (view,))}
    sql = _STATEMENTS_SQL.format(view=view, limit=MAX_ROWS, **statement_columns(names))
    try:
        rows = session.query(sql)
    except psycopg.errors.ObjectNotInPrerequisiteState:
        return _unavailable(extension["version"], [Finding(
            "extension_not_loaded", "medium", "pg_stat_statements is created but not loaded",
            detail="the extension exists in this database but the server did not preload its library",
            fix="add pg_stat_statements to shared_preload_libraries in postgresql.conf and restart PostgreSQL",
            data={"extension": "pg_stat_statements"})])
    finally:
        session.end()
    hidden = sum(1 for row in rows if row["query"] == "<insufficient privilege>")
    stats = _stats([row for row in rows if row["query"] != "<insufficient privilege>"])
    findings = _privilege_findings(session, hidden) + statement_findings(stats, thresholds)
    ranked = [s for s in stats if not is_noise(s.query)]
    tops = {name: tuple(sorted(ranked, key=lambda s, a=attr: getattr(s, a) or 0, reverse=True)[:top])
            for name, attr in RANKINGS.items()}
    period_s, basis = _period(session, extension["schema"])
    return StatementReport(True, extension["version"], sum(s.total_ms for s in stats), len(stats), tops,
                           tuple(findings), tuple(stats), period_s, basis)


def _period(session: Session, schema: str) -> tuple[float | None, str | None]:
    """Seconds pg_stat_statements has been counting: since its reset, else since the server started."""
    info = f"{quote_ident(schema)}.pg_stat_statements_info"
    try:
        exists = session.query_one("SELECT to_regclass(%s) IS NOT NULL AS found", (info,))
        row = session.query_one(_PERIOD_SQL.format(view=info)) if exists and exists["found"] else None
        if row is not None and row["age_s"] is not None:
            return max(0.0, row["age_s"]), "stats_reset"
        row = session.query_one(_UPTIME_SQL)
        return (max(0.0, row["age_s"]), "server_start") if row and row["age_s"] is not None else (None, None)
    except psycopg.Error:  # a view we may not read: the estimate goes without a period
        return None, None
    finally:
        session.end()


def _stats(rows: list[dict]) -> list[StatementStat]:
    grand_total = sum(row["total_ms"] or 0.0 for row in rows) or 1.0
    out = []
    for row in rows:
        calls = int(row["calls"] or 0)
        total = float(row["total_ms"] or 0.0)
        out.append(StatementStat(
            queryid=row["queryid"], query=row["query"], fingerprint=fingerprint(row["query"]), calls=calls,
            total_ms=total, mean_ms=total / calls if calls else 0.0, rows=int(row["rows"] or 0),
            shared_blks_read=int(row["shared_blks_read"] or 0), shared_blks_hit=int(row["shared_blks_hit"] or 0),
            temp_blks_written=int(row["temp_blks_written"] or 0), blk_read_ms=row["blk_read_ms"],
            share_pct=100.0 * total / grand_total, toplevel=row["toplevel"]))
    return out


def _unavailable(version: str | None, findings: list[Finding]) -> StatementReport:
    return StatementReport(False, version, 0.0, 0, {name: () for name in RANKINGS}, tuple(findings))


def _missing_extension(session: Session) -> list[Finding]:
    try:
        preload = session.query_one(_PRELOAD_SQL)["preload"]
    except psycopg.Error:
        preload = None  # only superusers and pg_read_all_settings may read it
    finally:
        session.end()
    if preload is not None and "pg_stat_statements" not in preload:
        fix = ("add pg_stat_statements to shared_preload_libraries in postgresql.conf, restart PostgreSQL, "
               "then run CREATE EXTENSION pg_stat_statements in this database")
    else:
        fix = "CREATE EXTENSION pg_stat_statements;"
        if preload is None:
            fix += " (and make sure shared_preload_libraries lists pg_stat_statements)"
    return [Finding("missing_extension", "medium", "pg_stat_statements is not installed in this database",
                    detail="without it takealook cannot rank statements or find missing indexes from the workload",
                    fix=fix, subject="pg_stat_statements", data={"extension": "pg_stat_statements"})]


def _privilege_findings(session: Session, hidden: int) -> list[Finding]:
    if not hidden:
        return []
    return [Finding("missing_privilege", "medium", f"{hidden} statements of other roles are hidden",
                    detail="pg_stat_statements shows other roles' statements only to roles with pg_read_all_stats",
                    fix=f"GRANT pg_read_all_stats TO {quote_ident(session.user)};", subject=session.user,
                    data={"privilege": "pg_read_all_stats", "hidden_statements": hidden})]


def statement_findings(stats: list[StatementStat], thresholds: Thresholds, limit: int = 10) -> list[Finding]:
    findings: list[Finding] = []
    for stat in [s for s in stats if not is_noise(s.query)][:limit * 5]:
        data = {"queryid": stat.queryid, "fingerprint": stat.fingerprint, "query": stat.query, "calls": stat.calls,
                "total_ms": round(stat.total_ms, 3), "mean_ms": round(stat.mean_ms, 3),
                "share_pct": round(stat.share_pct, 1)}
        subject = _short(stat.query)
        if stat.mean_ms >= thresholds.slow_mean_ms:
            findings.append(Finding(
                "slow_statement", "high" if stat.mean_ms >= 10 * thresholds.slow_mean_ms else "medium",
                f"{stat.mean_ms:,.0f} ms per call over {stat.calls:,} calls", subject=subject, data=data,
                fix="see the index advice for this statement; else EXPLAIN (ANALYZE, BUFFERS) it"))
        elif stat.share_pct >= thresholds.costly_share_pct and stat.total_ms >= 1000:
            findings.append(Finding(
                "costly_statement", "medium", f"{stat.share_pct:.0f}% of the database's statement time",
                subject=subject, data=data,
                fix="see the index advice for this statement, or call it less often (cache, batch)"))
        if stat.temp_blks_written >= thresholds.temp_blocks:
            findings.append(Finding(
                "temp_spill", "low", f"{stat.temp_blks_written * 8 // 1024:,} MB written to temporary files",
                detail="its sorts or hashes do not fit in work_mem", subject=subject,
                data={**data, "temp_blks_written": stat.temp_blks_written},
                fix="SET LOCAL work_mem = '64MB' around this statement, or an index that avoids the sort"))
    return findings[: limit * 2]


@functools.lru_cache(maxsize=8192)
def is_session_noise(query: str) -> bool:
    return parse_statement(query).is_session_noise


@functools.lru_cache(maxsize=8192)
def is_noise(query: str) -> bool:
    """Not the application's work: session chatter (BEGIN, SET) or an administrator's or tool's own
    statement (``pg_stat_statements_reset()``, ``pg_stat_reset()``, HypoPG's functions, reads of
    pg_stat_statements itself), which no ranking of "what costs most" should list."""
    return TAG in query or is_session_noise(query) or parse_statement(query).is_tooling


def _short(query: str, width: int = 120) -> str:
    text = " ".join(query.split())
    return text if len(text) <= width else text[: width - 1] + "…"
