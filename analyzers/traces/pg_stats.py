"""Join the statements seen in traces to pg_stat_statements, by pglast fingerprint.

``read_statement_figures(dsn)`` reads pg_stat_statements of one database over
a read-only session (``default_transaction_read_only``, ``statement_timeout``,
``lock_timeout``), its own statement tagged ``/* takealook */`` and skipped,
and returns pg_stat_statements' figures per fingerprint (rows of one statement
under several users or nesting levels added up). ``join`` attaches them to the
traced statements with the same fingerprint (the span's database name breaks
ties when several databases run it). Nothing is written to the database.

psycopg is imported when called: it is part of ``takealook[audit]``.
"""

from __future__ import annotations

from typing import Iterable

from takealook.analyzers.traces.slow_statements import DatabaseFigures, StatementStats, with_database_figures
from takealook.errors import ConnectionFailed, InputError, MissingExtra
from takealook.sqltext import fingerprint

SESSION_SETTINGS = (
    "SET default_transaction_read_only = on",
    "SET statement_timeout = '10s'",
    "SET lock_timeout = '1s'",
)

# pg_stat_statements 1.8+ (PostgreSQL 13+) names the columns *_exec_time.
STATEMENTS_SQL = """/* takealook */
SELECT query,
       calls,
       total_exec_time AS total_exec_ms,
       rows,
       shared_blks_hit,
       shared_blks_read
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query NOT LIKE '%/* takealook */%'
ORDER BY total_exec_time DESC
LIMIT 10000
"""


def read_statement_figures(dsn: str) -> dict[str, DatabaseFigures]:
    """pg_stat_statements figures of the database ``dsn`` names, per statement fingerprint."""
    try:
        import psycopg
        from psycopg import errors as pgerrors
    except ImportError as error:
        raise MissingExtra("audit", "psycopg") from error
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, autocommit=True)
    except psycopg.Error as error:
        raise ConnectionFailed(f"cannot connect to the database for --dsn: {_first_line(error)}") from error
    with conn:
        database = conn.info.dbname
        try:
            for setting in SESSION_SETTINGS:
                conn.execute(setting)
            rows = conn.execute(STATEMENTS_SQL).fetchall()
        except pgerrors.UndefinedTable as error:
            raise InputError(f"pg_stat_statements is not installed in database {database!r}: "
                             "run CREATE EXTENSION pg_stat_statements there") from error
        except pgerrors.ObjectNotInPrerequisiteState as error:
            raise InputError("pg_stat_statements is not loaded: add it to shared_preload_libraries "
                             "and restart PostgreSQL") from error
        except psycopg.Error as error:
            raise InputError(f"cannot read pg_stat_statements in {database!r}: {_first_line(error)}") from error
    return _by_fingerprint(database, rows)


def _by_fingerprint(database: str, rows: Iterable[tuple]) -> dict[str, DatabaseFigures]:
    sums: dict[str, list] = {}
    for query, calls, total_ms, nrows, hit, read in rows:
        key = fingerprint(query)
        if key is None:
            continue
        entry = sums.setdefault(key, [0, 0.0, 0, 0, 0])
        entry[0] += calls or 0
        entry[1] += total_ms or 0.0
        entry[2] += nrows or 0
        entry[3] += hit or 0
        entry[4] += read or 0
    return {
        key: DatabaseFigures(database, calls, round(total, 3), round(total / calls, 3) if calls else 0.0,
                             nrows, hit, read)
        for key, (calls, total, nrows, hit, read) in sums.items()
    }


def join(statements: list[StatementStats], figures: list[dict[str, DatabaseFigures]]) -> list[StatementStats]:
    """The statements with pg_stat_statements' figures attached where a fingerprint matches."""
    out = []
    for row in statements:
        matches = [found[row.fingerprint] for found in figures if row.fingerprint and row.fingerprint in found]
        same_db = [m for m in matches if m.dsn_database in row.databases]
        chosen = (same_db or matches or [None])[0]
        out.append(with_database_figures(row, chosen))
    return out


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
