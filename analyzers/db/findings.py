"""The typed finding every database check returns.

A ``Finding`` says what is wrong (``kind``, ``title``), how much it matters
(``severity``), on what (``subject``: a table, index, statement or setting),
and what to do (``fix``: SQL or a configuration step, when there is one).
``data`` holds the kind's own values (sizes, counts, ages, fingerprints); the
JSON output puts them beside the common keys (docs/json.md,
docs/schemas/db-indexes.schema.json lists each kind's).

Kinds (stable names; the report and CI parse them):
statements: ``slow_statement``, ``costly_statement``, ``temp_spill``;
index advice: ``missing_index``; index health: ``unused_index``,
``duplicate_index``, ``overlapping_index``, ``overlapping_django_index``,
``invalid_index``, ``index_stats_too_young``; tables:
``seq_scan_heavy``, ``dead_tuples``, ``table_bloat``, ``never_analyzed``,
``stale_statistics``, ``low_cache_hit``; sessions: ``connections_near_limit``,
``idle_in_transaction``, ``long_running_statement``; exposure:
``public_address``, ``ssl_off``, ``ssl_not_required``, ``connection_unencrypted``,
``listen_all``, ``hba_open_to_world``, ``hba_weak_auth``, ``hba_unreadable``,
``superuser_role``, ``password_encryption_md5``, ``md5_password_hashes``;
prerequisites: ``missing_extension``, ``extension_not_loaded``,
``missing_privilege``, ``check_failed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

SEVERITIES = ("critical", "high", "medium", "low", "info")


@dataclass(frozen=True)
class Finding:
    kind: str
    severity: str
    title: str
    detail: str = ""
    fix: str | None = None
    subject: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)


def ordered(findings) -> tuple[Finding, ...]:
    """Most severe first; within a severity, the order the checks produced them (already by cost)."""
    return tuple(sorted(findings, key=lambda f: f.rank))


def check_failed(check: str, message: str) -> Finding:
    """A check that could not run (a timeout, a missing privilege we did not foresee): said, not fatal."""
    return Finding("check_failed", "info", f"{check}: could not run", detail=message, data={"check": check})
