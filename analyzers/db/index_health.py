"""Indexes that cost without paying: unused, duplicate, overlapping, invalid.

``index_health(session)`` returns findings, each with the ``DROP INDEX
CONCURRENTLY`` (or rebuild) to run and the bytes it frees:

- ``unused_index``: no scan since the statistics were last reset, and not
  backing a primary key, unique or exclusion constraint (those enforce
  something even when never scanned). The finding states how long the
  statistics cover: an index unused for two hours says little, and an index
  may be used on a replica whose statistics are its own.
- ``duplicate_index``: same table, access method, key columns or expressions,
  operator classes and predicate. The one kept is the one backing a
  constraint, else the unique one, else the first by name.
- ``overlapping_index``: a btree whose key columns are the leading columns of
  another btree on the same table with the same predicate; the longer one
  serves its queries. A unique or constraint index is never called redundant.
- ``invalid_index``: a failed ``CREATE INDEX CONCURRENTLY`` leaves an index
  that is maintained on every write and never read. One still being built
  (``pg_stat_progress_create_index``) is not reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from takealook.analyzers.db.connection import Session
from takealook.analyzers.db.findings import Finding

_INDEXES_SQL = """
SELECT format('%%I.%%I', ns.nspname, ic.relname) AS name, format('%%I.%%I', ns.nspname, tc.relname) AS table,
       am.amname AS using, i.indisunique AS unique, i.indisprimary AS primary, i.indisvalid AS valid,
       EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid) AS constraint,
       coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS predicate,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k
             ORDER BY k) AS columns,
       i.indclass::text AS opclasses, i.indnatts - i.indnkeyatts AS included, i.indoption::text AS options,
       pg_relation_size(i.indexrelid) AS size_bytes, s.idx_scan AS scans,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid) AS building,
       pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace ns ON ns.oid = ic.relnamespace
JOIN pg_am am ON am.oid = ic.relam
LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = i.indexrelid
WHERE ns.nspname NOT IN ('pg_catalog', 'information_schema') AND ns.nspname NOT LIKE 'pg_toast%%'
  AND tc.relkind IN ('r', 'm', 'p')
ORDER BY 2, 1
"""

_STATS_AGE_SQL = """
SELECT extract(epoch FROM now() - coalesce(d.stats_reset, pg_postmaster_start_time()))::float8 AS age_s,
       d.stats_reset IS NOT NULL AS was_reset
FROM pg_stat_database d WHERE d.datname = current_database()
"""


@dataclass(frozen=True)
class IndexRow:
    name: str
    table: str
    using: str
    unique: bool
    primary: bool
    valid: bool
    constraint: bool
    predicate: str
    columns: tuple[str, ...]
    opclasses: str
    included: int
    options: str
    size_bytes: int
    scans: int | None
    building: bool
    definition: str

    @property
    def enforces(self) -> bool:
        return self.unique or self.primary or self.constraint


def index_health(session: Session) -> list[Finding]:
    rows = [IndexRow(**{**row, "columns": tuple(row["columns"])}) for row in session.query(_INDEXES_SQL)]
    age = session.query_one(_STATS_AGE_SQL) or {"age_s": 0.0, "was_reset": False}
    session.end()
    findings = _invalid(rows) + _duplicates(rows)
    reported = {f.subject for f in findings}
    findings += _unused([r for r in rows if r.name not in reported], age["age_s"] or 0.0, age["was_reset"])
    return findings


def _drop(name: str) -> str:
    return f"DROP INDEX CONCURRENTLY {name};"


def _invalid(rows: list[IndexRow]) -> list[Finding]:
    out = []
    for row in rows:
        if row.valid or row.building:
            continue
        again = re.sub(r"^CREATE (UNIQUE )?INDEX ", r"CREATE \1INDEX CONCURRENTLY ", row.definition)
        out.append(Finding(
            "invalid_index", "medium", f"invalid index {row.name} on {row.table}",
            detail="a failed CREATE INDEX CONCURRENTLY left it: every write maintains it, no query can use it"
                   + ("; a unique build fails again until the duplicate values are removed" if row.unique else ""),
            fix=f"{_drop(row.name)} then run its definition again: {again};",
            subject=row.name, data={"index": row.name, "table": row.table, "size_bytes": row.size_bytes}))
    return out


def _same_shape(a: IndexRow, b: IndexRow) -> bool:
    return (a.table, a.using, a.predicate, a.included) == (b.table, b.using, b.predicate, b.included)


def _keeper(a: IndexRow, b: IndexRow) -> IndexRow:
    """Of two identical indexes, the one to keep: a constraint's, else the unique, else the one queries use."""
    return min((a, b), key=lambda r: (not r.constraint, not r.primary, not r.unique, -(r.scans or 0), r.name))


def _duplicates(rows: list[IndexRow]) -> list[Finding]:
    findings, dropped = [], set()
    valid = [r for r in rows if r.valid]
    for i, a in enumerate(valid):
        for b in valid[i + 1:]:
            if a.name in dropped or b.name in dropped or not _same_shape(a, b):
                continue
            if a.columns == b.columns and a.opclasses == b.opclasses and a.options == b.options:
                keep = _keeper(a, b)
                drop = b if keep is a else a
                if drop.enforces and keep.enforces and drop.constraint:
                    continue  # two constraints on the same columns: dropping one is a schema change
                dropped.add(drop.name)
                findings.append(_redundant("duplicate_index", drop, keep, "has the same definition as"))
    for a in valid:
        for b in valid:
            if a is b or a.name in dropped or b.name in dropped or a.enforces or a.using != "btree":
                continue
            n = len(a.columns)
            if (_same_shape(a, b) and n < len(b.columns) and b.columns[:n] == a.columns
                    and b.opclasses.split()[:n] == a.opclasses.split()[:n]):
                dropped.add(a.name)
                findings.append(_redundant("overlapping_index", a, b, "is the leading part of"))
    return findings


def _redundant(kind: str, drop: IndexRow, keep: IndexRow, relation: str) -> Finding:
    return Finding(
        kind, "medium" if drop.size_bytes >= 100 * 1024 * 1024 else "low",
        f"{drop.name} {relation} {keep.name}",
        detail=f"({', '.join(drop.columns)}) is served by ({', '.join(keep.columns)}); "
               f"dropping it frees {_size(drop.size_bytes)} and a write per row change",
        fix=_drop(drop.name), subject=drop.name,
        data={"index": drop.name, "table": drop.table, "columns": list(drop.columns), "covered_by": keep.name,
              "size_bytes": drop.size_bytes})


def _unused(rows: list[IndexRow], age_s: float, was_reset: bool) -> list[Finding]:
    since = f"{age_s / 86400:.1f} days" if age_s >= 86400 else f"{age_s / 3600:.1f} hours"
    basis = (f"statistics reset {since} ago" if was_reset
             else f"statistics collected for {since} (never reset)")
    findings = []
    for row in sorted(rows, key=lambda r: -r.size_bytes):
        if not row.valid or row.enforces or row.scans is None or row.scans > 0:
            continue
        severity = "medium" if age_s >= 7 * 86400 and row.size_bytes >= 10 * 1024 * 1024 else "low"
        findings.append(Finding(
            "unused_index", severity, f"{row.name} on {row.table} has not been scanned",
            detail=f"0 scans, {basis}; {_size(row.size_bytes)}. Check replicas before dropping: "
                   "their index usage is counted there",
            fix=_drop(row.name), subject=row.name,
            data={"index": row.name, "table": row.table, "size_bytes": row.size_bytes,
                  "stats_age_s": round(age_s), "stats_reset": was_reset}))
    return findings


def _size(size: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size} bytes"

