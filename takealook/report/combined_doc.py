"""The combined report as a Document (text, Markdown, HTML) and as JSON.

The page reads top-down the way the engineer works: the findings ranked by
cost to users, each with its evidence side by side (the statement, its
pg_stat_statements figures, the suggested index and predicted saving, the
measured before/after with latency distributions, and a waterfall of a slow
trace across the apps); then where the time goes per endpoint (the share of
critical-path time per service, SQL and HTTP); the load comparison; and each
database's audit.
"""

from __future__ import annotations

import dataclasses

from takealook.report.combined import CombinedReport, Ranked
from takealook.report.model import (
    Code,
    Distribution,
    Document,
    KeyValues,
    Paragraph,
    Section,
    StackedBars,
    Table,
    Waterfall,
    WaterfallSpan,
)
from takealook.report.render import fmt_value
from takealook.report.traces import endpoint_label

DETAILED = 10
TONES = {"critical": "bad", "high": "bad", "medium": "warning", "low": "info", "info": "info"}


def _cost(item: Ranked) -> str:
    if item.impact_ms_per_min is None:
        return "—"
    return f"{'≈ ' if item.estimated else ''}{fmt_value(item.impact_ms_per_min)} ms/min"


def _where(item: Ranked) -> str:
    parts = list(item.endpoints[:2])
    if len(item.endpoints) > 2:
        parts.append(f"+{len(item.endpoints) - 2} more")
    if not parts:
        parts = [item.database or item.service or ""]
    return ", ".join(p for p in parts if p)


# --------------------------------------------------------------------------- document


def document(report: CombinedReport) -> Document:
    sections = [_findings_section(report)]
    if report.traces is not None:
        sections.append(_time_section(report.traces))
    if report.comparison is not None:
        sections.append(_comparison_section(report))
    if report.traces_comparison is not None:
        sections.append(_traces_comparison_section(report.traces_comparison))
    if report.audit is not None:
        from takealook.report.db import database_section

        sections.append(Section("Databases", (), tuple(database_section(d) for d in report.audit.databases)))
    if report.notes:
        sections.append(Section("Notes", tuple(Paragraph(n, "warning") for n in report.notes)))
    return Document("takealook report", tuple(sections), subtitle=_subtitle(report), meta=_meta(report))


def _subtitle(report: CombinedReport) -> str:
    seen = sum(1 for f in report.findings if f.impact_ms_per_min is not None)
    return (f"{len(report.findings)} findings; {seen} seen in users' requests, ranked by the milliseconds of "
            "user-visible time they cost per minute of traffic (≈: an estimate, the predicted saving of an index).")


def _meta(report: CombinedReport) -> tuple:
    meta = []
    totals = getattr(report.traces, "totals", None)
    if totals is not None:
        meta += [("traces", totals.traces), ("services", ", ".join(totals.services)),
                 ("minutes of traffic", round(totals.window_minutes, 1))]
    if report.audit is not None:
        meta.append(("databases", ", ".join(d.database or d.dsn for d in report.audit.databases)))
    if report.comparison is not None:
        meta.append(("load runs", f"{', '.join(report.comparison.before)} → {', '.join(report.comparison.after)}"))
    if report.traces_comparison is not None:
        from takealook.report.traces_compare import sides_text

        meta.append(("traces compared", sides_text(report.traces_comparison)))
    if report.applied_index:
        meta.append(("change applied", report.applied_index))
    return tuple(meta)


def _findings_section(report: CombinedReport) -> Section:
    if not report.findings:
        return Section("Findings", (Paragraph("Nothing to report: no trace or database finding.", "good"),))
    rows = [(f.rank, f.title, _where(f), _cost(f), f.severity) for f in report.findings]
    table = Table.of(("#", "finding", "where", "cost to users", "severity"), rows, right=("#", "cost to users"))
    details = tuple(_finding_section(f, report) for f in report.findings[:DETAILED])
    return Section("Findings, ranked by cost to users", (table,), details)


def _finding_section(item: Ranked, report: CombinedReport) -> Section:
    blocks: list = [Paragraph(item.title, TONES.get(item.severity, "info"))]
    facts = [("kind", item.kind), ("cost to users", _cost(item))]
    if item.endpoints:
        facts.append(("endpoints", ", ".join(item.endpoints)))
    if item.service:
        facts.append(("service", item.service))
    if item.database:
        facts.append(("database", item.database))
    if item.trace_ids:
        facts.append(("traces", ", ".join(item.trace_ids[:3])))
    blocks.append(KeyValues(tuple(facts)))
    if item.statement:
        blocks.append(Code(_pretty(item.statement)))
    if item.pg_stats is not None:
        s = item.pg_stats
        blocks.append(Table.of(("calls", "total ms", "mean ms", "rows", "blocks read", "share of DB time"),
                               [(s.calls, s.total_ms, s.mean_ms, s.rows, s.shared_blks_read, f"{s.share_pct:.1f}%")],
                               title="pg_stat_statements"))
    if item.index_impact is not None and item.index_impact.statements:
        blocks.append(_estimate_block(item.index_impact))
    if item.index is not None:
        blocks += _index_blocks(item.index, applied=report.applied_index)
    if item.fix and item.index is None:
        blocks.append(Paragraph(f"Fix: {item.fix}"))
    if item.measured:
        blocks += _measured_blocks(item.measured)
    if item.waterfall is not None:
        blocks.append(_waterfall(item.waterfall))
    return Section(f"{item.rank}. {item.kind.replace('_', ' ')}: {_where(item) or item.title[:60]}", tuple(blocks))


def _pretty(sql: str) -> str:
    try:
        import sqlparse

        return sqlparse.format(sql, reindent=True, keyword_case="upper")
    except ImportError:  # sqlparse comes with takealook[audit]
        return sql


def _index_blocks(index, applied) -> list:
    size = f", {fmt_value(index.size_bytes / 1048576)} MiB" if index.size_bytes else ""
    verified = "proved with HypoPG" if index.verified else "not verified (HypoPG unavailable)"
    rows = [(_short(s.query), s.calls, s.cost_before, s.cost_after,
             f"{s.saving_pct:.0f}%" if s.saving_pct is not None else None) for s in index.statements]
    blocks = [Paragraph(f"Suggested index ({verified}{size}):"), Code(index.create_sql),
              Table.of(("statement", "calls", "cost before", "cost with index", "saving"), rows,
                       title="Predicted by the planner")]
    if applied and applied.strip().rstrip(";") == index.create_sql.strip().rstrip(";"):
        blocks.append(Paragraph("This index was applied between the two load runs; measured effect below.", "good"))
    return blocks


def _estimate_block(impact) -> Table:
    rows = [(_short(s.query, 60), s.traced_calls, s.pgss_mean_ms, s.calls_counted, s.measured_ms,
             f"{s.saving_pct:.0f}%" if s.saving_pct is not None else None, s.predicted_ms) for s in impact.statements]
    return Table.of(("statement", "calls traced", "pgss mean ms", "calls counted", "measured ms", "predicted saving",
                     "saved ms (estimate)"), rows,
                    title=f"Estimated saving over the traces' {fmt_value(impact.window_minutes)} minutes: "
                          "pg_stat_statements' mean time × calls (at most those it counted) × the planner's "
                          "predicted saving")


def _measured_blocks(measured) -> list:
    rows = []
    charts = []
    for e in measured:
        p95 = e.changes.get("p95")
        change = f"{p95.change_pct:+.0f}%" if p95 is not None and p95.change_pct is not None else None
        rows.append((e.name, e.verdict, e.before.p50_ms, e.after.p50_ms, e.before.p95_ms, e.after.p95_ms, change))
        charts.append(Distribution(f"{e.name}: latency before and after",
                                   (("before", e.latencies_before), ("after", e.latencies_after))))
    table = Table.of(("endpoint", "verdict", "p50 before", "p50 after", "p95 before", "p95 after", "p95 change"),
                     rows, title="Measured with load tests", right=("p95 change",))
    return [table] + charts


def _waterfall(slow) -> Waterfall:
    spans = tuple(WaterfallSpan(r.name, r.service, r.start_ms, r.duration_ms, r.depth, r.error) for r in slow.rows)
    left = f" ({slow.rows_left_out} more spans left out)" if slow.rows_left_out else ""
    return Waterfall.of(f"Slowest trace of {slow.endpoint}: {fmt_value(slow.duration_ms)} ms, "
                     f"trace {slow.trace_id}{left}", spans)


def _short(text: str, width: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _time_section(traces) -> Section:
    endpoints = sorted(traces.endpoints, key=lambda e: -e.requests_per_min * e.mean_ms)
    rows = [(endpoint_label(e), e.service, e.requests_per_min, e.error_rate * 100, e.client_error_rate * 100,
             e.p50_ms, e.p95_ms, e.p99_ms, e.sql_per_request, e.services_per_request) for e in endpoints]
    table = Table.of(("endpoint", "service", "req/min", "errors %", "4xx %", "p50 ms", "p95 ms", "p99 ms", "SQL/req",
                      "services/req"), rows, title="Entry endpoints as users feel them")
    shares = StackedBars("Share of critical-path time (services' own code, SQL, outbound HTTP)",
                         tuple((e.endpoint, tuple((k, round(v * 100, 1)) for k, v in
                                                  sorted(e.critical_path.items(), key=lambda kv: -kv[1])))
                               for e in endpoints if e.critical_path))
    return Section("Where the time goes", (shares, table) if shares.rows else (table,))


def _comparison_section(report: CombinedReport) -> Section:
    c = report.comparison
    rows = []
    for e in c.endpoints:
        change = e.changes.get(c.metric)
        rows.append((e.name, e.verdict, e.before.requests, e.after.requests, getattr(e.before, f"{c.metric}_ms", None),
                     getattr(e.after, f"{c.metric}_ms", None),
                     f"{change.change_pct:+.1f}%" if change and change.change_pct is not None else None,
                     _ci(change)))
    blocks = [Paragraph(f"Runs {', '.join(c.before)} before and {', '.join(c.after)} after; verdicts on {c.metric} "
                        f"with a {100 * c.confidence:g}% block-bootstrap interval and a noise floor of "
                        f"{c.noise_floor_pct:g}%."),
              Table.of(("endpoint", "verdict", "requests before", "requests after", f"{c.metric} before",
                        f"{c.metric} after", "change", f"{100 * c.confidence:g}% interval"), rows,
                       right=("change", f"{100 * c.confidence:g}% interval"))]
    blocks += [Distribution(f"{e.name}", (("before", e.latencies_before), ("after", e.latencies_after)))
               for e in c.endpoints]
    blocks += [Paragraph(w, "warning") for w in c.warnings]
    return Section("Before and after the change", tuple(blocks))


def _traces_comparison_section(c) -> Section:
    from takealook.report.traces_compare import endpoint_section, sides_text, verdict_table

    s = c.settings
    blocks = (Paragraph(f"Production traces, {sides_text(c)}; verdicts on {s.metric} with a {100 * s.confidence:g}% "
                        f"block-bootstrap interval and a noise floor of {s.noise_floor_pct:g}%; \"where\": the part "
                        "of the critical path that moved most and the statement or call behind it."),
              verdict_table(c), *(Paragraph(w, "warning") for w in c.warnings))
    if c.sampled:
        blocks += (Paragraph("A large window: the verdicts over every request's root span, \"where\" over a random "
                             "sample of whole traces per endpoint and side (each endpoint says how many).", "info"),)
    changed = tuple(endpoint_section(e, s.confidence, c.sampled) for e in c.endpoints
                    if e.comparison.verdict != "no detectable change")
    return Section("Before and after in production traces", blocks, changed)


def _ci(change) -> str | None:
    if change is None or not change.ci_pct:
        return None
    low, high = change.ci_pct
    return f"[{low:+.1f}%, {high:+.1f}%]"


# --------------------------------------------------------------------------- json


def contract(report: CombinedReport) -> dict:
    """The JSON of ``takealook report --format json``: ranked findings plus each source's own contract."""
    findings = []
    for f in report.findings:
        entry = {"rank": f.rank, "kind": f.kind, "title": f.title, "source": f.source, "severity": f.severity,
                 "impact_ms_per_min": _round(f.impact_ms_per_min), "impact_estimated": f.estimated,
                 "service": f.service, "database": f.database,
                 "endpoints": list(f.endpoints), "statement": f.statement, "fingerprint": f.fingerprint,
                 "fix": f.fix, "trace_ids": list(f.trace_ids)}
        if f.pg_stats is not None:
            entry["pg_stat_statements"] = dataclasses.asdict(f.pg_stats)
        if f.index is not None:
            entry["index"] = {"table": f.index.table, "columns": list(f.index.columns), "create_sql": f.index.create_sql,
                              "verified": f.index.verified, "size_bytes": f.index.size_bytes,
                              "saving_pct": max((s.saving_pct or 0 for s in f.index.statements), default=None)}
        if f.index_impact is not None:
            entry["index_impact"] = dataclasses.asdict(f.index_impact)
        if f.measured:
            entry["measured"] = [{"endpoint": e.name, "verdict": e.verdict, "p95_before_ms": _round(e.before.p95_ms),
                                  "p95_after_ms": _round(e.after.p95_ms)} for e in f.measured]
        findings.append(entry)
    out: dict = {"schema_version": report.schema_version, "findings": findings, "applied_index": report.applied_index,
                 "notes": list(report.notes)}
    if report.traces is not None:
        from takealook.report.traces import contract as traces_contract

        out["traces"] = traces_contract(report.traces)
    if report.audit is not None:
        from takealook.report.db import audit_contract

        out["databases"] = audit_contract(report.audit)["databases"]
    if report.comparison is not None:
        from takealook.report.load import compare_contract

        out["comparison"] = compare_contract(report.comparison)
    if report.traces_comparison is not None:
        from takealook.report.traces_compare import contract as traces_compare_contract

        out["traces_comparison"] = traces_compare_contract(report.traces_comparison)
    return out


def _round(value):
    return round(value, 3) if isinstance(value, float) else value
