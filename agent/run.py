"""``takealook-run [--service NAME] [--endpoint URL] COMMAND ...``: run any backend command traced.

Like ``opentelemetry-instrument``: the command runs with a ``sitecustomize``
on ``PYTHONPATH`` that calls ``takealook.agent.start()`` in every Python
process it starts (gunicorn's master and workers, ``manage.py runserver``'s
reloader child). Before exec-ing the command, ``takealook-run`` starts the
export helper and hands its socket down (``TAKEALOOK_AGENT_FD``), so the
command's processes share one helper. Everything else is configured by the
environment (``OTEL_*``, ``TAKEALOOK_*``; see ``takealook.agent.settings``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

USAGE_EXAMPLES = """examples:
  takealook-run --service orders gunicorn -w 4 app:app
  takealook-run --service gateway python manage.py runserver 127.0.0.1:8000
  OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 takealook-run flask run
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="takealook-run", usage="takealook-run [--service NAME] [--endpoint URL] COMMAND [ARG ...]",
        description="Run a Python backend command with takealook's tracing agent.",
        epilog=USAGE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", metavar="NAME", help="service.name of the spans (sets OTEL_SERVICE_NAME)")
    parser.add_argument("--endpoint", metavar="URL",
                        help="OTLP/HTTP collector base URL (sets OTEL_EXPORTER_OTLP_ENDPOINT; "
                             "default http://127.0.0.1:4318)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run")
    return parser


def main(argv: list | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.print_usage(sys.stderr)
        print("takealook-run: error: give the command to run, e.g. takealook-run gunicorn app:app", file=sys.stderr)
        return 2
    executable = shutil.which(command[0])
    if executable is None:
        print(f"takealook-run: error: command not found: {command[0]}", file=sys.stderr)
        return 127
    if args.service:
        os.environ["OTEL_SERVICE_NAME"] = args.service
    if args.endpoint:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = args.endpoint
    _prepare_environment()
    try:
        os.execv(executable, command)
    except OSError as error:
        print(f"takealook-run: error: cannot run {command[0]}: {error.strerror}", file=sys.stderr)
        return 126
    return 0  # not reached


def _prepare_environment() -> None:
    """PYTHONPATH gets the autostart folder; the export helper starts now and its socket is inherited."""
    import logging

    from takealook.agent.channel import BOOT_DIR, FD_ENV, make_socketpair, spawn_helper_process
    from takealook.agent.settings import AgentSettings

    paths = [BOOT_DIR] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOT_DIR]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    settings = AgentSettings.load()
    if not settings.enabled or settings.export_mode != "process":
        return
    try:
        app_end, helper_end = make_socketpair()
        spawn_helper_process(helper_end, settings.traces_endpoint, settings.metrics_endpoint, settings.max_queue)
        helper_end.close()
        app_end.set_inheritable(True)
        os.environ[FD_ENV] = f"{app_end.detach()}:{os.getpid()}"
    except OSError as error:
        print(f"takealook-run: export helper not started ({error}); each process exports by itself",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
