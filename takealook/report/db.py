"""The database report: ``db audit`` and ``db indexes`` as ``Document``s and as JSON contracts.

``indexes_contract(advice)`` is the JSON of ``db indexes`` and
``audit_contract(report)`` the JSON of ``db audit``: their shapes are the
contracts in docs/json.md (docs/schemas/db-indexes.schema.json and
db-audit.schema.json), which the tests check against the commands' real output.
"""

from __future__ import annotations

from typing import Any

from takealook.analyzers.db.audit import AuditReport, DatabaseAudit
from takealook.analyzers.db.findings import SEVERITIES, Finding
from takealook.analyzers.db.index_advice import IndexAdvice, SkippedStatement, SuggestedIndex
from takealook.analyzers.db.parse import format_sql
from takealook.analyzers.db.statements import StatementReport, StatementStat
from takealook.report.model import Bars, Code, Document, KeyValues, Paragraph, Section, Table

_TONE = {"critical": "bad", "high": "bad", "medium": "warning", "low": "info", "info": "info"}


# --------------------------------------------------------------------------- JSON


def finding_json(finding: Finding) -> dict:
    out = {"kind": finding.kind, "severity": finding.severity, "title": finding.title, "detail": finding.detail,
           "fix": finding.fix, "subject": finding.subject}
    for key, value in (finding.data or {}).items():
        out.setdefault(key, value)
    return out


def _index_json(index: SuggestedIndex) -> dict:
    return {
        "table": index.table, "columns": list(index.columns), "using": index.using, "create_sql": index.create_sql,
        "size_bytes": index.size_bytes, "verified": index.verified,
        "statements": [{"query": e.query, "calls": e.calls, "cost_before": e.cost_before, "cost_after": e.cost_after,
                        "saving_pct": e.saving_pct, "fingerprint": e.fingerprint, "queryid": e.queryid,
                        "total_ms": None if e.total_ms is None else round(e.total_ms, 3), "source": e.source}
                       for e in index.statements],
        "name": index.name, "benefit_ms": index.benefit_ms, "table_rows": index.table_rows,
        "table_writes_per_s": index.table_writes_per_s, "existing_indexes": index.existing_indexes,
        "partitioned": index.partitioned, "definitions": list(index.definitions),
    }


def _skipped_json(s: SkippedStatement) -> dict:
    return {"query": s.query, "reason": s.reason, "code": s.code, "fingerprint": s.fingerprint,
            "queryid": s.queryid, "parsed": s.parsed, "source": s.source}


def indexes_contract(advice: IndexAdvice, dsn: str | None = None) -> dict:
    out: dict[str, Any] = {"schema_version": 1,
                           "indexes": [_index_json(i) for i in advice.indexes],
                           "skipped": [_skipped_json(s) for s in advice.skipped],
                           "verified": advice.verified, "explain_calls": advice.explain_calls,
                           "statements_considered": advice.statements_considered,
                           "findings": [finding_json(f) for f in advice.findings],
                           "server_version": advice.server_version}
    if dsn or advice.dsn:
        out["dsn"] = dsn or advice.dsn
    return out


def _stat_json(stat: StatementStat) -> dict:
    return {"queryid": stat.queryid, "fingerprint": stat.fingerprint, "query": stat.query, "calls": stat.calls,
            "total_ms": round(stat.total_ms, 3), "mean_ms": round(stat.mean_ms, 3), "rows": stat.rows,
            "shared_blks_read": stat.shared_blks_read, "shared_blks_hit": stat.shared_blks_hit,
            "temp_blks_written": stat.temp_blks_written,
            "blk_read_ms": None if stat.blk_read_ms is None else round(stat.blk_read_ms, 3),
            "share_pct": round(stat.share_pct, 2), "toplevel": stat.toplevel}


def _statements_json(report: StatementReport | None) -> dict | None:
    if report is None:
        return None
    return {"available": report.available, "pg_stat_statements_version": report.version,
            "total_ms": round(report.total_ms, 3), "count": report.count,
            "period_s": None if report.period_s is None else round(report.period_s),
            "period_basis": report.period_basis,
            "top": {name: [_stat_json(s) for s in stats] for name, stats in report.top.items()}}


def database_json(audit: DatabaseAudit) -> dict:
    out: dict[str, Any] = {"dsn": audit.dsn, "database": audit.database, "server_version": audit.server_version,
                           "user": audit.user, "error": audit.error,
                           "findings": [finding_json(f) for f in audit.findings]}
    if audit.error is not None:
        return out
    out["statements"] = _statements_json(audit.statements)
    if audit.index_advice is not None:
        advice = indexes_contract(audit.index_advice)
        advice.pop("schema_version")
        advice.pop("dsn", None)
        out["indexes"] = advice
    if audit.tables is not None:
        out["tables"] = {"cache_hit_ratio": audit.tables.cache_hit_ratio,
                         "tables": [vars(t) for t in audit.tables.tables]}
    if audit.sessions is not None:
        s = audit.sessions
        out["sessions"] = {"connections": s.connections, "max_connections": s.max_connections, "active": s.active,
                           "idle_in_transaction": s.idle_in_transaction, "hidden": s.hidden}
    return out


def audit_contract(report: AuditReport) -> dict:
    return {"schema_version": 1, "databases": [database_json(d) for d in report.databases]}


# --------------------------------------------------------------------------- documents


def _short(text: str, width: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _size(size: int | None) -> str | None:
    if size is None:
        return None
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return None


def findings_section(findings: tuple[Finding, ...], title: str = "Findings") -> Section:
    if not findings:
        return Section(title, (Paragraph("Nothing to report.", "good"),))
    counts = ", ".join(f"{sum(1 for f in findings if f.severity == s)} {s}" for s in SEVERITIES
                       if any(f.severity == s for f in findings))
    rows = [[f.severity, f.kind, _short(f.subject or "", 50), _short(f.title, 80), _short(f.fix or "", 100)]
            for f in findings]
    blocks = [Paragraph(counts, _TONE[findings[0].severity]),
              Table.of(["severity", "kind", "subject", "what", "fix"], rows)]
    return Section(title, tuple(blocks))


def advice_blocks(advice: IndexAdvice) -> list:
    blocks: list = []
    if not advice.verified:
        blocks.append(Paragraph("HypoPG is not available: the advice below is not verified with hypothetical "
                                "indexes (CREATE EXTENSION hypopg to prove it).", "warning"))
    if not advice.indexes:
        blocks.append(Paragraph(f"No missing index among {advice.statements_considered} statements.", "good"))
    rows = []
    for index in advice.indexes:
        best = max(index.statements, key=lambda e: e.saving_pct or 0.0, default=None)
        rows.append([index.table, ", ".join(index.definitions or index.columns), len(index.statements),
                     None if best is None else best.saving_pct, index.benefit_ms, _size(index.size_bytes),
                     index.table_writes_per_s, "yes" if index.verified else "no"])
    if rows:
        blocks.append(Table.of(["table", "columns", "statements", "best saving %", "ms saved (stats period)", "size",
                                "table writes/s", "verified"], rows))
        blocks.append(Code("\n".join(i.create_sql for i in advice.indexes)))
        for index in advice.indexes:
            blocks.append(Table.of(["statement", "calls", "cost before", "cost after", "saving %", "fingerprint"],
                                   [[_short(e.query, 70), e.calls, e.cost_before, e.cost_after, e.saving_pct,
                                     e.fingerprint] for e in index.statements],
                                   title=f"{index.name}: statements served"))
    if advice.skipped:
        by_code: dict[str, int] = {}
        for s in advice.skipped:
            by_code[s.code] = by_code.get(s.code, 0) + 1
        blocks.append(Paragraph("Skipped: " + ", ".join(f"{n} {code}" for code, n in sorted(by_code.items()))))
        shown = [s for s in advice.skipped if s.code != "too_cheap"][:30]
        if shown:
            blocks.append(Table.of(["statement", "why"], [[_short(s.query, 70), s.reason] for s in shown],
                                   title="Skipped statements"))
    return blocks


def indexes_document(advice: IndexAdvice, dsn: str) -> Document:
    sections = [Section("Suggested indexes", tuple(advice_blocks(advice)))]
    if advice.findings:
        sections.append(findings_section(advice.findings, "Prerequisites"))
    return Document("Index advice", tuple(sections), subtitle=dsn,
                    meta=(("server", advice.server_version), ("statements", advice.statements_considered),
                          ("EXPLAIN calls", advice.explain_calls)))


def _statements_section(report: StatementReport) -> Section:
    if not report.available:
        return Section("Statements", (Paragraph("pg_stat_statements is not available (see findings).", "warning"),))
    top = report.top.get("total_time", ())
    blocks: list = [KeyValues((("statements", report.count), ("total time (ms)", round(report.total_ms, 1)),
                               ("pg_stat_statements", report.version)))]
    if top:
        blocks.append(Bars("Total time by statement", [(_short(s.query, 50), round(s.total_ms, 1)) for s in top],
                           " ms"))
    subs = []
    for name, stats in report.top.items():
        rows = [[_short(s.query, 70), s.calls, s.total_ms, s.mean_ms, s.rows, s.shared_blks_read,
                 s.temp_blks_written, s.fingerprint] for s in stats]
        subs.append(Section(f"Top by {name.replace('_', ' ')}", (Table.of(
            ["statement", "calls", "total ms", "mean ms", "rows", "blocks read", "temp blocks", "fingerprint"],
            rows),)))
    if top:
        subs.append(Section("Most expensive statement", (Code(format_sql(top[0].query)),)))
    return Section("Statements", tuple(blocks), tuple(subs))


def database_section(audit: DatabaseAudit) -> Section:
    title = audit.database or audit.dsn
    if audit.error is not None:
        return Section(title, (Paragraph(f"Not audited: {audit.error}", "bad"),))
    subs = [findings_section(audit.findings)]
    if audit.statements is not None:
        subs.append(_statements_section(audit.statements))
    if audit.index_advice is not None:
        subs.append(Section("Index advice", tuple(advice_blocks(audit.index_advice))))
    if audit.tables is not None:
        rows = [[t.table, _size(t.size_bytes), t.live_rows, t.dead_rows, t.seq_scan, t.seq_tup_read, t.idx_scan,
                 _size(t.bloat_bytes), t.cache_hit_ratio] for t in audit.tables.tables]
        subs.append(Section("Tables", (
            KeyValues((("cache hit ratio", audit.tables.cache_hit_ratio),)),
            Table.of(["table", "size", "rows", "dead rows", "seq scans", "rows seq-read", "index scans",
                      "bloat (est.)", "cache hit"], rows))))
    if audit.sessions is not None:
        s = audit.sessions
        subs.append(Section("Sessions", (KeyValues((
            ("connections", f"{s.connections} of {s.max_connections}"), ("active", s.active),
            ("idle in transaction", s.idle_in_transaction))),)))
    meta = KeyValues((("DSN", audit.dsn), ("server", audit.server_version), ("role", audit.user)))
    return Section(title, (meta,), tuple(subs))


def audit_document(report: AuditReport) -> Document:
    audited = report.audited
    return Document("Database audit", tuple(database_section(d) for d in report.databases),
                    subtitle=f"{audited} of {len(report.databases)} databases audited")
