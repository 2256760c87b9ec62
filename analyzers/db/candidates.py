"""Candidate indexes for one table access, and whether an existing index already serves them.

``candidates_for(access, max_columns)`` turns a ``TableAccess`` into a few
btree definitions to try, in the order a btree can use columns: equality
(``=``, ``IS NULL``; the most selective first, by ``pg_stats.n_distinct``),
then ``IN`` lists, then one range (``<``, ``BETWEEN``, ``LIKE 'prefix%'``) or
else the ORDER BY keys under a LIMIT, or else the GROUP BY keys. Join keys
make a second variant (for the inner side of a nested loop); a range and a
sort on different columns make a third (the sort variant can stop early under
LIMIT). HypoPG and EXPLAIN pick among the variants later; without HypoPG the
first variant is the advice.

``LIKE 'prefix%'`` on a column whose collation is not C gets
``text_pattern_ops`` (``varchar_pattern_ops``, ``bpchar_pattern_ops``), since
a plain btree in such a collation cannot serve it.

``covering_index(candidate, relation)`` names an existing valid index whose
leading columns already are the candidate (in any order for the equality
part), or a hash index on the single equality column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from takealook.analyzers.db.catalog import TEXT_PATTERN_OPS, ExistingIndex, Relation, quote_ident
from takealook.analyzers.db.predicates import ColumnUse, TableAccess

_EQUALITY = ("eq", "null")


@dataclass(frozen=True)
class IndexCandidate:
    table: str  # schema-qualified, quoted as needed
    columns: tuple[str, ...]  # column names or expressions
    expressions: tuple[bool, ...]
    opclasses: tuple[str | None, ...]
    descending: tuple[bool, ...]
    equality_prefix: int  # leading columns used with = / IN / IS NULL (their order is free)
    partitioned: bool = False
    using: str = "btree"
    relation: Relation | None = field(default=None, compare=False, repr=False, hash=False)

    @property
    def key(self) -> tuple:
        return (self.table, self.using, self.columns, self.opclasses, self.descending)

    def column_sql(self) -> list[str]:
        out = []
        for column, is_expr, opclass, desc in zip(self.columns, self.expressions, self.opclasses,
                                                  self.descending):
            text = f"({column})" if is_expr else quote_ident(column)
            out.append(text + (f" {opclass}" if opclass else "") + (" DESC" if desc else ""))
        return out

    def definition(self) -> str:
        """The CREATE INDEX that HypoPG is given (no name, no CONCURRENTLY)."""
        return f"CREATE INDEX ON {self.table} USING {self.using} ({', '.join(self.column_sql())})"

    def display_columns(self) -> list[str]:
        return [c + (f" {o}" if o else "") + (" DESC" if d else "")
                for c, o, d in zip(self.columns, self.opclasses, self.descending)]

    def is_prefix_of(self, other: "IndexCandidate") -> bool:
        n = len(self.columns)
        return (self.table == other.table and self.using == other.using and n < len(other.columns)
                and other.columns[:n] == self.columns and other.opclasses[:n] == self.opclasses
                and other.descending[:n] == self.descending)


def candidates_for(access: TableAccess, max_columns: int = 3) -> list[IndexCandidate]:
    relation = access.relation
    uses = access.uses
    equal = _by_selectivity([u for u in uses if u.kind in _EQUALITY], relation)
    joins = _by_selectivity([u for u in uses if u.kind == "join"], relation)
    in_list = _by_selectivity([u for u in uses if u.kind == "in"], relation)
    ranges = _by_selectivity([u for u in uses if u.kind in ("range", "like")], relation)
    sort = [u for u in uses if u.kind == "sort"]
    group = [u for u in uses if u.kind == "group"]

    def tail_for(lead: list[ColumnUse]) -> list[list[ColumnUse]]:
        taken = {u.column for u in lead}
        tails = []
        if ranges:
            first = ranges[0]
            tail = [first]
            if sort and sort[0].column == first.column:
                tail = [ColumnUse(first.column, first.kind, first.expression, sort[0].descending)] + sort[1:]
            tails.append(tail)
        if sort and (not ranges or sort[0].column != ranges[0].column):
            tails.append(sort)
        if group and not ranges and not sort:
            tails.append(group)
        return [[u for u in tail if u.column not in taken] for tail in tails] or [[]]

    variants: list[list[ColumnUse]] = []
    leads = [equal + in_list]
    if joins:
        leads.append(_by_selectivity(equal + joins, relation) + in_list)
    for lead in leads:
        for tail in tail_for(lead):
            variants.append(lead + tail)
    if equal and (ranges or sort or group):
        variants.append(equal)
    if len(equal) > 1 or (equal and in_list):
        variants.append(equal[:1])  # the most selective column alone: often as good, and smaller
    out: dict[tuple, IndexCandidate] = {}
    for columns in variants:
        candidate = _candidate(relation, _after_unique(_dedupe(columns), relation)[:max_columns])
        if candidate is not None:
            out.setdefault(candidate.key, candidate)
    return list(out.values())


def _dedupe(uses: list[ColumnUse]) -> list[ColumnUse]:
    seen, out = set(), []
    for use in uses:
        if use.column not in seen:
            seen.add(use.column)
            out.append(use)
    return out


def _after_unique(uses: list[ColumnUse], relation: Relation) -> list[ColumnUse]:
    """Stop after an equality on a column that is unique by itself: nothing after it narrows further."""
    unique = {ix.columns[0] for ix in relation.indexes if ix.unique and ix.valid and len(ix.columns) == 1
              and not ix.predicate}
    for position, use in enumerate(uses):
        if use.kind not in (*_EQUALITY, "join"):
            break
        if not use.expression and use.column in unique:
            return uses[: position + 1]
    return uses


def _by_selectivity(uses: list[ColumnUse], relation: Relation) -> list[ColumnUse]:
    def distinct(use: ColumnUse) -> float:
        column = None if use.expression else relation.column(use.column)
        if column is None or column.n_distinct is None:
            return relation.reltuples  # an expression or an unanalyzed column: assume selective
        return column.n_distinct

    return sorted(_dedupe(uses), key=lambda u: (-distinct(u), u.column))


def _candidate(relation: Relation, uses: list[ColumnUse]) -> IndexCandidate | None:
    if not uses:
        return None
    equality = 0
    for use in uses:
        if use.kind not in (*_EQUALITY, "in", "join"):
            break
        equality += 1
    descending = [u.descending for u in uses]
    sorts = [d for u, d in zip(uses, descending) if u.kind == "sort"]
    if sorts and sorts[0]:
        descending = [not d for d in descending]  # a btree scans backwards: the first sort key ascending
    return IndexCandidate(
        table=relation.qualified,
        columns=tuple(u.column for u in uses),
        expressions=tuple(u.expression for u in uses),
        opclasses=tuple(_opclass(relation, u) for u in uses),
        descending=tuple(d if u.kind == "sort" else False for u, d in zip(uses, descending)),
        equality_prefix=equality,
        partitioned=relation.kind == "p",
        relation=relation,
    )


def _opclass(relation: Relation, use: ColumnUse) -> str | None:
    if use.kind != "like" or use.expression:
        return None
    column = relation.column(use.column)
    if column is None or column.collation_is_c:
        return None
    return TEXT_PATTERN_OPS.get(column.type)


def _normal(text: str) -> str:
    return re.sub(r"::[a-z ]+|[()\s\"]", "", text.lower())


def covering_index(candidate: IndexCandidate, relation: Relation) -> ExistingIndex | None:
    """An existing valid, non-partial index that already gives what ``candidate`` would."""
    wanted = [_normal(c) for c in candidate.columns]
    for index in relation.indexes:
        if not index.valid or index.predicate:
            continue
        have = [_normal(c) for c in index.columns]
        if index.using == "hash":
            if len(wanted) == 1 and candidate.equality_prefix == 1 and have == wanted:
                return index
            continue
        if index.using != "btree" or len(have) < len(wanted):
            continue
        n = candidate.equality_prefix
        if set(have[:n]) != set(wanted[:n]) or have[n:len(wanted)] != wanted[n:]:
            continue
        pattern = [o is not None for o in candidate.opclasses]
        if all(index.pattern_ops[i] or not pattern[i] for i in range(len(wanted))):
            return index
    return None
