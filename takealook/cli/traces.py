"""``takealook traces import|report`` (issues 3 and 5); ``traces compare`` is ``traces_compare.py``.

``traces report`` reads the span store and prints where requests spend their
time: endpoints as users feel them, critical paths, and findings ranked by
milliseconds of user-visible time per minute of traffic. ``--since``/``--until``
take a duration back from now (``90s``, ``15m``, ``1h``, ``2d``) or a time
(``2024-05-01T10:00``, ``2024-05-01 10:00:00+02:00``; UTC when no zone is
given). Traffic of load tests (``takealook load run``) is left out unless
``--include-load`` (all of it, with the rest) or ``--load-run LABEL`` (one
run alone). ``--dsn`` (repeatable) joins the statements to pg_stat_statements of
those databases, read-only. The thresholds have flags of their own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time

from takealook.analyzers.traces.settings import Settings
from takealook.cli import traces_compare, traces_import
from takealook.cli.common import (
    add_load_options, add_output_options, add_store_option, emit, load_filter, require, store_path,
)
from takealook.cli.flags import Flag, add_flags, build
from takealook.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


# The analyses' thresholds: Settings' own fields and defaults.
THRESHOLD_FLAGS = (
    Flag("n_plus_one_min_count", "--n-plus-one-min-count",
         "statements with one fingerprint under one parent that make a run"),
    Flag("n_plus_one_min_ms", "--n-plus-one-min-ms", "report a run whose median time per request reaches this",
         "MS"),
    Flag("n_plus_one_long_run", "--n-plus-one-long-run",
         "... or whose median length does, in half the endpoint's requests"),
    Flag("n_plus_one_min_impact_ms_per_min", "--n-plus-one-min-impact",
         "... or whose avoidable time reaches this per minute of traffic", "MS"),
    Flag("repeated_http_min_count", "--repeated-http-min-count", "identical calls under one parent"),
    Flag("sequential_min_saving_ms", "--sequential-min-saving-ms",
         "report sequential calls that would save at least this in parallel", "MS"),
    Flag("slow_statement_p95_ms", "--slow-statement-ms", "a statement is slow when its p95 reaches this", "MS"),
    Flag("clock_skew_tolerance_ms", "--clock-skew-tolerance-ms", "a child may start this much before its parent",
         "MS"),
    Flag("top_statements", "--top-statements", "statements listed, by total time"),
    Flag("paths_per_route", "--paths-per-route", "pages of a catch-all route (Wagtail's, <path:...>, no route) "
         "shown as endpoints of their own; the rest are one row"),
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("traces", help="import and analyse traces")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    traces_import.register(verbs)
    rep = verbs.add_parser("report", help="where requests spend their time",
                           description="Endpoints as users feel them, critical paths, N+1 queries, sequential "
                                       "and public-address calls, slow statements, errors, instrumentation health.")
    add_store_option(rep)
    rep.add_argument("--since", metavar="WHEN", help="only traces that started after: 1h, 30m, 2024-05-01T10:00")
    rep.add_argument("--until", metavar="WHEN", help="only traces that started before (same forms as --since)")
    rep.add_argument("--service", metavar="S", help="only traces that touch service S")
    rep.add_argument("--endpoint", metavar="E",
                     help='only traces that entered by E: "GET /orders/{id}", a route or page ("/blog/"), '
                          'a route as the framework wrote it ("/orders/<int:id>"), or "GET /{path}" for every '
                          'page of a catch-all route')
    add_load_options(rep)
    rep.add_argument("--dsn", action="append", default=[], metavar="DSN",
                     help="join statements to pg_stat_statements of this database (read-only; repeatable)")
    rep.add_argument("--advise-indexes", action="store_true",
                     help="with --dsn: add the HypoPG-verified index advice for the slow statements")
    add_flags(rep.add_argument_group("thresholds"), Settings, THRESHOLD_FLAGS)
    rep.add_argument("--jobs", type=int, metavar="N",
                     help="processes reading the store (default: one per CPU, up to 4, for large stores)")
    add_output_options(rep)
    rep.set_defaults(run=run_report)
    traces_compare.register(verbs)


def parse_when(text: str | None, now_ns: int, flag: str) -> int | None:
    """Nanoseconds since the epoch for a ``--since``/``--until`` value."""
    if text is None:
        return None
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _SECONDS[match.group(2).lower()]
        return now_ns - int(seconds * 1e9)
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: give a duration back from now (90s, 15m, 1h, 2d) "
                         "or a time (2024-05-01T10:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1e9)


def _settings(args: argparse.Namespace) -> Settings:
    return build(Settings, args, THRESHOLD_FLAGS)


def run_report(args: argparse.Namespace) -> int:
    if args.advise_indexes and not args.dsn:
        raise UsageError("--advise-indexes needs --dsn: the database to advise on")
    if args.dsn:  # the analyses are standard library; the join needs a driver and fingerprints
        require("psycopg", "audit")
        require("pglast", "audit")
    from takealook.analyzers.traces.settings import Window
    from takealook.analyzers.traces.source import analyze_store
    from takealook.report import traces as adapter

    now = time.time_ns()
    since, until = parse_when(args.since, now, "--since"), parse_when(args.until, now, "--until")
    if since is not None and until is None:
        until = now  # "the last hour" is a window of one hour, however recent the traffic
    settings = _settings(args)
    window = Window(since, until)
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    analysis, report = analyze_store(store_path(args), settings, window, service=args.service,
                                     endpoint=args.endpoint, progress=_progress_line(), jobs=args.jobs,
                                     load=load_filter(args))
    if args.dsn:
        report = _join_databases(analysis, report, args)
    for note in report.notes:
        print(f"takealook: note: {note}", file=sys.stderr)
    emit(args, lambda: adapter.document(report), lambda: adapter.contract(report))
    return 0


def _join_databases(analysis, report, args: argparse.Namespace):
    """pg_stat_statements (and, with --advise-indexes, the index advice) joined to the traced statements."""
    from takealook.analyzers import join

    slow = [s.statement for s in report.statements if s.p95_ms >= report.settings.slow_statement_p95_ms]
    reads = [join.read_database(dsn, slow if args.advise_indexes else ()) for dsn in args.dsn]
    statements = join.join_statements(list(report.statements), reads)
    return analysis.with_statements(report, statements, [note for read in reads for note in read.notes])


def _progress_line():
    """A progress line on stderr when it is a terminal; None (no callback) in pipes and CI."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        if not total:
            return
        end = "\n" if done >= total else ""
        print(f"\ranalysing traces: {done:,}/{total:,}", end=end, file=sys.stderr, flush=True)

    return show
