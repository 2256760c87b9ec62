"""Which columns of which tables a statement filters, joins, sorts and groups on.

``table_accesses(statement, catalog)`` walks the pglast parse tree of a
SELECT, UPDATE, DELETE or INSERT ... SELECT and returns, per instance of a base
table (``TableAccess``), the column uses an index could serve:

- ``eq``: ``col = value`` (a constant, a ``$n``, an outer column), a boolean
  column, ``IS TRUE``; ``null``: ``IS NULL``; ``in``: ``IN (...)``, ``= ANY($1)``;
- ``range``: ``<``, ``>``, ``BETWEEN``; ``like``: ``LIKE 'prefix%'``;
- ``join``: ``a.x = b.y`` in ON, USING or WHERE, ``x IN (SELECT ...)``;
- ``sort``: ORDER BY under a LIMIT; ``group``: GROUP BY.

Expressions on one table's columns (``lower(email) = $1``) are kept as
expressions with the columns unqualified, as an expression index wants them.
Names are resolved like the server does: aliases, schema-qualified names,
unqualified columns by looking them up in the catalog, correlated references
to outer queries (they act as parameters), and through views, CTEs and
subqueries in FROM to the base tables underneath (a predicate on a view column
that is a plain base column lands on that base column). Relations that do not
exist and foreign tables are reported, not guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from takealook.analyzers.db.catalog import Catalog, Relation
from takealook.analyzers.db.parse import ParsedStatement
from takealook.analyzers.db.scopes import (
    OUTER,
    Access,
    Scope,
    column_refs,
    direct_sublinks,
    expression_text,
    has_sublink,
    lookup,
    operator,
    resolve,
    star,
    string_constant,
)

_RANGE_OPS = {"<", ">", "<=", ">="}


@dataclass(frozen=True)
class ColumnUse:
    column: str
    kind: str  # eq | null | in | range | like | join | sort | group
    expression: bool = False
    descending: bool = False


@dataclass(frozen=True)
class TableAccess:
    relation: Relation
    alias: str
    uses: tuple[ColumnUse, ...]


@dataclass(frozen=True)
class StatementShape:
    accesses: tuple[TableAccess, ...]
    missing: tuple[str, ...] = ()
    foreign: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def table_accesses(statement: ParsedStatement, catalog: Catalog) -> StatementShape:
    walker = _Walker(catalog)
    catalog.load(_range_names(statement.tree))
    walker.statement(statement.tree)
    accesses = tuple(TableAccess(a.relation, a.alias, tuple(a.uses)) for a in walker.accesses if a.uses)
    return StatementShape(accesses, tuple(dict.fromkeys(walker.missing)), tuple(dict.fromkeys(walker.foreign)),
                          tuple(dict.fromkeys(walker.notes)))


def _range_names(tree: Any) -> list[tuple[str | None, str]]:
    from takealook.analyzers.db.parse import iter_nodes

    return [(n.schemaname, n.relname) for n in iter_nodes(tree) if type(n).__name__ == "RangeVar"]


class _Walker:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.accesses: list[Access] = []
        self.missing: list[str] = []
        self.foreign: list[str] = []
        self.notes: list[str] = []
        self._derived_cache: dict[int, dict] = {}
        self._depth = 0

    # ------------------------------------------------------------------ statements
    def statement(self, node: Any) -> None:
        kind = type(node).__name__
        if kind == "SelectStmt":
            self.select(node, None, {})
        elif kind in ("UpdateStmt", "DeleteStmt"):
            ctes = self._ctes(node.withClause, {})
            scope = Scope(None, ctes)
            self.from_item(node.relation, scope)
            for item in (node.fromClause if kind == "UpdateStmt" else node.usingClause) or ():
                self.from_item(item, scope)
            self.qual(node.whereClause, scope)
        elif kind == "InsertStmt" and type(node.selectStmt).__name__ == "SelectStmt":
            self.select(node.selectStmt, None, self._ctes(node.withClause, {}))

    def select(self, node: Any, parent: Scope | None, ctes: dict) -> list[tuple[str, Any]]:
        """Analyze one SELECT; return its output columns as (name, base target or None)."""
        from pglast.enums import SetOperation

        if node.op != SetOperation.SETOP_NONE:
            left = self.select(node.larg, parent, ctes)
            self.select(node.rarg, parent, ctes)
            return [(name, None) for name, _ in left]  # a qual on a UNION output is not one base column
        if node.valuesLists:
            return []
        scope = Scope(parent, self._ctes(node.withClause, ctes))
        quals: list = []
        for item in node.fromClause or ():
            quals.extend(self.from_item(item, scope))
        outputs = self._targets(node.targetList or (), scope)
        for qual in quals:
            self.qual(qual, scope)
        self.qual(node.whereClause, scope)
        self._sublinks(node.havingClause, scope)
        self._order(node, scope)
        self._group(node, scope)
        return outputs

    def _ctes(self, with_clause: Any, inherited: dict) -> dict:
        ctes = dict(inherited)
        for cte in (with_clause.ctes if with_clause else ()):
            ctes[cte.ctename] = cte
        return ctes

    # ------------------------------------------------------------------ FROM
    def from_item(self, item: Any, scope: Scope) -> list:
        """Add a FROM item's sources to ``scope``; return the join quals to visit once all are in."""
        kind = type(item).__name__
        if kind == "RangeVar":
            self._range_var(item, scope)
            return []
        if kind == "JoinExpr":
            left = set(scope.sources)
            quals = self.from_item(item.larg, scope)
            middle = set(scope.sources)
            quals += self.from_item(item.rarg, scope)
            right = set(scope.sources) - middle
            for name in (item.usingClause or ()):
                self._using(name.sval, scope, middle - left, right)
            return quals + ([item.quals] if item.quals is not None else [])
        if kind == "RangeSubselect":
            outputs = self.select(item.subquery, scope if item.lateral else scope.parent, scope.ctes)
            scope.sources[item.alias.aliasname] = self._rename(outputs, item.alias)
            return []
        alias = getattr(getattr(item, "alias", None), "aliasname", None)
        if alias:
            scope.sources[alias] = None  # a function or VALUES: columns we cannot index
        return []

    def _range_var(self, item: Any, scope: Scope) -> None:
        alias = item.alias.aliasname if item.alias else item.relname
        if item.schemaname is None and item.relname in scope.ctes:
            cte = scope.ctes[item.relname]
            outputs = self._derived(cte.ctequery, lambda: self._cte(cte, scope.ctes))
            scope.sources[alias] = self._rename(outputs, item.alias, cte.aliascolnames)
            return
        relation = self.catalog.get(item.schemaname, item.relname)
        name = f"{item.schemaname}.{item.relname}" if item.schemaname else item.relname
        if relation is None:
            self.missing.append(name)
            scope.sources[alias] = None
        elif relation.kind == "f":
            self.foreign.append(relation.qualified)
            scope.sources[alias] = None
        elif relation.kind == "v":
            scope.sources[alias] = self._rename(self._view(relation), item.alias)
        else:
            access = Access(relation, alias)
            self.accesses.append(access)
            scope.sources[alias] = access

    def _cte(self, cte: Any, ctes: dict) -> list[tuple[str, Any]]:
        visible = {name: other for name, other in ctes.items() if other is not cte}
        if type(cte.ctequery).__name__ == "SelectStmt":
            return self.select(cte.ctequery, None, visible)
        self.statement(cte.ctequery)  # WITH d AS (DELETE ... RETURNING ...): its WHERE counts too
        return []

    def _view(self, relation: Relation) -> list[tuple[str, Any]]:
        from pglast import parse_sql

        def analyze():
            if self._depth > 8 or not relation.view_sql:
                return []
            self._depth += 1
            try:
                tree = parse_sql(relation.view_sql)[0].stmt
                self.catalog.load(_range_names(tree))
                outputs = self.select(tree, None, {})
            finally:
                self._depth -= 1
            names = [c.name for c in relation.columns]
            return [(name, target) for name, (_, target) in zip(names, outputs)]

        return self._derived(relation.oid, analyze)

    def _derived(self, key: Any, analyze) -> list:
        cache_key = key if isinstance(key, int) else id(key)
        if cache_key not in self._derived_cache:
            self._derived_cache[cache_key] = []  # a recursive reference sees no columns
            self._derived_cache[cache_key] = analyze()
        return self._derived_cache[cache_key]

    @staticmethod
    def _rename(outputs: list, alias: Any, colnames: Any = None) -> dict:
        names = [c.sval for c in (colnames or getattr(alias, "colnames", None) or ())]
        columns = {}
        for index, (name, target) in enumerate(outputs):
            columns[names[index] if index < len(names) else name] = target
        return columns

    def _using(self, column: str, scope: Scope, left: set, right: set) -> None:
        for side in (left, right):
            for alias in side:
                target = lookup(scope.sources[alias], column)
                if target is not None:
                    target[0].add(ColumnUse(target[1], "join"))
                    break

    # ------------------------------------------------------------------ names
    def _targets(self, targets, scope: Scope) -> list[tuple[str, Any]]:
        outputs = []
        for target in targets:
            value = target.val
            self._sublinks(value, scope)
            if type(value).__name__ == "ColumnRef" and type(value.fields[-1]).__name__ == "A_Star":
                outputs.extend(star(value.fields, scope))
                continue
            resolved = resolve(value.fields, scope) if type(value).__name__ == "ColumnRef" else None
            resolved = resolved if isinstance(resolved, tuple) else None
            name = target.name or (value.fields[-1].sval if type(value).__name__ == "ColumnRef" else "?column?")
            if target.name and resolved is not None:
                scope.targets[target.name] = resolved
            outputs.append((name, resolved))
        return outputs

    # ------------------------------------------------------------------ expressions
    def side(self, node: Any, scope: Scope):
        """('col', access, text, is_expression), ('value',) or ('mixed',)."""
        if type(node).__name__ == "ColumnRef":
            resolved = resolve(node.fields, scope)
            if resolved is OUTER:
                return ("value",)
            return ("col", resolved[0], resolved[1], False) if resolved else ("mixed",)
        refs = list(column_refs(node))
        if not refs:
            return ("value",)
        resolved = [resolve(ref.fields, scope) for ref in refs]
        local = [r for r in resolved if r is not OUTER]
        if not local:
            return ("value",)
        if None in local or len({id(r[0]) for r in local}) != 1 or has_sublink(node):
            return ("mixed",)
        return ("col", local[0][0], expression_text(node, refs, resolved), True)

    def qual(self, node: Any, scope: Scope) -> None:
        if node is None:
            return
        kind = type(node).__name__
        if kind == "BoolExpr":
            self._bool(node, scope)
        elif kind == "A_Expr":
            self._a_expr(node, scope)
        elif kind == "NullTest":
            self._sublinks(node, scope)
            from pglast.enums import NullTestType

            if node.nulltesttype == NullTestType.IS_NULL:
                self._use(self.side(node.arg, scope), "null")
        elif kind == "BooleanTest":
            from pglast.enums import BoolTestType

            if node.booltesttype in (BoolTestType.IS_TRUE, BoolTestType.IS_FALSE):
                self._use(self.side(node.arg, scope), "eq")
        elif kind == "ColumnRef":
            self._use(self.side(node, scope), "eq")
        elif kind == "SubLink":
            self._sublink(node, scope)
        else:
            self._sublinks(node, scope)

    def _bool(self, node: Any, scope: Scope) -> None:
        from pglast.enums import BoolExprType

        if node.boolop == BoolExprType.AND_EXPR:
            for arg in node.args:
                self.qual(arg, scope)
            return
        if node.boolop == BoolExprType.OR_EXPR:
            # a = 1 OR a = 2 is an IN list; OR across columns needs one index per branch (BitmapOr).
            sides = [self.side(arg.lexpr, scope) if type(arg).__name__ == "A_Expr" and operator(arg) == "="
                     and self.side(arg.rexpr, scope) == ("value",) else None for arg in node.args]
            if all(s and s[0] == "col" for s in sides) and len({(id(s[1]), s[2]) for s in sides}) == 1:
                self._use(sides[0], "in")
            else:
                for arg in node.args:
                    self.qual(arg, scope)
        self._sublinks(node, scope)

    def _a_expr(self, node: Any, scope: Scope) -> None:
        from pglast.enums import A_Expr_Kind as K

        self._sublinks(node, scope)
        op = operator(node)
        left = self.side(node.lexpr, scope)
        if node.kind == K.AEXPR_OP and op in ("=", *_RANGE_OPS):
            right = self.side(node.rexpr, scope)
            if left[0] == "col" and right[0] == "col" and left[1] is not right[1]:
                if op == "=":
                    self._use(left, "join")
                    self._use(right, "join")
                return
            for this, other in ((left, right), (right, left)):
                if this[0] == "col" and other == ("value",):
                    self._use(this, "eq" if op == "=" else "range")
        elif node.kind in (K.AEXPR_OP_ANY, K.AEXPR_IN) and op == "=":
            self._use(left, "in")
        elif node.kind in (K.AEXPR_BETWEEN, K.AEXPR_BETWEEN_SYM):
            self._use(left, "range")
        elif node.kind == K.AEXPR_LIKE and op == "~~":
            self._like(node, left)

    def _like(self, node: Any, left) -> None:
        pattern = string_constant(node.rexpr)
        if left[0] != "col":
            return
        where = f"{left[1].relation.qualified}.{left[2]}"
        if pattern is None:
            self.notes.append(f"LIKE with a parameter on {where}: its pattern is unknown, so no index is proven")
        elif pattern[:1] in ("%", "_", ""):
            self.notes.append(f"LIKE '{pattern}' on {where} starts with a wildcard: a btree cannot serve it "
                              "(a pg_trgm GIN index can)")
        else:
            self._use(left, "like")

    def _use(self, side, kind: str, descending: bool = False) -> None:
        if side and side[0] == "col":
            side[1].add(ColumnUse(side[2], kind, side[3], descending))

    # ------------------------------------------------------------------ subqueries, ORDER BY, GROUP BY
    def _sublink(self, node: Any, scope: Scope) -> None:
        from pglast.enums import SubLinkType

        if node.subLinkType == SubLinkType.ANY_SUBLINK and node.testexpr is not None:
            self._use(self.side(node.testexpr, scope), "join")
        self.select(node.subselect, scope, scope.ctes)

    def _sublinks(self, node: Any, scope: Scope) -> None:
        for sub in direct_sublinks(node):
            self.select(sub.subselect, scope, scope.ctes)

    def _order(self, node: Any, scope: Scope) -> None:
        limit = node.limitCount
        if not node.sortClause or limit is None or getattr(limit, "isnull", False):
            return
        from pglast.enums import SortByDir

        keys = []
        for sort in node.sortClause:
            side = self._key_side(sort.node, scope)
            if side[0] != "col":
                return
            keys.append((side, sort.sortby_dir == SortByDir.SORTBY_DESC))
        if len({id(side[1]) for side, _ in keys}) != 1:
            return  # an index gives one table's order only
        for side, descending in keys:
            self._use(side, "sort", descending)

    def _group(self, node: Any, scope: Scope) -> None:
        sides = [self._key_side(item, scope) for item in node.groupClause or ()]
        if sides and all(s[0] == "col" for s in sides) and len({id(s[1]) for s in sides}) == 1:
            for side in sides:
                self._use(side, "group")

    def _key_side(self, node: Any, scope: Scope):
        if type(node).__name__ == "ColumnRef" and len(node.fields) == 1:
            name = getattr(node.fields[0], "sval", None)
            if name in scope.targets:
                target = scope.targets[name]
                return ("col", target[0], target[1], False)
        return self.side(node, scope)
