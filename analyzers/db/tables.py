"""Table health: sequential-scan readers, dead tuples, bloat, statistics age, cache hits.

``table_health(session, thresholds)`` reads ``pg_stat_user_tables``,
``pg_statio_user_tables``, ``pg_stats`` and ``pg_stat_database`` and returns a
``TablesReport``: a row per table (largest first) and findings:

- ``seq_scan_heavy``: at least ``seq_tup_read`` rows read by sequential scans
  of a table of ``seq_min_rows`` rows or more, at 1,000+ rows per scan: a query
  filters it without an index (the index advice names which);
- ``dead_tuples``: ``dead_tuples`` dead rows and ``dead_ratio`` of the table,
  with the last (auto)vacuum's age;
- ``table_bloat``: an estimate (pages the live rows would fill at the table's
  fillfactor, from ``pg_stats`` average widths, against ``relpages``); only
  past ``bloat_bytes`` and ``bloat_ratio``. It is an estimate, and says so;
- ``never_analyzed`` / ``stale_statistics``: no ANALYZE ever, or
  ``stale_analyze_ratio`` of the rows changed since the last one: the planner
  is guessing;
- ``low_cache_hit``: the database's buffer cache hit ratio under
  ``cache_hit_ratio`` once ``cache_min_blocks`` blocks were read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from takealook.analyzers.db.connection import Session
from takealook.analyzers.db.findings import Finding
from takealook.analyzers.db.options import Thresholds

_TABLES_SQL = """
SELECT format('%%I.%%I', n.nspname, c.relname) AS table, c.relpages AS pages, c.reltuples::float8 AS reltuples,
       pg_table_size(c.oid) AS size_bytes, s.seq_scan, s.seq_tup_read, coalesce(s.idx_scan, 0) AS idx_scan,
       s.n_live_tup AS live_rows, s.n_dead_tup AS dead_rows, s.n_mod_since_analyze AS changed_since_analyze,
       extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum))::float8 AS vacuum_age_s,
       extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze))::float8 AS analyze_age_s,
       io.heap_blks_read AS blocks_read, io.heap_blks_hit AS blocks_hit,
       (SELECT sum(st.avg_width)::int FROM pg_stats st
        WHERE st.schemaname = n.nspname AND st.tablename = c.relname AND NOT st.inherited) AS row_width,
       coalesce((SELECT option_value::int FROM pg_options_to_table(c.reloptions)
                 WHERE option_name = 'fillfactor'), 100) AS fillfactor,
       current_setting('block_size')::int AS block_size
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN pg_statio_user_tables io ON io.relid = c.oid
WHERE c.relkind IN ('r', 'm')
ORDER BY size_bytes DESC, 1
"""

_DATABASE_SQL = """
SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()
"""


@dataclass(frozen=True)
class TableStat:
    table: str
    size_bytes: int
    live_rows: int
    dead_rows: int
    seq_scan: int
    seq_tup_read: int
    idx_scan: int
    bloat_bytes: int | None  # estimated
    vacuum_age_s: float | None
    analyze_age_s: float | None
    cache_hit_ratio: float | None


@dataclass(frozen=True)
class TablesReport:
    tables: tuple[TableStat, ...]
    cache_hit_ratio: float | None
    findings: tuple[Finding, ...]


def table_health(session: Session, thresholds: Thresholds | None = None, limit: int = 50) -> TablesReport:
    thresholds = thresholds or Thresholds()
    rows = session.query(_TABLES_SQL)
    db = session.query_one(_DATABASE_SQL) or {}
    session.end()
    findings: list[Finding] = []
    stats = []
    for row in rows:
        bloat = estimate_bloat(row)
        stats.append(TableStat(
            table=row["table"], size_bytes=row["size_bytes"], live_rows=row["live_rows"], dead_rows=row["dead_rows"],
            seq_scan=row["seq_scan"] or 0, seq_tup_read=row["seq_tup_read"] or 0, idx_scan=row["idx_scan"],
            bloat_bytes=bloat, vacuum_age_s=row["vacuum_age_s"], analyze_age_s=row["analyze_age_s"],
            cache_hit_ratio=_ratio(row["blocks_hit"], row["blocks_read"])))
        findings += _table_findings(row, bloat, thresholds)
    hits, reads = db.get("blks_hit") or 0, db.get("blks_read") or 0
    ratio = _ratio(hits, reads)
    if ratio is not None and hits + reads >= thresholds.cache_min_blocks and ratio < thresholds.cache_hit_ratio:
        findings.append(Finding(
            "low_cache_hit", "medium", f"{100 * ratio:.1f}% of block reads hit the buffer cache",
            detail=f"{reads:,} blocks came from disk or the OS cache; "
                   "large sequential scans (see seq_scan_heavy) are the usual cause",
            fix="index the statements that scan large tables; then consider a larger shared_buffers",
            subject=session.database, data={"ratio": round(ratio, 4), "blocks_read": reads, "blocks_hit": hits}))
    return TablesReport(tuple(stats[:limit]), ratio, tuple(findings))


def _ratio(hit, read) -> float | None:
    hit, read = hit or 0, read or 0
    return hit / (hit + read) if hit + read else None


def estimate_bloat(row: dict) -> int | None:
    """Bytes beyond what the live rows need at the table's fillfactor (None without statistics)."""
    width, reltuples, pages = row.get("row_width"), row.get("reltuples") or 0.0, row.get("pages") or 0
    if width is None or reltuples <= 0 or pages <= 0:
        return None
    block = row.get("block_size") or 8192
    tuple_bytes = 24 + 8 * math.ceil(width / 8) + 4  # heap tuple header, aligned data, line pointer
    per_page = max(1, int((block - 24) * (row.get("fillfactor") or 100) / 100 // tuple_bytes))
    expected = math.ceil(reltuples / per_page)
    return max(0, pages - expected) * block


def _table_findings(row: dict, bloat: int | None, t: Thresholds) -> list[Finding]:
    table, live, dead = row["table"], row["live_rows"] or 0, row["dead_rows"] or 0
    out = []
    seq_read, seq_scans = row["seq_tup_read"] or 0, row["seq_scan"] or 0
    if seq_read >= t.seq_tup_read and live >= t.seq_min_rows and seq_scans and seq_read / seq_scans >= 1000:
        out.append(Finding(
            "seq_scan_heavy", "medium", f"{seq_read:,} rows read by {seq_scans:,} sequential scans of {table}",
            detail=f"{live:,} rows; {row['idx_scan']:,} index scans", subject=table,
            fix="see the index advice for the statements that filter this table",
            data={"table": table, "seq_scan": seq_scans, "seq_tup_read": seq_read, "idx_scan": row["idx_scan"],
                  "rows": live}))
    if dead >= t.dead_tuples and dead / max(1, live + dead) >= t.dead_ratio:
        age = row["vacuum_age_s"]
        out.append(Finding(
            "dead_tuples", "medium", f"{dead:,} dead rows in {table} ({100 * dead / (live + dead):.0f}%)",
            detail="never vacuumed" if age is None else f"last vacuum {age / 3600:.1f} hours ago",
            fix=f"VACUUM (ANALYZE) {table}; and check that autovacuum keeps up (long transactions hold it back)",
            subject=table, data={"table": table, "dead_rows": dead, "live_rows": live,
                                 "vacuum_age_s": None if age is None else round(age)}))
    size = (row["pages"] or 0) * (row.get("block_size") or 8192)
    if bloat is not None and bloat >= t.bloat_bytes and size and bloat / size >= t.bloat_ratio:
        out.append(Finding(
            "table_bloat", "low", f"{table}: about {bloat / 2**20:,.0f} MB of {size / 2**20:,.0f} MB is free space",
            detail="an estimate from pg_stats row widths; queries that scan the table read the empty pages too",
            fix=f"rewrite it without a long lock (pg_repack -t {table}); VACUUM FULL {table} locks it meanwhile",
            subject=table, data={"table": table, "bloat_bytes": bloat, "size_bytes": size, "estimated": True}))
    out += _analyze_findings(row, live, t)
    return out


def _analyze_findings(row: dict, live: int, t: Thresholds) -> list[Finding]:
    table = row["table"]
    if live < 1000:
        return []
    if row["analyze_age_s"] is None:
        return [Finding("never_analyzed", "medium", f"{table} has never been analyzed",
                        detail=f"{live:,} rows; the planner has no statistics and guesses its row counts",
                        fix=f"ANALYZE {table};", subject=table, data={"table": table, "rows": live})]
    changed = row["changed_since_analyze"] or 0
    if changed >= t.stale_analyze_ratio * live:
        return [Finding("stale_statistics", "low", f"{changed:,} rows of {table} changed since its last ANALYZE",
                        detail=f"last analyzed {row['analyze_age_s'] / 3600:.1f} hours ago",
                        fix=f"ANALYZE {table};", subject=table,
                        data={"table": table, "changed_rows": changed, "rows": live})]
    return []
