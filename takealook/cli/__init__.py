"""The ``takealook`` command: ``takealook <noun> <verb>``.

Each noun lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``run`` to a function ``run(args) -> int``. A command
parses, calls one library function, picks a renderer and writes; errors from
the library (``TakealookError``) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from takealook import __version__
from takealook.cli import collect, db, demo, load, report, traces
from takealook.errors import TakealookError

COMMAND_MODULES = (collect, traces, db, load, report, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="takealook",
        description=(
            "Distributed tracing and performance audit for Python web backends on PostgreSQL. "
            "Run your backends under `takealook-run`, collect spans, then audit."
        ),
    )
    parser.add_argument("--version", action="version", version=f"takealook {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(run(args) or 0)
    except TakealookError as error:
        print(f"takealook: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("takealook: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `takealook ... | head`: the reader left; not an error of ours.
        return 0
