"""EXPLAIN a statement the way the index advice needs it, and read the plan.

Statements from pg_stat_statements carry ``$n`` parameters, so they are
planned generically (the plan a prepared statement gets whatever its values):

- PostgreSQL 16 and newer: ``EXPLAIN (GENERIC_PLAN) <statement>``;
- older servers: ``SET LOCAL plan_cache_mode = force_generic_plan``, then
  ``PREPARE``, ``EXPLAIN EXECUTE name(NULL, ...)`` and ``DEALLOCATE``, in one
  round trip, inside the session's read-only transaction. The values never
  reach the planner under a forced generic plan, so NULLs do. Each EXPLAIN
  prepares afresh: a cached generic plan would not see hypothetical indexes
  created since (HypoPG sends no invalidation).

Statements without parameters are explained as they are. EXPLAIN without
ANALYZE runs nothing, so UPDATE and DELETE are planned in a read-only
transaction too. ``Explainer.calls`` counts the EXPLAINs (the benchmark prints it).

The statement is embedded without its comments and trailing semicolons
(``plannable``: pglast's scanner finds the comments, so quotes and nested
``/* */`` are handled as PostgreSQL does): a ``-- comment`` at the end of a
pg_stat_statements text would otherwise swallow the EXECUTE and DEALLOCATE
sent after it, and a ``;`` would end the PREPARE early. The script's
statements are also sent on separate lines. What still cannot be explained
raises ``psycopg.Error`` or ``CannotExplain`` (both in ``EXPLAIN_ERRORS``),
which callers turn into a skipped statement with its reason.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import psycopg

from takealook.analyzers.db.connection import Session
from takealook.analyzers.db.parse import ParsedStatement

_SCAN_INDEX_NODES = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
_COMMENTS = ("SQL_COMMENT", "C_COMMENT")


class CannotExplain(Exception):
    """The server answered, but not with a plan we can read (the statement is skipped, not fatal)."""


EXPLAIN_ERRORS = (psycopg.Error, CannotExplain)


@dataclass(frozen=True)
class SeqScan:
    table: str  # schema.name as EXPLAIN VERBOSE prints them
    rows: float
    filtered: bool


@dataclass(frozen=True)
class Plan:
    total_cost: float
    index_names: frozenset[str]
    seq_scans: tuple[SeqScan, ...]
    sorts: int


class Explainer:
    """Generic-plan EXPLAINs on one session; counts them."""

    def __init__(self, session: Session):
        self.session = session
        self.generic_plan_option = session.server_version_num >= 160000
        self.calls = 0

    def explain(self, statement: ParsedStatement) -> Plan:
        """The plan of ``statement``; raises one of ``EXPLAIN_ERRORS`` (the caller skips the statement)."""
        self.calls += 1
        options = "FORMAT JSON, VERBOSE"
        sql = plannable(statement.sql)
        if not sql:
            raise CannotExplain("the statement is empty once its comments are removed")
        try:
            if statement.param_count == 0:
                rows = self.session.raw(f"EXPLAIN ({options}) {sql}")
            elif self.generic_plan_option:
                rows = self.session.raw(f"EXPLAIN (GENERIC_PLAN, {options}) {sql}")
            else:
                rows = self._prepared(sql, statement.param_count, options)
        finally:
            self.session.end()
        try:
            return read_plan(next(iter(rows[0].values())))
        except (IndexError, KeyError, TypeError, ValueError, StopIteration) as error:
            raise CannotExplain(f"EXPLAIN gave no readable plan ({type(error).__name__}: {error})") from None

    def _prepared(self, sql: str, param_count: int, options: str) -> list[dict]:
        # One name for all: with tracking on, each distinct statement text is a pg_stat_statements entry.
        name = "takealook_plan"
        nulls = ", ".join(["NULL"] * param_count)
        script = ["SET LOCAL plan_cache_mode = force_generic_plan", f"PREPARE {name} AS {sql}",
                  f"EXPLAIN ({options}) EXECUTE {name}({nulls})", f"DEALLOCATE {name}"]
        try:
            results = self.session.script(script)
        except psycopg.Error:
            # PREPARE may have succeeded before EXPLAIN failed; prepared statements outlive a rollback.
            # Ours are the only ones in the session (psycopg's auto-prepare is off).
            self.session.script(["DEALLOCATE ALL"])
            raise
        if len(results) != len(script):
            self.session.script(["DEALLOCATE ALL"])
            raise CannotExplain(f"the server ran {len(results)} of the {len(script)} statements sent to plan it")
        return results[2]


@functools.lru_cache(maxsize=4096)
def plannable(sql: str) -> str:
    """``sql`` as EXPLAIN and PREPARE can embed it: comments replaced by a space, no trailing ``;``."""
    from pglast.parser import ParseError, scan

    try:
        tokens = scan(sql)
    except ParseError:
        return sql.strip()  # the server will say what is wrong with it
    pieces, last = [], 0
    for token in tokens:
        if token.name in _COMMENTS:
            pieces.append(sql[last:token.start])
            pieces.append(" ")
            last = token.end + 1
    pieces.append(sql[last:])
    text = "".join(pieces).strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def read_plan(document: Any) -> Plan:
    top = document[0]["Plan"] if isinstance(document, list) else document["Plan"]
    indexes: set[str] = set()
    seq_scans: list[SeqScan] = []
    sorts = 0
    stack = [top]
    while stack:
        node = stack.pop()
        kind = node.get("Node Type", "")
        if kind in _SCAN_INDEX_NODES and node.get("Index Name"):
            indexes.add(node["Index Name"])
        elif kind == "Seq Scan":
            table = f"{node.get('Schema', '')}.{node.get('Relation Name', '')}"
            seq_scans.append(SeqScan(table, float(node.get("Plan Rows", 0)), "Filter" in node))
        elif kind in ("Sort", "Incremental Sort"):
            sorts += 1
        stack.extend(node.get("Plans", ()))
    return Plan(float(top.get("Total Cost", 0.0)), frozenset(indexes), tuple(seq_scans), sorts)
