"""Missing indexes for a workload, proved with HypoPG: ``takealook db indexes``.

Use::

    from takealook.analyzers.db.index_advice import advise_indexes
    advice = advise_indexes("postgresql://app@db/orders", queries=["SELECT ..."], options=IndexOptions())
    for index in advice.indexes:
        print(index.create_sql, index.statements[0].saving_pct)

The workload is pg_stat_statements' statements of the current database (at
least ``min_calls`` calls and ``min_total_ms`` in total, the
``max_statements`` most expensive) and/or the statements given. For each:

1. parse with pglast (a text it cannot parse is listed, ``unparsed``);
2. find, per table, the columns it filters, joins, sorts and groups on, through
   views, CTEs and subqueries (``predicates``), and turn them into candidate
   indexes (``candidates``), dropping those an existing index already serves;
3. EXPLAIN it (a generic plan when it has ``$n``) for its cost without new indexes;
4. with HypoPG: create every candidate hypothetically, EXPLAIN again, keep
   the indexes the plans use where the cost falls by at least
   ``min_saving_pct``, choose one set for the whole workload (a shorter index
   is dropped when a longer one with the same leading columns was chosen; a
   table gets at most ``max_indexes_per_table``, by benefit = each statement's
   total time times its saving), and EXPLAIN once more with only that set for
   the predicted cost per statement and ``hypopg_relation_size``;
5. without HypoPG: advise from the parse and the current plan (a sequential
   scan of a large table that keeps few rows), ``verified=False``.

Every statement not advised on is in ``skipped`` with a ``code``:
``unparsed``, ``not_dml``, ``missing_table``, ``foreign_table``,
``system_table``, ``no_candidate``, ``already_indexed``, ``cannot_plan``,
``too_cheap``, ``no_saving``, ``table_limit`` (its index lost to heavier
statements on a table that already gets ``max_indexes_per_table``). Nothing is written to the database; the session
is read-only and hypothetical indexes are reset at the end.

Each statement in the result carries ``fingerprint`` and ``queryid``, the keys
the trace analyzer joins on.
"""

from __future__ import annotations

from typing import Callable, Sequence

import psycopg

from takealook.analyzers.db.advice_types import (  # noqa: F401  (re-exported: the public result types)
    SOURCE_GIVEN,
    SOURCE_WORKLOAD,
    IndexAdvice,
    Job,
    SkippedStatement,
    StatementEffect,
    SuggestedIndex,
    WorkloadStatement,
    skipped,
)
from takealook.analyzers.db.candidates import candidates_for, covering_index
from takealook.analyzers.db.catalog import Catalog
from takealook.analyzers.db.connection import Session, connect
from takealook.analyzers.db import index_selection
from takealook.analyzers.db.explain import EXPLAIN_ERRORS, Explainer
from takealook.analyzers.db.findings import Finding
from takealook.analyzers.db.options import IndexOptions
from takealook.analyzers.db.parse import ParsedStatement, parse_statement
from takealook.analyzers.db.predicates import StatementShape, table_accesses
from takealook.analyzers.db.statements import StatementStat, statement_report

Progress = Callable[[str, int, int], None]


def advise_indexes(dsn: str | None, queries: Sequence[str] = (), options: IndexOptions | None = None,
                   progress: Progress | None = None) -> IndexAdvice:
    """Connect read-only to ``dsn`` and advise indexes for its workload and/or ``queries``."""
    options = options or IndexOptions()
    with connect(dsn, options.connect) as session:
        return advise(session, queries, options, progress=progress)


def advise(session: Session, queries: Sequence[str] = (), options: IndexOptions | None = None,
           statements: Sequence[StatementStat] | None = None, progress: Progress | None = None) -> IndexAdvice:
    """The advice on an open session; ``statements`` reuses a pg_stat_statements read (the audit's)."""
    options = options or IndexOptions()
    findings: list[Finding] = []
    items = [WorkloadStatement(q) for q in queries]
    out_skipped: list[SkippedStatement] = []
    if options.use_workload:
        if statements is None:
            report = statement_report(session)
            statements = report.all
            findings.extend(f for f in report.findings if f.kind in (
                "missing_extension", "extension_not_loaded", "missing_privilege"))
        workload, cheap = workload_items(statements, options)
        items += workload
        out_skipped += cheap
    explainer = Explainer(session)
    jobs, rejected = prepare_jobs(session, Catalog(session), explainer, items, options, progress)
    out_skipped += rejected
    indexes, rejected, hypo_finding = index_selection.select(session, explainer, jobs, options, progress)
    out_skipped += rejected
    if hypo_finding is not None:
        findings.append(hypo_finding)
    return IndexAdvice(tuple(indexes), tuple(out_skipped), hypo_finding is None, explainer.calls, len(items),
                       tuple(findings), session.server_version, session.display)


def workload_items(stats: Sequence[StatementStat], options: IndexOptions):
    """pg_stat_statements entries worth advising on, and the ones too cheap to bother."""
    items, cheap = [], []
    for stat in stats:
        item = WorkloadStatement(stat.query, SOURCE_WORKLOAD, stat.queryid, stat.calls, stat.total_ms)
        parsed = parse_statement(stat.query)
        if parsed.parsed and parsed.kind == "utility":
            continue  # DDL, SET, BEGIN...: no index helps them, and listing them buries the rest
        if stat.calls < options.min_calls or stat.total_ms < options.min_total_ms:
            cheap.append(skipped(item, f"too cheap: {stat.calls} calls, {stat.total_ms:.1f} ms in total "
                                       f"(thresholds: {options.min_calls} calls, {options.min_total_ms:g} ms)",
                                 "too_cheap", parsed))
        elif len(items) < options.max_statements:
            items.append(item)
    return items, cheap


def prepare_jobs(session: Session, catalog: Catalog, explainer: Explainer, items: list[WorkloadStatement],
                 options: IndexOptions, progress: Progress | None):
    jobs, out = [], []
    for number, item in enumerate(items, 1):
        if progress:
            progress("parse and plan", number, len(items))
        parsed = parse_statement(item.text)
        try:
            job_or_skip = _candidates(session, catalog, item, parsed, options)
        except Exception as error:  # noqa: BLE001 - one odd statement is skipped, never the end of the advice
            out.append(skipped(item, f"cannot analyse: unexpected {type(error).__name__}: "
                                     f"{session.describe_error(error)} (a takealook bug: please report it)",
                               "cannot_plan", parsed))
            continue
        if isinstance(job_or_skip, SkippedStatement):
            out.append(job_or_skip)
            continue
        job = job_or_skip
        try:
            job.before = explainer.explain(parsed)
        except EXPLAIN_ERRORS as error:
            out.append(job.skip(f"cannot plan: {session.describe_error(error)}", "cannot_plan"))
            continue
        if job.before.total_cost < options.min_cost:
            out.append(job.skip(f"too cheap: plan cost {job.before.total_cost:.1f} "
                                 f"(below {options.min_cost:g}; a tiny table or an index already serves it)",
                                 "too_cheap"))
            continue
        jobs.append(job)
    return jobs, out


def _candidates(session: Session, catalog: Catalog, item: WorkloadStatement, parsed: ParsedStatement,
                options: IndexOptions) -> Job | SkippedStatement:
    if not parsed.parsed:
        return skipped(item, f"unparsed ({parsed.error}); tables seen: {', '.join(parsed.tables_guess) or 'none'}",
                       "unparsed", parsed)
    if parsed.kind not in ("select", "update", "delete", "insert"):
        return skipped(item, f"not a query an index can speed up ({parsed.node_type})", "not_dml", parsed)
    try:
        shape = table_accesses(parsed, catalog)
    except psycopg.Error as error:
        return skipped(item, f"cannot read the catalog: {session.describe_error(error)}", "cannot_plan", parsed)
    finally:
        session.end()
    reason = _shape_problem(shape)
    if reason is not None:
        return skipped(item, reason[0], reason[1], parsed)
    job = Job(item, parsed, [])
    covered = []
    for access in shape.accesses:
        if access.relation.is_system:
            continue
        options_for_access = candidates_for(access, options.max_columns)
        if options_for_access:
            job.first_variants.append(options_for_access[0])
        for candidate in options_for_access:
            existing = covering_index(candidate, access.relation)
            if existing is None:
                job.candidates.append(candidate)
            else:
                covered.append(existing.name)
    if not job.candidates:
        if covered:
            return skipped(item, f"already indexed by {', '.join(dict.fromkeys(covered))}", "already_indexed", parsed)
        detail = "; ".join(shape.notes) or "no WHERE, JOIN, ORDER BY ... LIMIT or GROUP BY column an index could serve"
        return skipped(item, f"no candidate index: {detail}", "no_candidate", parsed)
    return job


def _shape_problem(shape: StatementShape) -> tuple[str, str] | None:
    if shape.missing:
        return f"relation {', '.join(shape.missing)} does not exist (or is not on the search_path)", "missing_table"
    tables = [a for a in shape.accesses if not a.relation.is_system]
    if shape.accesses and not tables:
        return "reads system catalogs only", "system_table"
    if shape.foreign and not tables:
        return (f"foreign table {', '.join(shape.foreign)}: its indexes live on the remote server",
                "foreign_table")
    return None
