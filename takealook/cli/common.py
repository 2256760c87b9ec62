"""Options and output handling shared by the commands."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable

from takealook.errors import MissingExtra, UsageError

FORMATS = ("text", "md", "html", "json")
_EXTENSIONS = {".txt": "text", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".json": "json"}

STORE_ENV = "TAKEALOOK_STORE"
DEFAULT_STORE = os.path.join(".takealook", "spans.db")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, help="output format (default: from -o's extension, else text)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")


def add_store_option(parser: argparse.ArgumentParser, files_only: bool = False) -> None:
    parser.add_argument(
        "--store",
        metavar="PATH" if files_only else "STORE",
        help=f"span store (default: ${STORE_ENV} or {DEFAULT_STORE})" if files_only else
        f"span store: an SQLite file, chdb:DIR, or clickhouse://[user[:password]@]host[:port]/database"
        f"[?table=otel_traces&secure=1] (the Collector's clickhouse exporter's table; default: ${STORE_ENV} "
        f"or {DEFAULT_STORE})",
    )


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """``--include-load`` / ``--load-run LABEL``: which load-test traffic an analysis of the store reads."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--include-load", action="store_true",
                       help="read the traffic of load tests too (left out by default)")
    group.add_argument("--load-run", metavar="LABEL", help="read the traffic of this load run alone")


def load_filter(args: argparse.Namespace):
    """The store's ``load`` argument for the options of ``add_load_options``: False, True or a run label."""
    if args.load_run is not None:
        if not args.load_run.strip():
            raise UsageError("--load-run needs a run label")
        return args.load_run.strip()
    return bool(args.include_load)


def store_path(args: argparse.Namespace):
    """The store the command reads or writes: a Path (SQLite) or a ``takealook.collector.StoreURL``.

    A URL is never taken for a file name; a bad one is an InputError (exit 2)."""
    from takealook.collector.location import parse_store

    return parse_store(getattr(args, "store", None) or os.environ.get(STORE_ENV) or DEFAULT_STORE)


def store_file(args: argparse.Namespace, command: str) -> Path:
    """``store_path`` for commands that write the SQLite store themselves (``collect``): a URL is a usage error."""
    store = store_path(args)
    if not isinstance(store, Path):
        raise UsageError(f"{command} keeps spans in an SQLite file; to fill ClickHouse, run the OpenTelemetry "
                         "Collector with its clickhouse exporter (see otel-collector.yaml), or `takealook traces "
                         "import FILE --store URL`")
    return store


def store_exists(store) -> bool:
    """An SQLite store's file exists; a URL is taken to exist (opening it says otherwise)."""
    return not isinstance(store, Path) or store.exists()


def output_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    if args.output:
        suffix = Path(args.output).suffix.lower()
        if suffix not in _EXTENSIONS:
            raise UsageError(f"cannot tell the format of {args.output!r} from its extension; add --format")
        return _EXTENSIONS[suffix]
    return "text"


def emit(args: argparse.Namespace, document_factory: Callable[[], Any], json_factory: Callable[[], dict]) -> None:
    """Render a result in the format the user asked for and write it out.

    ``document_factory`` builds a ``takealook.report.model.Document`` (text, md,
    html); ``json_factory`` builds the JSON contract object.
    """
    from takealook.report import render

    fmt = output_format(args)
    if fmt == "json":
        text = render.to_json(json_factory())
    else:
        text = render.render(document_factory(), fmt, color=_use_color(args))
    write_text(args.output, text)


def write_text(path: str | None, text: str) -> None:
    if not text.endswith("\n"):
        text += "\n"
    if path in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise UsageError(f"cannot write {path}: folder {target.parent} does not exist")
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    print(f"wrote {path}", file=sys.stderr)


def _use_color(args: argparse.Namespace) -> bool:
    return args.output in (None, "-") and sys.stdout.isatty() and "NO_COLOR" not in os.environ


def require(module: str, extra: str):
    """Import an optional dependency or raise an error naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtra(extra, module) from error


def require_installed(module: str, extra: str) -> None:
    """Like ``require`` without importing: for modules that must not be imported here (locust
    monkey-patches the whole process with gevent) or are only used by subprocesses."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(extra, module)


def not_implemented(name: str) -> Callable[[argparse.Namespace], int]:
    from takealook.errors import NotImplementedYet

    def run(args: argparse.Namespace) -> int:
        raise NotImplementedYet(name)

    return run
