"""``takealook collect``: run the embedded OTLP collector until SIGTERM or Ctrl-C.

Prints where it listens on stderr, then (on a terminal, without ``--quiet``)
a status line: spans/s, stored, rejected, refused. SIGTERM and SIGINT stop it
gracefully: it stops accepting, answers requests in progress, commits what it
acknowledged and closes the store. It exits 1 if an fsync failed while it ran
(it then acknowledged nothing more). Options: docs/collector.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from takealook.cli.common import add_store_option, require, store_file
from takealook.errors import UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "collect", help="run the embedded OTLP collector",
        description="Receive OTLP traces and metrics (HTTP and gRPC) and store them in the span store.")
    parser.add_argument("--listen", default="127.0.0.1:4318", metavar="HOST:PORT",
                        help="OTLP/HTTP address (default 127.0.0.1:4318; port 0 picks a free one)")
    parser.add_argument("--grpc", default="127.0.0.1:4317", metavar="HOST:PORT|off",
                        help="OTLP/gRPC address, or 'off' (default 127.0.0.1:4317)")
    add_store_option(parser, files_only=True)
    parser.add_argument("--max-body", default="8MiB", metavar="SIZE",
                        help="largest request accepted, compressed or not (default 8MiB)")
    parser.add_argument("--max-memory", default="512MiB", metavar="SIZE",
                        help="keep the collector's resident memory under this (default 512MiB); request bodies "
                             "beyond what fits are refused with 429 and Retry-After")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="browser origin allowed to post OTLP, e.g. https://app.example.com; "
                             "repeatable; '*' allows any")
    parser.add_argument("--token", metavar="TOKEN",
                        help="require 'Authorization: Bearer TOKEN' (default: $TAKEALOOK_COLLECTOR_TOKEN)")
    parser.add_argument("--retain", metavar="DURATION", help="drop traces older than this, e.g. 7d or 12h")
    parser.add_argument("--max-size", metavar="SIZE", help="drop the oldest traces beyond this size, e.g. 2GB")
    parser.add_argument("--quiet", action="store_true", help="no status line and no summary at the end")
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace):
    require("opentelemetry.proto", "audit")
    require("grpc", "audit")
    from takealook.collector.settings import (
        TOKEN_ENV, CollectorSettings, parse_address, parse_duration, parse_size,
    )

    grpc = None if args.grpc.strip().lower() in ("off", "none", "") else parse_address(args.grpc, "--grpc")
    for origin in args.cors_origin:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise UsageError(f"--cors-origin {origin!r}: expected an origin such as https://app.example.com, or '*'")
    return CollectorSettings(
        store=store_file(args, "takealook collect"),
        http=parse_address(args.listen, "--listen"),
        grpc=grpc,
        max_body=parse_size(args.max_body, "--max-body"),
        max_memory=parse_size(args.max_memory, "--max-memory"),
        cors_origins=tuple(args.cors_origin),
        token=args.token or os.environ.get(TOKEN_ENV) or None,
        retain_s=parse_duration(args.retain, "--retain") if args.retain else None,
        max_size=parse_size(args.max_size, "--max-size") if args.max_size else None,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from takealook.collector.server import Collector
    from takealook.collector.settings import LOOPBACK

    logging.basicConfig(format="takealook collect: %(message)s", level=logging.WARNING, stream=sys.stderr)
    collector = Collector(settings).start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    _announce(collector, settings, LOOPBACK)
    try:
        _wait(collector, stop, show_status=not args.quiet and sys.stderr.isatty())
    finally:
        collector.stop()
    status = collector.status()
    if not args.quiet:
        print(f"takealook collect: stopped; {status['spans_stored']} spans and {status['points_stored']} "
              f"metric points stored in {settings.store}", file=sys.stderr)
    if not status["durable"]:  # said in the log when it happened; said again where scripts look
        print(f"takealook collect: {status['store_error']}", file=sys.stderr)
        return 1
    return 0


def _announce(collector, settings, loopback) -> None:
    where = f"OTLP/HTTP on {collector.http_url} (/v1/traces, /v1/metrics)"
    if collector.grpc_address:
        where += f", OTLP/gRPC on {collector.grpc_address}"
    print(f"takealook collect: {where}; store {settings.store}", file=sys.stderr, flush=True)
    hosts = {settings.http[0]} | ({settings.grpc[0]} if settings.grpc else set())
    if not settings.token and hosts - set(loopback):
        print("takealook collect: warning: listening beyond this machine without --token; anyone who can reach "
              "the port can write spans", file=sys.stderr, flush=True)


def _wait(collector, stop: threading.Event, show_status: bool) -> None:
    last_time, last_stored = time.monotonic(), 0
    while not stop.wait(1.0):
        if not show_status:
            continue
        status = collector.status()
        now = time.monotonic()
        rate = (status["spans_stored"] - last_stored) / max(now - last_time, 1e-6)
        last_time, last_stored = now, status["spans_stored"]
        line = (f"{rate:,.0f} spans/s · {status['spans_stored']:,} stored · {status['spans_rejected']:,} rejected"
                f" · {status['refused_busy']:,} requests refused (busy)")
        if status["store_error"]:
            line += f" · {status['store_error']}"
        sys.stderr.write("\r\x1b[K" + line)
        sys.stderr.flush()
    if show_status:
        sys.stderr.write("\n")
