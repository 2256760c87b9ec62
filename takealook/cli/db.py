"""``takealook db audit|indexes`` (issue 4): read-only audits of live PostgreSQL databases.

Connection flags follow psql: ``--dsn`` takes a ``key=value`` string or a
``postgresql://`` URI; without it libpq's ``PG*`` variables (and ``~/.pgpass``)
say where to connect. Passwords are masked in every output and message.

Exit codes: 0 done; 2 bad usage, or nothing could be done: ``db audit`` exits
2 only when no database could be audited (each unreachable DSN gets one line
on stderr and an ``error`` in the report, the others are audited); ``db
indexes`` exits 2 when the database cannot be reached, or when every
statement given with ``--query``/``--queries-file`` was rejected (it does not
parse, or names a missing table) and there was no workload to advise on.
See docs/db.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from takealook.analyzers.db.options import AuditOptions, IndexOptions
from takealook.cli.common import add_output_options, emit, require
from takealook.cli.flags import Flag, add_flags, age_seconds, build, percentage, positive_int, show_age
from takealook.errors import UsageError

_BAD_INPUT = ("unparsed", "missing_table", "cannot_plan", "not_dml")


# The advice's thresholds and the session's timeouts: IndexOptions' own fields and defaults.
ADVICE_FLAGS = (
    Flag("min_calls", "--min-calls", "workload statements called fewer times are skipped as too cheap"),
    Flag("min_total_ms", "--min-time", "workload statements with less total time are skipped", "MS"),
    Flag("min_saving_pct", "--min-saving", "keep an index only if it cuts a statement's plan cost by PCT%",
         "PCT", percentage),
    Flag("max_statements", "--max-statements", "advise on the N most expensive workload statements", "N",
         positive_int),
    Flag("max_indexes_per_table", "--max-indexes-per-table", "new indexes per table at most; each one costs "
         "every write", "N", positive_int),
    Flag("connect.statement_timeout_ms", "--statement-timeout", "statement_timeout of the audit's session", "MS",
         positive_int),
    Flag("connect.lock_timeout_ms", "--lock-timeout", "lock_timeout of the audit's session", "MS", positive_int),
)
AUDIT_FLAGS = (
    Flag("top", "--top", "statements per ranking", "N", positive_int),
    Flag("thresholds.min_stats_age_s", "--min-stats-age", "advise dropping unused or overlapping indexes only "
         "when the index usage statistics cover at least this long (7d, 36h; 0: always)", "AGE", age_seconds,
         show_age),
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("db", help="audit PostgreSQL databases (read-only)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    audit = verbs.add_parser(
        "audit", help="statements, missing indexes, index and table health, sessions, exposure",
        description="Audit each database read-only: one report, a section per --dsn.")
    audit.add_argument("--dsn", action="append", metavar="DSN",
                       help="key=value string or postgresql:// URI; repeat for several databases "
                            "(default: libpq's PG* environment)")
    add_flags(audit, AuditOptions, AUDIT_FLAGS)
    audit.add_argument("--no-index-advice", action="store_true", help="skip the index advice")
    add_flags(audit, IndexOptions, ADVICE_FLAGS)
    add_output_options(audit)
    audit.set_defaults(run=run_audit)

    indexes = verbs.add_parser(
        "indexes", help="missing indexes, proved with HypoPG",
        description="Advise indexes for pg_stat_statements' workload and/or the statements given; "
                    "verified with HypoPG hypothetical indexes when the extension is installed.")
    indexes.add_argument("--dsn", metavar="DSN", help="key=value string or postgresql:// URI "
                                                      "(default: libpq's PG* environment)")
    indexes.add_argument("--query", action="append", default=[], metavar="SQL",
                         help="a statement to advise on (repeatable); $n, %%s and literals all work")
    indexes.add_argument("--queries-file", metavar="FILE", help="statements separated by semicolons")
    indexes.add_argument("--include-workload", action="store_true",
                         help="with --query/--queries-file: advise on pg_stat_statements' workload too")
    add_flags(indexes, IndexOptions, ADVICE_FLAGS)
    add_output_options(indexes)
    indexes.set_defaults(run=run_indexes)


def _options(args, use_workload: bool = True):
    return build(IndexOptions, args, ADVICE_FLAGS, use_workload=use_workload)


def _require_audit_extra() -> None:
    for module in ("psycopg", "pglast", "sqlparse"):
        require(module, "audit")


def run_audit(args) -> int:
    _require_audit_extra()
    from takealook.analyzers.db.audit import audit_databases
    from takealook.report import db as report

    options = build(AuditOptions, args, AUDIT_FLAGS, index=_options(args), advise=not args.no_index_advice)
    progress = _Progress()
    try:
        result = audit_databases(args.dsn or [None], options, progress if progress.enabled else None)
    finally:
        progress.done()
    for database in result.databases:
        if database.error:
            print(f"takealook: {database.dsn}: {database.error}", file=sys.stderr)
        elif not args.dsn:
            _say_which(database.dsn)
    if not result.audited:
        return 2
    emit(args, lambda: report.audit_document(result), lambda: report.audit_contract(result))
    return 0


def _given_queries(args) -> list[str]:
    from takealook.analyzers.db.parse import split_statements

    queries = [q for q in args.query if q.strip()]
    if len(queries) != len(args.query):
        raise UsageError("--query needs a statement (it was empty)")
    if args.queries_file:
        path = Path(args.queries_file)
        try:
            text = sys.stdin.read() if args.queries_file == "-" else path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read --queries-file {args.queries_file}: {error}") from None
        from_file = split_statements(text)
        if not from_file:
            raise UsageError(f"--queries-file {args.queries_file} holds no statement")
        queries += from_file
    return queries


def run_indexes(args) -> int:
    _require_audit_extra()
    from takealook.analyzers.db.connection import mask_dsn
    from takealook.analyzers.db.index_advice import SOURCE_GIVEN, advise_indexes
    from takealook.report import db as report

    queries = _given_queries(args)
    options = _options(args, use_workload=not queries or args.include_workload)
    progress = _Progress()
    try:
        advice = advise_indexes(args.dsn, queries, options, progress if progress.enabled else None)
    finally:
        progress.done()
    rejected = [s for s in advice.skipped if s.source == SOURCE_GIVEN and s.code in _BAD_INPUT]
    for item in rejected:
        print(f"takealook: statement {' '.join(item.query.split())[:80]!r}: {item.reason}", file=sys.stderr)
    dsn = advice.dsn or mask_dsn(args.dsn)
    if not args.dsn:
        _say_which(dsn)
    emit(args, lambda: report.indexes_document(advice, dsn), lambda: report.indexes_contract(advice, dsn))
    if queries and len(rejected) == len(queries) and not options.use_workload:
        return 2
    return 0


def _say_which(display: str) -> None:
    """Without --dsn, libpq chose from PG* variables and its defaults: say which database that was."""
    print(f"takealook: no --dsn: audited {display} (chosen by libpq from the PG* environment and its defaults)",
          file=sys.stderr)


class _Progress:
    """One rewritten line on stderr on a terminal; nothing in pipes and CI."""

    def __init__(self):
        self.enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self._shown = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        text = f"{stage} {done}/{total}" if total > 1 else stage
        sys.stderr.write("\r\033[K" + text[:100])
        sys.stderr.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
