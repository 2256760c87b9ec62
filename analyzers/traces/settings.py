"""Thresholds of the trace analyses, in one typed object built once by the caller.

The defaults follow the detectors people trust: a run of at least 5 repeats of
one statement under one parent taking at least 50 ms together is an N+1 (the
figures Sentry's performance issue detector uses for "N+1 queries"). We judge
the 50 ms on the median request that has the run, and add two ways a cheaper
pattern earns a report: a long run (10 statements or more, in at least half the
endpoint's requests) and a cost summed over the traffic (a second of users'
time per minute). Every analysis takes a ``Settings`` argument; nothing reads
the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from takealook.errors import UsageError
from takealook.routes import PATHS_PER_ROUTE


@dataclass(frozen=True)
class Settings:
    # N+1: a run of DB spans with one fingerprint under one parent, in one request...
    n_plus_one_min_count: int = 5
    # ...is reported when its median time per request reaches this,
    n_plus_one_min_ms: float = 50.0
    # or its median length does (in at least half of the endpoint's requests),
    n_plus_one_long_run: int = 10
    # or its avoidable time adds up to this many ms per minute of traffic.
    n_plus_one_min_impact_ms_per_min: float = 1000.0
    # Identical outbound HTTP calls (same method and URL) under one parent: any repeat is avoidable.
    repeated_http_min_count: int = 2
    # Sequential outbound calls: report when running them in parallel would save at least this much.
    sequential_min_saving_ms: float = 10.0
    # A statement is "slow" when its p95 over the spans reaches this.
    slow_statement_p95_ms: float = 100.0
    # A child starting this much before its parent means the two clocks disagree.
    clock_skew_tolerance_ms: float = 1.0
    # How many statements the statements table keeps, and how many trace ids a finding cites.
    top_statements: int = 20
    evidence_traces: int = 5
    # Pages of one catch-all route (Wagtail's, <path:...>, no route) kept as endpoints of their own.
    paths_per_route: int = PATHS_PER_ROUTE

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0:
                raise UsageError(f"{f.name.replace('_', '-')} must not be negative (got {value})")
        if self.n_plus_one_min_count < 2:
            raise UsageError("n-plus-one-min-count must be at least 2")
        if self.paths_per_route < 1:
            raise UsageError("paths-per-route must be at least 1")
        if self.repeated_http_min_count < 2:
            raise UsageError("repeated-http-min-count must be at least 2")


@dataclass(frozen=True)
class Window:
    """The time window analysed, in nanoseconds since the epoch (either end may be open)."""

    since_ns: Optional[int] = None
    until_ns: Optional[int] = None

    def __post_init__(self) -> None:
        if self.since_ns is not None and self.until_ns is not None and self.until_ns <= self.since_ns:
            raise UsageError("--until must be later than --since")
