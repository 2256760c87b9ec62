"""Join the statements seen in traces to pg_stat_statements and to the index advice, by pglast fingerprint.

``read_database(dsn, advise_for=...)`` reads one database through the db
analyzer's library (``takealook.analyzers.db``: a read-only session with
``statement_timeout`` and ``lock_timeout``, its own statements tagged
``/* takealook */`` and skipped): pg_stat_statements' figures per fingerprint
and, when ``advise_for`` lists statements (the traced slow ones), the
HypoPG-verified index advice for them and the database's workload. Nothing is
written to the database.

``join(statements, reads)`` attaches both to the traced statements with the
same fingerprint (the span's database name breaks ties when several databases
run it). ``join_advice(statements, advice)`` does the index half alone, for a
caller (the combined report) that already ran the audit.

A database without pg_stat_statements (or where it is not preloaded) is not an
error: the trace report still stands, and ``DatabaseRead.notes`` says what to
run. psycopg and pglast are imported when called: they are part of
``takealook[audit]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Optional, Sequence

from takealook.analyzers.traces.slow_statements import DatabaseFigures, IndexHint, StatementStats
from takealook.sqltext import to_dollar_params


@dataclass(frozen=True)
class DatabaseRead:
    database: str
    figures: dict[str, DatabaseFigures]  # by fingerprint
    advice: dict[str, IndexHint]  # by fingerprint
    notes: tuple[str, ...]  # what kept us from reading or advising, with what to do


def read_database(dsn: str, advise_for: Sequence[str] = ()) -> DatabaseRead:
    """pg_stat_statements' figures of one database, and index advice for ``advise_for`` when given."""
    from takealook.analyzers.db.connection import connect
    from takealook.analyzers.db.statements import statement_report

    with connect(dsn) as session:
        report = statement_report(session)
        notes = tuple(f"{session.display}: {f.title}; {f.fix}" if f.fix else f"{session.display}: {f.title}"
                      for f in report.findings if f.kind in ("missing_extension", "extension_not_loaded",
                                                             "missing_privilege"))
        figures = figures_by_fingerprint(session.database, report.all)
        advice: dict[str, IndexHint] = {}
        if advise_for:
            from takealook.analyzers.db.index_advice import advise

            found = advise(session, [to_dollar_params(q) for q in advise_for], statements=report.all)
            advice = hints_by_fingerprint(found)
            notes += tuple(f"{session.display}: {f.title}" for f in found.findings if f.kind not in (
                "missing_extension", "extension_not_loaded", "missing_privilege"))
        return DatabaseRead(session.database, figures, advice, notes)


def figures_by_fingerprint(database: str, stats: Iterable) -> dict[str, DatabaseFigures]:
    """``StatementStat`` rows of the db analyzer added up per fingerprint (one statement, several roles)."""
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
        key: DatabaseFigures(database, calls, round(total, 3), round(total / calls, 3) if calls else 0.0,
                             rows, hit, read)
        for key, (calls, total, rows, hit, read) in sums.items()
    }


def hints_by_fingerprint(advice) -> dict[str, IndexHint]:
    """The best suggested index per statement fingerprint, from the db analyzer's ``IndexAdvice``."""
    hints: dict[str, IndexHint] = {}
    for index in advice.indexes:
        for effect in index.statements:
            if not effect.fingerprint:
                continue
            known = hints.get(effect.fingerprint)
            saving = effect.saving_pct
            if known is None or (saving or 0) > (known.saving_pct or 0):
                hints[effect.fingerprint] = IndexHint(index.create_sql, saving, index.verified)
    return hints


def join(statements: list[StatementStats], reads: list[DatabaseRead]) -> list[StatementStats]:
    """The statements with pg_stat_statements' figures and index advice attached where a fingerprint matches."""
    out = []
    for row in statements:
        if not row.fingerprint:
            out.append(row)
            continue
        matches = [read for read in reads if row.fingerprint in read.figures or row.fingerprint in read.advice]
        same_db = [read for read in matches if read.database in row.databases]
        read = (same_db or matches or [None])[0]
        if read is None:
            out.append(row)
            continue
        out.append(replace(row, pg_stat_statements=read.figures.get(row.fingerprint),
                           index_advice=read.advice.get(row.fingerprint) or row.index_advice))
    return out


def join_advice(statements: list[StatementStats], advice) -> list[StatementStats]:
    """Attach an ``IndexAdvice`` computed elsewhere (the combined report's audit) to the statements."""
    hints = hints_by_fingerprint(advice)
    return [replace(row, index_advice=hints[row.fingerprint]) if row.fingerprint in hints else row
            for row in statements]
