"""Settings of the database audit, one frozen object per concern.

The CLI builds these once from its flags (defaults < flags); library callers
(the combined report of issue 7, tests, the benchmark) pass them explicitly.
Nothing here reads the environment: libpq's own ``PG*`` variables are read by
libpq itself when a DSN leaves a parameter out.

Defaults, and why:
- ``statement_timeout_ms`` 30 s, ``lock_timeout_ms`` 1 s: every statement we
  run is a catalog read or an EXPLAIN; none should wait on a lock held by the
  application.
- ``min_calls`` 5: a statement seen fewer times in pg_stat_statements is not
  part of the steady workload (``too_cheap`` in ``skipped``).
- ``min_saving_pct`` 50: an index is kept only when the plan with it costs at
  most half of the plan without it (dexter uses the same bar).
- ``min_cost`` 50: below that planner cost a statement reads a handful of
  pages; an index cannot save anything a user would notice.
- ``min_stats_age_s`` 7 days: an index used by a weekly report looks unused for
  six days; no DROP advice on less history than a week.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ConnectOptions:
    statement_timeout_ms: int = 30_000
    lock_timeout_ms: int = 1_000
    connect_timeout_s: int = 10


@dataclass(frozen=True)
class IndexOptions:
    """What ``advise_indexes`` looks at and how demanding it is."""

    use_workload: bool = True  # mine pg_stat_statements
    min_calls: int = 5
    min_total_ms: float = 0.0
    min_saving_pct: float = 50.0
    min_cost: float = 50.0
    max_statements: int = 2_000  # the most expensive statements of the workload, by total time
    max_columns: int = 3
    max_indexes_per_table: int = 3
    connect: ConnectOptions = field(default_factory=ConnectOptions)


@dataclass(frozen=True)
class Thresholds:
    """When a table, index or session becomes a finding."""

    slow_mean_ms: float = 100.0
    costly_share_pct: float = 20.0
    temp_blocks: int = 1_000  # 8 MB of temp files written by one statement in total
    seq_tup_read: int = 1_000_000
    seq_min_rows: int = 10_000
    dead_tuples: int = 10_000
    dead_ratio: float = 0.2
    bloat_bytes: int = 10 * 1024 * 1024
    bloat_ratio: float = 0.5
    stale_analyze_ratio: float = 0.2
    cache_hit_ratio: float = 0.95
    cache_min_blocks: int = 10_000
    connections_ratio: float = 0.8
    idle_in_transaction_s: float = 60.0
    long_running_s: float = 60.0
    # Unused and overlapping indexes are judged on at least this much usage history (a weekly job).
    min_stats_age_s: float = 7 * 86_400.0


@dataclass(frozen=True)
class AuditOptions:
    top: int = 10  # statements per ranking
    index: IndexOptions = field(default_factory=IndexOptions)
    thresholds: Thresholds = field(default_factory=Thresholds)
    advise: bool = True  # run the index advice inside the audit

    @property
    def connect(self) -> ConnectOptions:
        return self.index.connect
