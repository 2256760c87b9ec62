"""What the index advice needs to know about the tables a statement names.

``Catalog(session)`` resolves names the way the server would (``to_regclass``
under the session's search_path) and caches, per relation: its kind (table,
partitioned table, view, materialized view, foreign table), columns with their
planner statistics (``pg_stats``: n_distinct, width), whether a column's
collation lets a plain btree serve ``LIKE 'prefix%'``, existing indexes (key
columns or expressions, access method, predicate, validity), a view's
definition, the leaf partitions, and the table's write rate since statistics
were reset (the write cost of a new index).

One round trip per batch of names, so a workload of a thousand statements on
fifty tables costs a handful of catalog queries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from takealook.analyzers.db.connection import Session

TEXT_PATTERN_OPS = {"text": "text_pattern_ops", "character varying": "varchar_pattern_ops",
                    "character": "bpchar_pattern_ops"}


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    collation_is_c: bool
    n_distinct: float | None  # absolute estimate, from pg_stats
    avg_width: int | None
    null_frac: float | None


@dataclass(frozen=True)
class ExistingIndex:
    name: str
    table: str
    columns: tuple[str, ...]  # key columns: names, or expressions as pg_get_indexdef prints them
    using: str
    unique: bool
    primary: bool
    valid: bool
    constraint: bool
    predicate: str | None
    pattern_ops: tuple[bool, ...]  # per key column: a *_pattern_ops operator class
    definition: str


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    kind: str  # r table, p partitioned, v view, m materialized view, f foreign table
    columns: tuple[ColumnInfo, ...]
    reltuples: float
    relpages: int
    indexes: tuple[ExistingIndex, ...]
    view_sql: str | None
    partitions: tuple[str, ...]
    writes_per_s: float | None

    @property
    def qualified(self) -> str:
        return qualify(self.schema, self.name)

    def column(self, name: str) -> ColumnInfo | None:
        for column in self.columns:
            if column.name == name:
                return column
        return None

    @property
    def is_system(self) -> bool:
        return self.schema in ("pg_catalog", "information_schema") or self.schema.startswith("pg_toast")


def quote_ident(name: str) -> str:
    """An identifier as PostgreSQL prints it: bare when it can be, double-quoted otherwise."""
    from pglast.keywords import RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS, COL_NAME_KEYWORDS

    plain = name and (name[0].isalpha() and name[0].islower() or name[0] == "_") and all(
        c.islower() or c.isdigit() or c == "_" for c in name if c.isascii()) and name.isascii()
    keyword = name in RESERVED_KEYWORDS or name in TYPE_FUNC_NAME_KEYWORDS or name in COL_NAME_KEYWORDS
    if plain and not keyword:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualify(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


_RESOLVE_SQL = """
SELECT n.input, c.oid::int AS oid
FROM unnest(%s::text[]) AS n(input)
LEFT JOIN pg_class c ON c.oid = to_regclass(n.input)
"""

_RELATIONS_SQL = """
SELECT c.oid::int AS oid, ns.nspname AS schema, c.relname AS name, c.relkind AS kind,
       greatest(c.reltuples, 0)::float8 AS reltuples, c.relpages AS relpages,
       CASE WHEN c.relkind IN ('v') THEN pg_get_viewdef(c.oid, true) END AS view_sql,
       ARRAY(SELECT format('%%I.%%I', pn.nspname, pc.relname)
             FROM pg_partition_tree(c.oid) t JOIN pg_class pc ON pc.oid = t.relid
             JOIN pg_namespace pn ON pn.oid = pc.relnamespace
             WHERE t.isleaf AND c.relkind = 'p' ORDER BY 1) AS partitions,
       (SELECT sum(s.n_tup_ins + s.n_tup_upd + s.n_tup_del)::float8 FROM pg_stat_all_tables s
        WHERE s.relid = c.oid OR (c.relkind = 'p' AND s.relid IN (SELECT relid FROM pg_partition_tree(c.oid))))
         AS writes,
       extract(epoch FROM now() - coalesce((SELECT stats_reset FROM pg_stat_database
                                             WHERE datname = current_database()),
                                            pg_postmaster_start_time()))::float8 AS stats_age_s
FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
WHERE c.oid = ANY(%s::oid[])
"""

_COLUMNS_SQL = """
SELECT a.attrelid::int AS oid, a.attname AS name, format_type(a.atttypid, NULL) AS type,
       (co.collname IN ('C', 'POSIX')
        OR (a.attcollation = 100 AND (SELECT datcollate IN ('C', 'POSIX') FROM pg_database
                                      WHERE datname = current_database()))) AS collation_is_c,
       st.n_distinct::float8 AS n_distinct, st.avg_width AS avg_width, st.null_frac::float8 AS null_frac
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace ns ON ns.oid = c.relnamespace
LEFT JOIN pg_collation co ON co.oid = a.attcollation
LEFT JOIN LATERAL (SELECT s.n_distinct, s.avg_width, s.null_frac FROM pg_stats s
                   WHERE s.schemaname = ns.nspname AND s.tablename = c.relname AND s.attname = a.attname
                   ORDER BY s.inherited DESC LIMIT 1) st ON true
WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_INDEXES_SQL = """
SELECT i.indrelid::int AS table_oid, format('%%I.%%I', ns.nspname, ic.relname) AS name,
       am.amname AS using, i.indisunique AS unique, i.indisprimary AS primary, i.indisvalid AS valid,
       EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid) AS constraint,
       pg_get_expr(i.indpred, i.indrelid) AS predicate,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k
             ORDER BY k) AS columns,
       ARRAY(SELECT coalesce(opc.opcname LIKE '%%pattern_ops', false)
             FROM generate_series(0, i.indnkeyatts - 1) k
             LEFT JOIN pg_opclass opc ON opc.oid = i.indclass[k] ORDER BY k) AS pattern_ops,
       pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace ns ON ns.oid = ic.relnamespace
JOIN pg_am am ON am.oid = ic.relam
WHERE i.indrelid = ANY(%s::oid[])
ORDER BY ic.relname
"""


class Catalog:
    """Relations by the name a statement used, resolved once and cached."""

    def __init__(self, session: Session):
        self.session = session
        self._by_name: dict[str, Relation | None] = {}
        self._by_oid: dict[int, Relation] = {}

    def get(self, schema: str | None, name: str) -> Relation | None:
        key = self._key(schema, name)
        if key not in self._by_name:
            self.load([(schema, name)])
        return self._by_name.get(key)

    def load(self, names: Iterable[tuple[str | None, str]]) -> None:
        """Resolve and describe every (schema, name) not seen yet, in one batch."""
        keys = sorted({self._key(s, n) for s, n in names} - set(self._by_name))
        if not keys:
            return
        rows = self.session.query(_RESOLVE_SQL, (keys,))
        oids = {row["input"]: row["oid"] for row in rows}
        self._describe([oid for oid in oids.values() if oid is not None and oid not in self._by_oid])
        for key in keys:
            oid = oids.get(key)
            self._by_name[key] = self._by_oid.get(oid) if oid is not None else None
        self.session.end()

    @property
    def relations(self) -> list[Relation]:
        return list(self._by_oid.values())

    @staticmethod
    def _key(schema: str | None, name: str) -> str:
        return f"{quote_always(schema)}.{quote_always(name)}" if schema else quote_always(name)

    def _describe(self, oids: list[int]) -> None:
        if not oids:
            return
        columns: dict[int, list[ColumnInfo]] = {}
        for row in self.session.query(_COLUMNS_SQL, (oids,)):
            columns.setdefault(row.pop("oid"), []).append(ColumnInfo(
                name=row["name"], type=row["type"], collation_is_c=bool(row["collation_is_c"]),
                n_distinct=row["n_distinct"], avg_width=row["avg_width"], null_frac=row["null_frac"]))
        indexes: dict[int, list[ExistingIndex]] = {}
        for row in self.session.query(_INDEXES_SQL, (oids,)):
            table_oid = row.pop("table_oid")
            indexes.setdefault(table_oid, []).append(ExistingIndex(
                table="", columns=tuple(row.pop("columns")), pattern_ops=tuple(row.pop("pattern_ops")), **row))
        for row in self.session.query(_RELATIONS_SQL, (oids,)):
            reltuples = row["reltuples"]
            age = row.pop("stats_age_s") or 0.0
            writes = row.pop("writes")
            cols = tuple(_absolute_distinct(c, reltuples) for c in columns.get(row["oid"], ()))
            relation = Relation(columns=cols, indexes=(), partitions=tuple(row.pop("partitions")),
                                writes_per_s=(writes / age) if writes is not None and age > 0 else None, **row)
            own = tuple(replace(ix, table=relation.qualified) for ix in indexes.get(row["oid"], ()))
            self._by_oid[row["oid"]] = replace(relation, indexes=own)


def quote_always(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _absolute_distinct(column: ColumnInfo, reltuples: float) -> ColumnInfo:
    """pg_stats gives n_distinct < 0 as a fraction of the rows; make it a count."""
    n = column.n_distinct
    if n is not None and n < 0:
        n = -n * max(reltuples, 1.0)
    return replace(column, n_distinct=n)
