"""Indexes that cost without paying: unused, duplicate, overlapping, invalid.

``index_health(session, thresholds)`` returns findings, each with the ``DROP
INDEX CONCURRENTLY`` (or rebuild, or migration change) to run and the bytes it
frees:

- ``unused_index``: no scan since the statistics were last reset, and not
  backing a primary key, unique or exclusion constraint (those enforce
  something even when never scanned). Advised only when the usage statistics
  cover at least ``thresholds.min_stats_age_s`` (7 days: a weekly job's index
  is used once a week); before that, one ``index_stats_too_young`` notice says
  how old they are (``stats_age``: which evidence, and why). An index may be
  used on a replica, whose statistics are its own: the finding says so.
- ``duplicate_index``: same table, access method, key columns or expressions,
  operator classes and predicate. The one kept is the one backing a
  constraint, else the unique one, else the first by name.
- ``overlapping_index``: a btree whose key columns are the leading columns of
  another btree on the same table with the same predicate; the longer one
  serves its queries. A unique or constraint index is never called redundant.
  Gated on the statistics' age like ``unused_index``. Overlaps on indexes that
  Django made for a ``ForeignKey`` (``django_fk_index``) are one
  ``overlapping_django_index`` finding per table that advises the migration
  change (``db_index=False`` on the field, or its index in ``Meta.indexes``):
  dropping them by hand leaves the models and the database apart, and the next
  ``makemigrations`` does not know.
- ``invalid_index``: a failed ``CREATE INDEX CONCURRENTLY`` leaves an index
  that is maintained on every write and never read. One still being built
  (``pg_stat_progress_create_index``) is not reported.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from takealook.analyzers.db.connection import Session
from takealook.analyzers.db.findings import Finding
from takealook.analyzers.db.options import Thresholds
from takealook.analyzers.db.stats_age import StatsAge, human_age, index_usage_age

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
       pg_get_indexdef(i.indexrelid) AS definition, tc.relname AS relname, ic.relname AS index_relname,
       i.indnkeyatts = 1 AND EXISTS (SELECT 1 FROM pg_constraint f WHERE f.conrelid = i.indrelid
                                     AND f.contype = 'f' AND f.conkey = ARRAY[i.indkey[0]]) AS foreign_key
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
    relname: str = ""
    index_relname: str = ""
    foreign_key: bool = False  # its key columns are exactly a foreign key's

    @property
    def enforces(self) -> bool:
        return self.unique or self.primary or self.constraint


def index_health(session: Session, thresholds: Thresholds | None = None) -> list[Finding]:
    thresholds = thresholds or Thresholds()
    rows = [IndexRow(**{**row, "columns": tuple(row["columns"])}) for row in session.query(_INDEXES_SQL)]
    session.end()
    age = index_usage_age(session)
    return health_findings(rows, age, thresholds.min_stats_age_s)


def health_findings(rows: list[IndexRow], age: StatsAge, min_age_s: float) -> list[Finding]:
    """The findings for these indexes, with usage statistics ``age`` old (a pure function of its inputs)."""
    duplicates, overlaps = _duplicates(rows)
    findings = _invalid(rows) + duplicates
    reported = {f.subject for f in findings}
    if age.seconds < min_age_s:
        return findings + [_too_young(age, min_age_s)]
    findings += _overlapping(overlaps)
    reported |= {name for drop, _ in overlaps for name in (drop.name,)}
    return findings + _unused([r for r in rows if r.name not in reported], age)


def _too_young(age: StatsAge, min_age_s: float) -> Finding:
    return Finding(
        "index_stats_too_young", "info",
        f"index usage statistics cover {human_age(age.seconds)}: too little to call an index unused",
        detail=f"{age.describe()}; unused and overlapping indexes are judged once they cover "
               f"{human_age(min_age_s)} (--min-stats-age), so that a weekly job's index counts",
        fix=f"run the audit again after {human_age(max(0.0, min_age_s - age.seconds))}",
        subject="pg_stat_all_indexes",
        data={"stats_age_s": round(age.seconds), "basis": age.basis, "source": age.source,
              "min_stats_age_s": round(min_age_s)})


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


def _duplicates(rows: list[IndexRow]) -> tuple[list[Finding], list[tuple[IndexRow, IndexRow]]]:
    """Duplicate findings, and the (shorter, longer) overlapping pairs for ``_overlapping`` to judge."""
    findings, dropped, overlaps = [], set(), []
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
                overlaps.append((a, b))
    return findings, overlaps


def _overlapping(pairs: list[tuple[IndexRow, IndexRow]]) -> list[Finding]:
    findings = [_redundant("overlapping_index", a, b, "is the leading part of")
                for a, b in pairs if not django_fk_index(a)]
    by_table: dict[str, list[tuple[IndexRow, IndexRow]]] = {}
    for a, b in pairs:
        if django_fk_index(a):
            by_table.setdefault(a.table, []).append((a, b))
    return findings + [_django_overlaps(table, group) for table, group in by_table.items()]


def django_fk_index(row: IndexRow) -> bool:
    """An index Django's schema editor made for a ForeignKey: one column, exactly a foreign key's,
    named ``<table>_<column>_<digest>`` where the digest is Django's ``names_digest(table, column)``
    (md5 of the names, 8 hex digits; ``_create_index_name`` in django/db/backends/base/schema.py).
    Long names are cut by Django but keep the digest at the end (after a leading ``D`` it loses
    its last character)."""
    if not row.foreign_key or len(row.columns) != 1 or not row.relname:
        return False
    column = row.columns[0].strip('"')
    digest = hashlib.md5((row.relname + column).encode()).hexdigest()[:8]
    name = row.index_relname
    return name.endswith("_" + digest) or (name.startswith("D") and name.endswith("_" + digest[:7]))


def _django_overlaps(table: str, pairs: list[tuple[IndexRow, IndexRow]]) -> Finding:
    fields = [a.columns[0].strip('"').removesuffix("_id") for a, _ in pairs]
    size = sum(a.size_bytes for a, _ in pairs)
    covered = "; ".join(f"{a.name} ({a.columns[0]}) by {b.name} ({', '.join(b.columns)})" for a, b in pairs)
    return Finding(
        "overlapping_django_index", "medium" if size >= 100 * 1024 * 1024 else "low",
        f"{len(pairs)} foreign-key index(es) Django made on {table} are the leading part of other indexes",
        detail=f"{covered}; together {_size(size)} and a write per row change. Django manages them: a DROP INDEX "
               "by hand leaves the models and the database apart",
        fix="in the model of " + table + ": " + ", ".join(f"{field} = models.ForeignKey(..., db_index=False)"
                                                          for field in fields)
            + " (the longer index in Meta.indexes keeps serving its queries); then makemigrations and migrate",
        subject=table,
        data={"table": table, "fields": fields, "indexes": [a.name for a, _ in pairs],
              "covered_by": [b.name for _, b in pairs], "size_bytes": size, "managed_by": "django"})


def _redundant(kind: str, drop: IndexRow, keep: IndexRow, relation: str) -> Finding:
    return Finding(
        kind, "medium" if drop.size_bytes >= 100 * 1024 * 1024 else "low",
        f"{drop.name} {relation} {keep.name}",
        detail=f"({', '.join(drop.columns)}) is served by ({', '.join(keep.columns)}); "
               f"dropping it frees {_size(drop.size_bytes)} and a write per row change",
        fix=_drop(drop.name), subject=drop.name,
        data={"index": drop.name, "table": drop.table, "columns": list(drop.columns), "covered_by": keep.name,
              "size_bytes": drop.size_bytes})


def _unused(rows: list[IndexRow], age: StatsAge) -> list[Finding]:
    age_s = age.seconds
    findings = []
    for row in sorted(rows, key=lambda r: -r.size_bytes):
        if not row.valid or row.enforces or row.scans is None or row.scans > 0:
            continue
        severity = "medium" if row.size_bytes >= 10 * 1024 * 1024 else "low"
        findings.append(Finding(
            "unused_index", severity, f"{row.name} on {row.table} has not been scanned",
            detail=f"0 scans, {age.describe()}; {_size(row.size_bytes)}. Check replicas before dropping: "
                   "their index usage is counted there",
            fix=_drop(row.name), subject=row.name,
            data={"index": row.name, "table": row.table, "size_bytes": row.size_bytes,
                  "stats_age_s": round(age_s), "stats_reset": age.basis == "stats_reset",
                  "stats_basis": age.basis}))
    return findings


def _size(size: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size} bytes"

