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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from takealook.analyzers.db.connection import Session
from takealook.analyzers.db.parse import ParsedStatement

_SCAN_INDEX_NODES = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")


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
        """The plan of ``statement``; raises psycopg errors (the caller skips the statement)."""
        self.calls += 1
        options = "FORMAT JSON, VERBOSE"
        try:
            if statement.param_count == 0:
                rows = self.session.raw(f"EXPLAIN ({options}) {statement.sql}")
            elif self.generic_plan_option:
                rows = self.session.raw(f"EXPLAIN (GENERIC_PLAN, {options}) {statement.sql}")
            else:
                rows = self._prepared(statement, options)
        finally:
            self.session.end()
        return read_plan(next(iter(rows[0].values())))

    def _prepared(self, statement: ParsedStatement, options: str) -> list[dict]:
        import psycopg

        # One name for all: with tracking on, each distinct statement text is a pg_stat_statements entry.
        name = "takealook_plan"
        nulls = ", ".join(["NULL"] * statement.param_count)
        script = ["SET LOCAL plan_cache_mode = force_generic_plan", f"PREPARE {name} AS {statement.sql}",
                  f"EXPLAIN ({options}) EXECUTE {name}({nulls})", f"DEALLOCATE {name}"]
        try:
            results = self.session.script(script)
        except psycopg.Error:
            # PREPARE may have succeeded before EXPLAIN failed; prepared statements outlive a rollback.
            # Ours are the only ones in the session (psycopg's auto-prepare is off).
            self.session.script(["DEALLOCATE ALL"])
            raise
        return results[2]


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
