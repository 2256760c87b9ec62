"""Statements as the index advice reads them: pglast first, sqlparse as the fallback.

``parse_statement(text)`` turns one SQL text (pg_stat_statements' normalized
form with ``$n``, a driver's ``%s``, or literals) into a ``ParsedStatement``:
its kind, pglast parse tree, number of ``$n`` parameters and fingerprint
(``takealook.sqltext.fingerprint``, the key traces join on). A text pglast
cannot parse (truncated by ``track_activity_query_size``, or not SQL) is still
returned, ``kind="unparsed"``, with the tables sqlparse can see in it, so the
report lists it instead of dropping it.

``format_sql`` pretty-prints a statement for reports (sqlparse);
``split_statements`` cuts a file of statements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from takealook.sqltext import fingerprint, to_dollar_params

_KINDS = {"SelectStmt": "select", "UpdateStmt": "update", "DeleteStmt": "delete", "InsertStmt": "insert"}
# Statements a ranking of "what costs most" should not list: the price of talking to a database at all.
SESSION_NOISE = frozenset({"TransactionStmt", "VariableSetStmt", "VariableShowStmt", "DiscardStmt",
                           "DeallocateStmt", "PrepareStmt", "ExecuteStmt"})
# Functions and views only administrators and tools call: a statement using them is not the app's workload.
_TOOL_FUNCTION_PREFIXES = ("pg_stat_statements", "pg_stat_reset", "hypopg")
_TOOL_RELATIONS = frozenset({"pg_stat_statements", "pg_stat_statements_info"})
_NOISE_WORDS = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET", "SHOW", "RESET",
                          "DISCARD", "DEALLOCATE", "START", "END", "ABORT"})


@dataclass(frozen=True)
class ParsedStatement:
    text: str
    sql: str  # the text with driver placeholders turned into $n
    fingerprint: str | None
    kind: str  # select | update | delete | insert | utility | unparsed
    param_count: int = 0
    node_type: str = ""
    error: str | None = None
    tables_guess: tuple[str, ...] = ()
    tree: Any = field(default=None, compare=False, repr=False)

    @property
    def parsed(self) -> bool:
        return self.kind != "unparsed"

    @property
    def is_session_noise(self) -> bool:
        if self.parsed:
            return self.node_type in SESSION_NOISE
        words = self.text.lstrip().split(None, 1)
        return bool(words) and words[0].upper().rstrip(";") in _NOISE_WORDS


    @property
    def is_tooling(self) -> bool:
        """Calls pg_stat_statements_reset(), pg_stat_reset*(), hypopg*() or reads pg_stat_statements."""
        if not self.parsed:
            lowered = self.text.lower()
            return any(f"{name}(" in lowered or f"{name} (" in lowered for name in _TOOL_FUNCTION_PREFIXES) \
                or any(name in lowered for name in _TOOL_RELATIONS)
        for node in iter_nodes(self.tree):
            kind = type(node).__name__
            if kind == "FuncCall":
                name = getattr(node.funcname[-1], "sval", "") if node.funcname else ""
                if name.lower().startswith(_TOOL_FUNCTION_PREFIXES):
                    return True
            elif kind == "RangeVar" and (node.relname or "").lower() in _TOOL_RELATIONS:
                return True
        return False


def parse_statement(text: str) -> ParsedStatement:
    from pglast import parse_sql
    from pglast.parser import ParseError

    sql = to_dollar_params(text).strip().rstrip(";").strip()
    try:
        raws = parse_sql(sql)
    except ParseError as error:
        return ParsedStatement(text, sql, None, "unparsed", error=f"does not parse: {error}",
                               tables_guess=_tables_guess(sql))
    if len(raws) != 1:
        return ParsedStatement(text, sql, None, "unparsed", tables_guess=_tables_guess(sql),
                               error=f"{len(raws)} statements in one text; give one at a time")
    node = raws[0].stmt
    node_type = type(node).__name__
    params = [n.number for n in iter_nodes(node) if type(n).__name__ == "ParamRef"]
    return ParsedStatement(text, sql, fingerprint(sql), _KINDS.get(node_type, "utility"),
                           param_count=max(params, default=0), node_type=node_type, tree=node)


def iter_nodes(node: Any) -> Iterator[Any]:
    """Every pglast node under ``node`` (itself included), depth first."""
    from pglast.ast import Node

    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Node):
            yield item
            for name in type(item).__slots__:
                value = getattr(item, name, None)
                if isinstance(value, (Node, tuple, list)):
                    stack.append(value)
        elif isinstance(item, (tuple, list)):
            stack.extend(reversed(item))


def format_sql(text: str) -> str:
    import sqlparse

    return sqlparse.format(text, reindent=True, keyword_case="upper").strip()


def split_statements(text: str) -> list[str]:
    """Statements of a file, in order, without their comments; comment-only pieces dropped."""
    import sqlparse

    out = []
    for piece in sqlparse.split(text):
        stripped = sqlparse.format(piece, strip_comments=True).strip().rstrip(";").strip()
        if stripped:
            out.append(stripped)
    return out


def _tables_guess(sql: str) -> tuple[str, ...]:
    """The names after FROM/JOIN/UPDATE/INTO, as sqlparse tokenizes a text pglast rejected."""
    import sqlparse
    from sqlparse.sql import Identifier, IdentifierList
    from sqlparse.tokens import DML, Keyword

    names: list[str] = []
    try:
        statements = sqlparse.parse(sql)
    except Exception:  # sqlparse is lenient, but a fallback must not be the thing that fails
        return ()
    for statement in statements:
        expect = False
        for token in statement.tokens:
            if token.is_whitespace:
                continue
            if token.ttype in (Keyword, DML) and token.ttype is not None:
                word = token.normalized
                expect = word in ("FROM", "UPDATE", "INTO") or word.endswith("JOIN")
                continue
            if expect and isinstance(token, (Identifier, IdentifierList)):
                items = token.get_identifiers() if isinstance(token, IdentifierList) else [token]
                for item in items:
                    if isinstance(item, Identifier) and item.get_real_name():
                        parent = item.get_parent_name()
                        names.append(f"{parent}.{item.get_real_name()}" if parent else item.get_real_name())
            expect = False
    return tuple(dict.fromkeys(names))
