"""``takealook report``: one report from the traces, the database audits and a load comparison (issue 7).

Each source is optional; at least one is needed. The span store is read when
it exists (``--store``, ``$TAKEALOOK_STORE`` or ``.takealook/spans.db``); a
store named explicitly that does not exist is an error, the default one is
skipped with a note. ``--dsn`` (repeatable) audits databases, read-only;
``--before``/``--after`` name load runs (labels under ``.takealook/runs`` or
folders), or filters of ``traces compare`` (``deployment.environment=aws``,
``2026-12-01T10:00..2026-12-01T12:00``, ``since 2h``: see
``takealook.cli.traces_compare``): the report then compares the two sides of
the store's traffic. A value with ``=``, ``:``, a space or a leading
``since``/``until`` is a filter (run labels have none of them). Traffic of load
tests is left out of the trace findings and comparisons unless
``--include-load`` or ``--load-run LABEL``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from takealook.analyzers.db.options import AuditOptions
from takealook.cli.common import (
    add_load_options, add_output_options, add_store_option, emit, load_filter, require, store_exists, store_path,
)
from takealook.cli.db import AUDIT_FLAGS
from takealook.cli.flags import add_flags, build
from takealook.errors import UsageError

STATS_AGE_FLAGS = tuple(flag for flag in AUDIT_FLAGS if flag.flag == "--min-stats-age")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="one report from traces, audits and load runs",
        description="One report, findings ranked by milliseconds of user-visible time per minute of traffic, "
                    "each with its evidence: a slow trace across the apps, the statement, its "
                    "pg_stat_statements figures, the suggested index and the measured before/after.")
    add_store_option(parser)
    parser.add_argument("--since", metavar="WHEN", help="only traces after: 1h, 30m, 2024-05-01T10:00")
    add_load_options(parser)
    parser.add_argument("--dsn", action="append", default=[], metavar="DSN",
                        help="audit this database too (repeatable; read-only)")
    add_flags(parser, AuditOptions, STATS_AGE_FLAGS)
    parser.add_argument("--before", action="append", nargs="+", metavar="RUN|FILTER",
                        help="load runs before the change, or filters of the traces before it "
                             "(deployment.environment=heroku, since 2h: as in `traces compare`)")
    parser.add_argument("--after", action="append", nargs="+", metavar="RUN|FILTER",
                        help="load runs after the change, or filters of the traces after it")
    parser.add_argument("--runs-dir", metavar="DIR", help="where load runs are kept (default .takealook/runs)")
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    if bool(args.before) != bool(args.after):
        raise UsageError("give both --before and --after runs, or neither")
    before = [word for group in args.before or () for word in group]
    after = [word for group in args.after or () for word in group]
    filters = [_is_filter(word) for word in before + after]
    if any(filters) and not all(filters):
        raise UsageError("--before/--after take load runs or trace filters (KEY=VALUE, FROM..TO, since WHEN), "
                         "not both")
    traces_sides = all(filters) and bool(filters)
    store = store_path(args)
    explicit_store = bool(args.store or os.environ.get("TAKEALOOK_STORE"))
    if explicit_store and not store_exists(store):
        raise UsageError(f"no span store at {store}: run `takealook collect` first, or fix --store")
    use_store = store_exists(store)
    if traces_sides and not use_store:
        raise UsageError(f"--before/--after filters compare the traces of a span store, and there is none at {store}")
    if not (use_store or args.dsn or args.before):
        raise UsageError(f"nothing to report on: no span store at {store}, no --dsn and no --before/--after runs")
    from takealook.report import combined, combined_doc

    notes = []
    traces = _traces(store, args) if use_store else None
    if not use_store:
        notes.append(f"no span store at {store}: trace findings are left out")
    else:
        notes += traces.notes  # what the trace analysis left out (load-test traffic, a database not joined)
    audit = _audit(args.dsn, build(AuditOptions, args, STATS_AGE_FLAGS)) if args.dsn else None
    comparison = _comparison(args, before, after) if args.before and not traces_sides else None
    report = combined.build(traces, audit, comparison)
    if traces_sides:
        from dataclasses import replace

        from takealook.cli.traces_compare import compare_sides

        compared = compare_sides(store, before, after, load_filter(args))
        report = replace(report, traces_comparison=compared, notes=report.notes + compared.notes)
    if notes:
        from dataclasses import replace

        report = replace(report, notes=tuple(notes) + report.notes)
    for note in report.notes:
        print(f"takealook: note: {note}", file=sys.stderr)
    emit(args, lambda: combined_doc.document(report), lambda: combined_doc.contract(report))
    return 0


def _traces(store, args):
    from takealook.analyzers.traces import Settings, Window
    from takealook.analyzers.traces.source import analyze_store
    from takealook.cli.traces import parse_when

    now = time.time_ns()
    since = parse_when(args.since, now, "--since")
    return analyze_store(store, Settings(), Window(since, now if since is not None else None),
                         load=load_filter(args))[1]


def _audit(dsns: list, options: AuditOptions):
    require("psycopg", "audit")
    require("pglast", "audit")
    from takealook.analyzers.db.audit import audit_databases

    report = audit_databases(dsns, options)
    if not report.audited:
        reasons = "; ".join(f"{d.dsn}: {d.error}" for d in report.databases)
        raise UsageError(f"no database could be audited ({reasons})")
    return report


def _is_filter(word: str) -> bool:
    """A trace filter rather than a load run: run labels have no '=', ':' or space (``runs.check_label``)."""
    return any(c in word for c in "=: ") or word.strip().lower() in ("since", "until")


def _comparison(args, before: list, after: list):
    from takealook.loadtests.compare import compare_runs
    from takealook.loadtests.runs import load_run

    from takealook.cli.load import RUNS_ENV

    runs_dir = Path(args.runs_dir or os.environ.get(RUNS_ENV) or Path(".takealook") / "runs")
    return compare_runs([load_run(r, runs_dir) for r in before], [load_run(r, runs_dir) for r in after])
