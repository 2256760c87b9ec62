"""Thresholds of the trace analyses, in one typed object built once by the caller.

The defaults follow the detectors people trust: an N+1 is at least 5 repeats of
one statement under one parent that take at least 50 ms together (the figures
Sentry's performance issue detector uses for "N+1 queries"). Every analysis
takes a ``Settings`` argument; nothing reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from takealook.errors import UsageError


@dataclass(frozen=True)
class Settings:
    # N+1: a run of DB spans with one fingerprint under one parent.
    n_plus_one_min_count: int = 5
    n_plus_one_min_ms: float = 50.0
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

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0:
                raise UsageError(f"{f.name.replace('_', '-')} must not be negative (got {value})")
        if self.n_plus_one_min_count < 2:
            raise UsageError("n-plus-one-min-count must be at least 2")
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
