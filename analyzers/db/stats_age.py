"""How long the statistics behind an audit's advice cover: enough evidence to advise a DROP?

Two different counters back two kinds of advice, so each has its own evidence:

- **Index usage** (``idx_scan`` of ``pg_stat_all_indexes``, behind ``unused_index``
  and ``overlapping_index``) is PostgreSQL's cumulative statistics system. A
  reset (``pg_stat_reset()``, or ``pg_stat_reset_single_table_counters()``,
  which on PostgreSQL 15+ also stamps the database) sets
  ``pg_stat_database.stats_reset``; that is the evidence when it is set. When it
  is NULL the statistics were never reset: they survive clean restarts but start
  anew after a crash (and, before PostgreSQL 15, after an immediate shutdown),
  so the server's uptime (``pg_postmaster_start_time()``) is taken as their
  age. The server's uptime overstates the age of a database created (or
  restored) since the server started; the finding says which evidence it used.
- **Statement time** (pg_stat_statements, behind the missing-index estimate) is
  the extension's own counters: ``pg_stat_statements_info.stats_reset``
  (PostgreSQL 14+, extension 1.9+) says when they were last reset as a whole.
  ``pg_stat_database.stats_reset`` says nothing about them. Without the view,
  the server's uptime again (pg_stat_statements saves its counters across clean
  restarts, so this is a lower bound on a period we can only estimate).

``index_usage_age(session)`` reads the first; ``statements.statement_report``
reads the second. Both are read-only catalog reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from takealook.analyzers.db.connection import Session

DAY_S = 86_400.0

_INDEX_USAGE_SQL = """
SELECT extract(epoch FROM now() - d.stats_reset)::float8 AS reset_age_s,
       extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS uptime_s
FROM pg_stat_database d WHERE d.datname = current_database()
"""


@dataclass(frozen=True)
class StatsAge:
    """How long a set of counters has been counting, and what says so."""

    seconds: float
    basis: str  # "stats_reset" | "server_start"
    source: str  # the catalog item read: "pg_stat_database.stats_reset", ...

    @property
    def days(self) -> float:
        return self.seconds / DAY_S

    def describe(self) -> str:
        """'statistics reset 5.2 hours ago' / 'statistics never reset; the server started 3.0 days ago'."""
        age = human_age(self.seconds)
        if self.basis == "stats_reset":
            return f"statistics reset {age} ago ({self.source})"
        return f"statistics never reset; the server started {age} ago (their age is taken from it)"


def index_usage_age(session: Session) -> StatsAge:
    row = session.query_one(_INDEX_USAGE_SQL) or {}
    session.end()
    if row.get("reset_age_s") is not None:
        return StatsAge(max(0.0, row["reset_age_s"]), "stats_reset", "pg_stat_database.stats_reset")
    return StatsAge(max(0.0, row.get("uptime_s") or 0.0), "server_start", "pg_postmaster_start_time()")


def human_age(seconds: float) -> str:
    """'5.2 hours', '7.0 days', '1 minute'."""
    if seconds >= DAY_S:
        return f"{seconds / DAY_S:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    minutes = round(seconds / 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
