"""The result types of the index advice, and the job record it passes between its stages.

``IndexAdvice`` is what ``advise_indexes`` returns: ``indexes``
(``SuggestedIndex``, best first, each with the ``StatementEffect`` of every
statement it serves) and ``skipped`` (``SkippedStatement`` with a ``code``).
Statements carry ``fingerprint`` (pglast, as ``takealook.sqltext``) and
``queryid`` (pg_stat_statements) so traces can be joined to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from takealook.analyzers.db.candidates import IndexCandidate
from takealook.analyzers.db.explain import Plan
from takealook.analyzers.db.findings import Finding
from takealook.analyzers.db.parse import ParsedStatement

SOURCE_WORKLOAD = "pg_stat_statements"
SOURCE_GIVEN = "argument"


@dataclass(frozen=True)
class StatementEffect:
    query: str
    fingerprint: str | None
    queryid: int | None
    calls: int | None
    total_ms: float | None
    cost_before: float
    cost_after: float | None
    saving_pct: float | None
    source: str = SOURCE_WORKLOAD


@dataclass(frozen=True)
class SuggestedIndex:
    table: str
    columns: tuple[str, ...]  # column names or expressions
    using: str
    create_sql: str
    size_bytes: int | None
    verified: bool
    statements: tuple[StatementEffect, ...]
    name: str
    benefit_ms: float  # statement time saved over the statistics period (sum of total_ms x saving)
    table_rows: float
    table_writes_per_s: float | None
    existing_indexes: int
    partitioned: bool = False
    definitions: tuple[str, ...] = ()  # each column as in CREATE INDEX: with its operator class and DESC


@dataclass(frozen=True)
class SkippedStatement:
    query: str
    reason: str
    code: str
    fingerprint: str | None = None
    queryid: int | None = None
    parsed: bool = True
    source: str = SOURCE_WORKLOAD


@dataclass(frozen=True)
class IndexAdvice:
    indexes: tuple[SuggestedIndex, ...]
    skipped: tuple[SkippedStatement, ...]
    verified: bool  # HypoPG proved the advice
    explain_calls: int
    statements_considered: int
    findings: tuple[Finding, ...] = ()
    server_version: str = ""
    dsn: str = ""  # masked: what to show people


@dataclass(frozen=True)
class WorkloadStatement:
    text: str
    source: str = SOURCE_GIVEN
    queryid: int | None = None
    calls: int | None = None
    total_ms: float | None = None


@dataclass(eq=False)
class Job:
    """One statement on its way through the advice."""

    item: WorkloadStatement
    parsed: ParsedStatement
    candidates: list[IndexCandidate]
    first_variants: list[IndexCandidate] = field(default_factory=list)  # one per table access: the unverified advice
    before: Plan | None = None

    def skip(self, reason: str, code: str) -> SkippedStatement:
        return skipped(self.item, reason, code, self.parsed)

    def effect(self, after: float | None) -> StatementEffect:
        cost = self.before.total_cost if self.before else 0.0
        saving = None if after is None or not cost else round(100.0 * (cost - after) / cost, 1)
        return StatementEffect(self.item.text, self.parsed.fingerprint, self.item.queryid, self.item.calls,
                               self.item.total_ms, round(cost, 2), None if after is None else round(after, 2),
                               saving, self.item.source)


def skipped(item: WorkloadStatement, reason: str, code: str, parsed: ParsedStatement | None = None) -> SkippedStatement:
    fp = parsed.fingerprint if parsed else None
    return SkippedStatement(item.text, reason, code, fp, item.queryid, parsed.parsed if parsed else False, item.source)
