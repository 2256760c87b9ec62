"""``takealook traces import FILE...``: load OTLP JSON files (the Collector's file exporter) into the store.

The store is an SQLite file, or a ClickHouse table by URL (``chdb:DIR``,
``clickhouse://...``), written in the layout of the Collector's clickhouse
exporter (created when missing). Idempotent: importing a file twice stores each span once. Bad lines are
skipped and listed (the first 20), and the command still exits 0 when
something was imported; it exits 2 when a file cannot be read at all, or
when every line was bad.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from takealook.cli.common import add_store_option, require, store_path
from takealook.errors import InputError


def register(verbs) -> None:
    imp = verbs.add_parser("import", help="load OTLP JSON files into the store",
                           description="Load OTLP JSON lines files (as the OpenTelemetry Collector's file "
                                       "exporter writes them, .gz too) into the span store.")
    imp.add_argument("files", nargs="+", metavar="FILE")
    add_store_option(imp)
    imp.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    require("opentelemetry.proto", "audit")
    from takealook.collector.importer import check_files, import_files

    paths = [Path(f) for f in args.files]
    target = store_path(args)  # a bad URL stops here, before anything is created
    check_files(paths)  # before creating a store for nothing
    store = _writer(target)
    show = sys.stderr.isatty()
    try:
        result = import_files(paths, store, progress=_progress if show else None)
    finally:
        store.close()
    if show:
        sys.stderr.write("\r\x1b[K")
    for problem in result.problems:
        print(f"takealook traces import: skipped {problem}", file=sys.stderr)
    if result.skipped_lines > len(result.problems):
        print(f"takealook traces import: ... and {result.skipped_lines - len(result.problems)} more bad lines",
              file=sys.stderr)
    print(f"imported {result.spans_new} new spans ({result.spans_duplicate} already stored"
          + (f", {result.spans_rejected} invalid" if result.spans_rejected else "")
          + f") and {result.points_new} metric points from {result.files} file(s) into {target}")
    ignored = getattr(store, "points_ignored", 0)
    if ignored:
        print(f"takealook traces import: note: {ignored} metric points not stored (a ClickHouse store holds the "
              "exporter's spans table; rates come from the traces)", file=sys.stderr)
    if result.skipped_lines and result.lines == result.skipped_lines:
        raise InputError("no line of the given files is an OTLP export request; see the lines above")
    return 0


def _writer(target):
    if isinstance(target, Path):
        from takealook.collector.store import SpanStore

        return SpanStore(target)
    from takealook.collector.clickhouse_write import ClickHouseWriter

    return ClickHouseWriter(target)


def _progress(result) -> None:
    sys.stderr.write(f"\r\x1b[Kimporting: {result.lines:,} lines, {result.spans_new:,} new spans")
    sys.stderr.flush()
