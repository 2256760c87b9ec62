"""Name scopes and expressions of a pglast parse tree, for ``predicates``.

A ``Scope`` is one query level: its FROM items by alias (a base table
``Access``, a derived table's columns mapped to base columns, or ``None`` for
something opaque such as a function), its visible CTEs and its SELECT-list
aliases. ``resolve`` finds what a column reference names the way PostgreSQL
does, walking out to enclosing levels (a hit there is ``OUTER``: a correlated
reference, a value for this level). The expression helpers read operators,
string constants, column references and sublinks, and print an expression as
an index definition wants it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from takealook.analyzers.db.catalog import Relation

OUTER = object()  # a column of an enclosing query: a value for this level


@dataclass(eq=False)
class Access:
    relation: Relation
    alias: str
    uses: list = field(default_factory=list)

    def add(self, use) -> None:
        if use not in self.uses:
            self.uses.append(use)


class Scope:
    def __init__(self, parent: "Scope | None", ctes: dict):
        self.parent = parent
        self.ctes = ctes
        self.sources: dict[str, Any] = {}  # alias -> Access | dict(column -> target) | None (opaque)
        self.targets: dict[str, Any] = {}  # SELECT-list aliases, for ORDER BY alias


def lookup(source: Any, column: str):
    """(access, column) when ``source`` has ``column`` as a base column; None otherwise."""
    if isinstance(source, Access):
        return (source, column) if source.relation.column(column) else None
    if isinstance(source, dict):
        return source.get(column)
    return None


def resolve(fields: tuple, scope: Scope):
    """A ColumnRef's (access, column), ``OUTER`` for an enclosing query's column, or None."""
    names = [getattr(f, "sval", None) for f in fields]
    if not names or None in names:
        return None
    column, qualifier = names[-1], names[-2] if len(names) > 1 else None
    level = scope
    while level is not None:
        if qualifier is not None:
            if qualifier in level.sources:
                found = lookup(level.sources[qualifier], column)
                return found if level is scope else OUTER
        else:
            hits = [lookup(s, column) for s in level.sources.values()]
            found = [h for h in hits if h is not None]
            if found:
                return found[0] if level is scope else OUTER
            if any(s is None or (isinstance(s, dict) and column in s) for s in level.sources.values()):
                return None if level is scope else OUTER
        level = level.parent
    return None


def star(fields, scope: Scope) -> list[tuple[str, Any]]:
    """The output columns of ``*`` or ``alias.*``, each with its base column."""
    qualifier = fields[-2].sval if len(fields) > 1 else None
    out = []
    for alias, source in scope.sources.items():
        if qualifier not in (None, alias):
            continue
        if isinstance(source, Access):
            out.extend((c.name, (source, c.name)) for c in source.relation.columns)
        elif isinstance(source, dict):
            out.extend(source.items())
    return out


def operator(node: Any) -> str:
    return node.name[-1].sval if node.name else ""


def string_constant(node: Any) -> str | None:
    if type(node).__name__ == "TypeCast":
        node = node.arg
    value = getattr(node, "val", None)
    return getattr(value, "sval", None) if type(node).__name__ == "A_Const" else None


def column_refs(node: Any):
    """ColumnRefs of an expression, not descending into subqueries."""
    return _walk(node, "ColumnRef", ("SubLink", "SelectStmt"))


def has_sublink(node: Any) -> bool:
    return any(True for _ in direct_sublinks(node))


def direct_sublinks(node: Any):
    """SubLinks in an expression, outermost only (each analyzes its own nested ones)."""
    return _walk(node, "SubLink", ("SelectStmt",))


def _walk(node: Any, wanted: str, barriers: tuple):
    """Nodes of type ``wanted`` under ``node``, not looking inside them or inside ``barriers``."""
    from pglast.ast import Node

    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, Node):
            name = type(item).__name__
            if name == wanted:
                yield item
            elif name not in barriers:
                stack.extend(getattr(item, slot, None) for slot in type(item).__slots__)


def expression_text(node: Any, refs: list, resolved: list) -> str:
    """The expression as an index definition wants it: columns unqualified, named as in the base table."""
    from pglast.ast import String
    from pglast.stream import RawStream

    originals = [ref.fields for ref in refs]
    try:
        for ref, target in zip(refs, resolved):
            if isinstance(target, tuple):
                ref.fields = (String(sval=target[1]),)
        return RawStream()(node)
    finally:
        for ref, fields in zip(refs, originals):
            ref.fields = fields
