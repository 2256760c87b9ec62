"""Statements seen in the traces, grouped by fingerprint: which are slow, and where they run.

Every SQL span is grouped by its pglast fingerprint (computed at ingest; a
statement that does not parse is grouped by its text), so ``WHERE id = 7``,
``= %s`` and ``= $1`` are one statement. Per statement: calls, total, mean,
p50/p95/max time, its share of all SQL time, and the entry endpoints it runs
under. The ``top_statements`` costliest (by total time) are kept for the
report; those whose p95 reaches ``slow_statement_p95_ms`` become
``slow_statement`` findings, with ``impact_ms_per_min``: the statement's time
per minute of traffic, summed over the endpoints it runs under.

``takealook.analyzers.join.join_statements`` adds pg_stat_statements' figures
for the same fingerprint when a ``--dsn`` is given, and the db analyzer's index
advice when it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from takealook.analyzers.traces.settings import Settings
from takealook.analyzers.traces.stats import TopSlowest, ms, percentile, ratio
from takealook.analyzers.traces.trace import TraceView


@dataclass(frozen=True)
class EndpointShare:
    endpoint: str
    service: str  # the entry endpoint's service
    calls: int
    total_ms: float


@dataclass(frozen=True)
class DatabaseFigures:
    """pg_stat_statements' row for the statement (all callers of the database, not only traced ones)."""

    dsn_database: str
    calls: int
    total_exec_ms: float
    mean_exec_ms: float
    rows: int
    shared_blks_hit: int
    shared_blks_read: int


@dataclass(frozen=True)
class IndexHint:
    """The db analyzer's suggested index for the statement (HypoPG-verified when ``verified``)."""

    create_sql: str
    saving_pct: Optional[float]  # planner cost saved for this statement
    verified: bool


@dataclass(frozen=True)
class StatementStats:
    fingerprint: str  # "" when the statement did not parse (grouped by text)
    statement: str
    services: tuple[str, ...]
    databases: tuple[str, ...]
    calls: int
    total_ms: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    max_ms: float
    share_of_sql_time: float
    endpoints: tuple[EndpointShare, ...]
    trace_ids: tuple[str, ...]
    pg_stat_statements: Optional[DatabaseFigures] = None
    index_advice: Optional[IndexHint] = None


@dataclass(frozen=True)
class SlowStatement:
    kind: str
    service: str
    endpoint: str  # the endpoint where it costs most
    endpoint_service: str
    statement: str
    fingerprint: str
    calls: int
    p95_ms: float
    mean_ms: float
    total_ms: float
    endpoints: tuple[str, ...]
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]
    pg_stat_statements: Optional[DatabaseFigures] = None
    index_advice: Optional[IndexHint] = None


class _Group:
    __slots__ = ("statement", "durations", "services", "databases", "per_endpoint", "top")

    def __init__(self, statement: str, evidence: int):
        self.statement = statement
        self.durations: list[int] = []
        self.services: set[str] = set()
        self.databases: set[str] = set()
        self.per_endpoint: dict[tuple, list[int]] = {}  # entry key -> [calls, ns]
        self.top = TopSlowest(evidence)

    def merge(self, other: "_Group") -> None:
        self.durations.extend(other.durations)
        self.services |= other.services
        self.databases |= other.databases
        for key, (calls, ns) in other.per_endpoint.items():
            tally = self.per_endpoint.setdefault(key, [0, 0])
            tally[0] += calls
            tally[1] += ns
        self.top.merge(other.top)


class StatementAggregator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.groups: dict[str, _Group] = {}
        self.sql_ns = 0

    def add(self, view: TraceView) -> None:
        entry_key = view.entry.key if view.entry is not None else None
        groups = self.groups
        sql_ns = 0
        for span in view.sql:
            key = span.db_fingerprint or (span.db_statement or span.name).strip()
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(span.db_statement or span.name, self.settings.evidence_traces)
            duration = span.duration_ns
            group.durations.append(duration)
            group.services.add(span.service)
            if span.db_name:
                group.databases.add(span.db_name)
            sql_ns += duration
            if entry_key is not None:
                tally = group.per_endpoint.get(entry_key)
                if tally is None:
                    tally = group.per_endpoint[entry_key] = [0, 0]
                tally[0] += 1
                tally[1] += duration
            if duration > group.top.floor:
                group.top.add(duration, view.trace_id)
        self.sql_ns += sql_ns

    def rekey(self, fold) -> None:
        for group in self.groups.values():
            per_endpoint: dict[tuple, list[int]] = {}
            for key, (calls, ns) in group.per_endpoint.items():
                tally = per_endpoint.setdefault(fold(key), [0, 0])
                tally[0] += calls
                tally[1] += ns
            group.per_endpoint = per_endpoint

    def merge(self, other: "StatementAggregator") -> None:
        self.sql_ns += other.sql_ns
        for key, group in other.groups.items():
            if key in self.groups:
                self.groups[key].merge(group)
            else:
                self.groups[key] = group

    def statements(self, endpoints: dict) -> list[StatementStats]:
        ranked = sorted(self.groups.items(), key=lambda kv: -sum(kv[1].durations))
        slow_ns = self.settings.slow_statement_p95_ms * 1e6
        keep = [kv for i, kv in enumerate(ranked)
                if i < self.settings.top_statements or percentile(sorted(kv[1].durations), 0.95) >= slow_ns]
        return [self._stats(key, group, endpoints) for key, group in keep]

    def _stats(self, key: str, group: _Group, endpoints: dict) -> StatementStats:
        ordered = sorted(group.durations)
        total = sum(ordered)
        shares = []
        for entry_key, (calls, ns) in sorted(group.per_endpoint.items(), key=lambda kv: -kv[1][1]):
            stats = endpoints.get(entry_key)
            if stats is not None:
                shares.append(EndpointShare(stats.endpoint, stats.service, calls, ms(ns)))
        fingerprint = "" if key == group.statement.strip() else key
        return StatementStats(
            fingerprint=fingerprint, statement=group.statement, services=tuple(sorted(group.services)),
            databases=tuple(sorted(group.databases)), calls=len(ordered), total_ms=ms(total),
            mean_ms=ms(total / len(ordered)), p50_ms=ms(percentile(ordered, 0.5)),
            p95_ms=ms(percentile(ordered, 0.95)), max_ms=ms(ordered[-1]),
            share_of_sql_time=ratio(total, self.sql_ns), endpoints=tuple(shares), trace_ids=group.top.ids(),
        )

    def findings(self, statements: list[StatementStats], endpoints: dict) -> list[SlowStatement]:
        out = []
        for row in statements:
            if row.p95_ms < self.settings.slow_statement_p95_ms:
                continue
            group = self.groups[row.fingerprint or row.statement.strip()]
            impact = 0.0
            for entry_key, (_, ns) in group.per_endpoint.items():
                stats = endpoints.get(entry_key)
                if stats is not None:
                    impact += ns / 1e6 / stats.requests * stats.requests_per_min
            top = row.endpoints[0] if row.endpoints else None
            out.append(SlowStatement(
                kind="slow_statement", service=row.services[0] if row.services else "",
                endpoint=top.endpoint if top else "", endpoint_service=top.service if top else "",
                statement=row.statement, fingerprint=row.fingerprint, calls=row.calls, p95_ms=row.p95_ms,
                mean_ms=row.mean_ms, total_ms=row.total_ms, endpoints=tuple(e.endpoint for e in row.endpoints),
                impact_ms_per_min=round(impact, 3), trace_ids=row.trace_ids,
                pg_stat_statements=row.pg_stat_statements, index_advice=row.index_advice,
            ))
        return out
