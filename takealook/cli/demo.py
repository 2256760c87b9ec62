"""``takealook demo``: the whole story on three built-in apps, in one command (issue 7)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from takealook.cli.common import write_text
from takealook.errors import UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="the whole story on three built-in apps",
        description="Start a private PostgreSQL, three instrumented apps with built-in problems, the collector "
                    "and a load test; audit, apply the top index, load-test again, and write the report.")
    parser.add_argument("-o", "--output", default="report.html", metavar="FILE",
                        help="the report (default report.html; .md, .txt and .json work too)")
    parser.add_argument("--duration", default="30s", metavar="TIME", help="each load test's length (default 30s)")
    parser.add_argument("--rate", type=float, default=20.0, metavar="R",
                        help="requests per second of the load tests (default 20)")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the apps, collector and database running; print their URLs; Ctrl-C stops")
    parser.add_argument("--workdir", metavar="DIR", help="keep the store, load runs and app logs in DIR")
    parser.set_defaults(run=run)


def parse_duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = int(float(number) * units[unit])
    except ValueError:
        value = 0
    if value <= 0:
        raise UsageError(f"--duration must be a time such as 30s or 2m, not {text!r}")
    return value


def _interrupt_on_signals() -> None:
    """Ctrl-C and a plain `kill` both stop the demo and everything it started (a process started in
    the background by a shell inherits SIGINT ignored; the demo must still stop on it)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def run(args) -> int:
    from takealook.cli.common import require_installed

    for module, extra in (("flask", "demo"), ("django", "demo"), ("gunicorn", "demo"), ("locust", "load"),
                          ("pglast", "audit")):
        require_installed(module, extra)
    from takealook.demo.run import DemoOptions, run_demo
    from takealook.report import combined, combined_doc, render

    options = DemoOptions(duration_s=parse_duration(args.duration), rate=args.rate,
                          keep_running=args.keep_running, workdir=Path(args.workdir) if args.workdir else None)
    if options.rate <= 0:
        raise UsageError("--rate must be a positive number of requests per second")
    _interrupt_on_signals()
    result = run_demo(options, lambda line: print(line, file=sys.stderr, flush=True))
    report = combined.build(result.traces, result.audit, result.comparison, applied_index=result.applied_index)
    fmt = {".md": "md", ".txt": "text", ".json": "json"}.get(Path(args.output).suffix.lower(), "html")
    text = render.to_json(combined_doc.contract(report)) if fmt == "json" else \
        render.render(combined_doc.document(report), fmt)
    write_text(args.output, text)
    for line in combined.summary_lines(report):
        print(line, file=sys.stderr)
    if result.stop is not None:
        print("still running (Ctrl-C stops everything):", file=sys.stderr)
        for name, url in result.urls.items():
            print(f"  {name}: {url}", file=sys.stderr)
        print(f"  data, load runs and logs: {result.workdir}", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
        finally:
            result.stop()
    return 0
