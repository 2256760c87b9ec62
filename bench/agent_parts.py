"""Where the agent's CPU goes, part by part: the in-app path and the export helper.

The endpoint of ``agent_overhead.py`` (Flask, 3 psycopg2 statements, one
``requests`` call to a server on loopback) is called in-process through WSGI,
so no HTTP server or client adds noise; PostgreSQL and the downstream server
are real, in their own processes, whose CPU is not counted. Each variant runs
in a fresh process and adds one part of the agent to the one before:

  none        the app alone
  server      + Flask/WSGI hooks and the server span (spans discarded at end)
  db          + cursor wrapping, statement scrubbing, 3 DB spans
  http        + the outbound call's span and traceparent injection
  records     + spans queued as they end, encoded as OTLP 128 at a time, marshalled (not sent)
  sent        + the hand-off: a message per 128 spans over the helper's socket
  helper      the export helper's work (recv, frame the spans into a request, post)

The measure is instructions, counted by valgrind's callgrind around the
measured requests only (``--toggle-collect`` on the C function of the
``functools.reduce`` that drives them): unlike CPU time, the count does not
change when other processes crowd the machine, so one run per variant is
enough and parts of a few microseconds are visible. The helper's part is
counted the same way on a replay of what the app sent it: the messages of
``--requests`` requests received from its socket, framed into OTLP requests and
posted to a receiver on loopback. Instructions become microseconds at the app's
rate measured in the same run (callgrind's instructions over the least CPU time
of three native runs), an upper bound since its CPU time includes its system
calls (libpq, sockets) but its instructions do not. Without valgrind, CPU time
is used instead (``--cpu``), which on a busy machine is noisy. Spans per
request: 5. ``agent_server_parts.py`` counts the same parts in gunicorn.

    python bench/agent_parts.py [--requests 300] [--ids 100] [--cpu --repeat 5]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

VARIANTS = ("none", "server", "db", "http", "records", "sent")
# What each variant turns off (TAKEALOOK_DISABLED_INSTRUMENTATIONS); "records" and "sent" have everything.
DISABLED = {"server": "psycopg2,psycopg,urllib3,httpx,urllib,logging", "db": "urllib3,httpx,urllib,logging",
            "http": "logging", "records": "", "sent": ""}
SPANS_PER_REQUEST = 5


def _path(i: int) -> str:
    """The i-th request's path: its id cycles through BENCH_IDS distinct ids (100; 1000000000: new at every
    request, as most real apps see), the measured requests going on from the warm-up's."""
    return f"/orders/{i % IDS}"


IDS = int(os.environ.get("BENCH_IDS", "100"))  # set by main() for its children
# Requests before counting: past the agent's learning that a key's values never repeat (1,024 values).
WARM_UP = 1500


def environ(path: str) -> dict:
    """What gunicorn hands a WSGI app for ``GET path`` from a local client."""
    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_USER_AGENT": "python-bench/1.0", "HTTP_ACCEPT": "*/*", "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "40000", "SCRIPT_NAME": "", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": False,
            "wsgi.multiprocess": False, "wsgi.run_once": False}


def child(variant: str, requests: int) -> None:
    """One variant in this process: prints its CPU per request (and the helper's) as JSON."""
    if variant != "none":
        os.environ["TAKEALOOK_DISABLED_INSTRUMENTATIONS"] = DISABLED[variant]
        if variant in ("server", "db", "http"):
            os.environ["OTEL_TRACES_EXPORTER"] = "none"  # spans are made and ended, then dropped
        import takealook.agent

        assert takealook.agent.start()
        # Read by start(); gone again, so every variant's app sees the same environment (requests scans
        # os.environ for proxies at every call: each variable more costs it thousands of instructions).
        os.environ.pop("TAKEALOOK_DISABLED_INSTRUMENTATIONS")
        os.environ.pop("OTEL_TRACES_EXPORTER", None)
        agent = takealook.agent.current()
        if variant == "records":
            agent.pipeline._send = lambda payload: True  # noqa: SLF001 - everything but the socket
    import benchapp

    def call(i: int) -> None:
        def start_response(status, headers, exc_info=None):
            if not status.startswith("200"):
                raise SystemExit(f"HTTP {status}")

        result = benchapp.app(environ(_path(i)), start_response)
        for _ in result:
            pass
        result.close()

    first = WARM_UP
    for i in range(first):  # warm up: connections, caches, the statement texts, volatile keys found
        call(i)
    helper = _helper_pid()
    helper_before = _proc_cpu(helper)
    before = time.process_time()
    # Under callgrind only what runs inside this reduce is counted (--toggle-collect=functools_reduce).
    functools.reduce(lambda _, i: call(i), range(first, first + requests), None)
    cpu = time.process_time() - before
    helper_cpu = 0.0
    if variant == "sent":
        import takealook.agent

        takealook.agent.current().pipeline.flush()
        if helper and not os.environ.get("BENCH_UNDER_VALGRIND"):
            time.sleep(2.5)  # the helper exports once a second: let it finish this run's spans
            helper_cpu = _proc_cpu(helper) - helper_before
    print(json.dumps({"cpu": cpu / requests, "helper": helper_cpu / requests}))


def capture(requests: int) -> None:
    """Writes the messages the app sends for ``requests`` requests (marshal of a list) to stdout."""
    import marshal

    import takealook.agent

    assert takealook.agent.start()
    pipeline = takealook.agent.current().pipeline
    messages = []
    pipeline._send = lambda payload: not messages.append(payload)  # noqa: SLF001
    import benchapp

    def start_response(status, headers, exc_info=None):
        pass

    for i in range(requests):
        for _ in benchapp.app(environ(_path(i)), start_response):
            pass
    pipeline.flush()
    sys.stdout.buffer.write(marshal.dumps(messages))


def replay(path: str, requests: int) -> None:
    """The export helper's work on captured messages: recv, decode, queue, frame as OTLP, post."""
    import marshal
    import socket

    from takealook.agent.channel import make_socketpair
    from takealook.agent.exporter import RECV_BUFFER, Forwarder
    from takealook.agent.otlp_post import Poster  # noqa: F401 - imported before counting starts

    messages = marshal.loads(Path(path).read_bytes())
    endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
    warm = Forwarder(endpoint + "/v1/traces", endpoint + "/v1/metrics", 10 ** 6)
    for payload in messages:  # a helper that has run a while: its imports done, its caches filled
        warm.submit(payload)
    warm._export_spans()  # noqa: SLF001
    forwarder = Forwarder(endpoint + "/v1/traces", endpoint + "/v1/metrics", 10 ** 6)
    app_end, helper_end = make_socketpair()
    for payload in messages:
        app_end.send(payload)
    helper_end.setblocking(False)
    buffer = bytearray(RECV_BUFFER)  # as the helper's serve() reads
    view = memoryview(buffer)

    def one(_, index):
        forwarder.submit(view[:helper_end.recv_into(buffer)])
        if index % 4 == 3 or index == len(messages) - 1:  # the helper exports about every 512 spans
            forwarder._export_spans()  # noqa: SLF001 - inline, so the counting thread does it
        return None

    before = time.process_time()
    functools.reduce(one, range(len(messages)), None)
    cpu = time.process_time() - before
    assert forwarder.exported == sum(marshal.loads(m)[3] for m in messages), "every span posted"
    print(json.dumps({"cpu": cpu / requests, "helper": 0.0}))
    del socket


def _helper_pid():
    from takealook.agent import channel

    helper = getattr(channel, "_helper", None)
    return helper.pid if helper is not None else None


def _proc_cpu(pid) -> float:
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CHILDREN = {"capture": capture, "replay": replay}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per variant")
    parser.add_argument("--cpu", action="store_true", help="CPU time instead of instruction counts")
    parser.add_argument("--ids", type=int, default=100,
                        help="distinct ids in the paths (default 100; 1000000000: a new id at every request)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (median)")
    parser.add_argument("--child", choices=VARIANTS + tuple(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--messages", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child in CHILDREN:
        CHILDREN[args.child](*((args.messages, args.requests) if args.child == "replay" else (args.requests,)))
        return 0
    if args.child:
        child(args.child, args.requests)
        return 0
    valgrind = None if args.cpu else shutil.which("valgrind")
    if not args.cpu and valgrind is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind, or use --cpu")
    from agent_overhead import backends

    with backends("takealook-parts-") as (work, env):
        env.update({"OTEL_SERVICE_NAME": "bench", "PYTHONPATH": os.pathsep.join([str(work), str(ROOT)]),
                    "PYTHONHASHSEED": "0", "BENCH_IDS": str(max(1, args.ids))})

        def run(name: str, extra: tuple = (), counted: bool = True) -> dict:
            command = [sys.executable, __file__, "--child", name, "--requests", str(args.requests), *extra]
            child_env = env
            if valgrind and counted:
                command = [valgrind, "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
                           "--callgrind-out-file=/dev/null"] + command
                child_env = {**env, "BENCH_UNDER_VALGRIND": "1"}
            out = subprocess.run(command, env=child_env, cwd=work, capture_output=True, check=True)
            result = json.loads(out.stdout.decode().strip().splitlines()[-1])
            found = re.search(r"Collected : (\d+)", out.stderr.decode())
            result["instructions"] = int(found.group(1)) if found else 0
            return result

        runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeat):
            order = list(VARIANTS)
            random.shuffle(order)
            for name in order:
                runs[name].append(run(name))
        messages = work / "messages.bin"
        messages.write_bytes(subprocess.run([sys.executable, __file__, "--child", "capture", "--requests",
                                             str(args.requests)], env=env, cwd=work, capture_output=True,
                                            check=True).stdout)
        helper = run("replay", ("--messages", str(messages)))
        rate = None
        if valgrind:  # the app's own rate: its instructions over its least CPU time of three native runs
            native = min(run("none", counted=False)["cpu"] for _ in range(3))
            rate = statistics.median(r["instructions"] for r in runs["none"]) / args.requests / native
        report(runs, helper, rate, args.requests, args.ids)
    return 0


def report(runs: dict[str, list[dict]], helper: dict, rate, requests: int, ids: int) -> None:
    """Per part: microseconds (and instructions) per request and per span."""
    if rate:
        cost = {name: statistics.median(r["instructions"] for r in results) / requests for name, results in
                runs.items()}
        cost["helper"] = helper["instructions"] / requests
        unit = 1e6 / rate  # µs per instruction
    else:
        cost = {name: statistics.median(r["cpu"] for r in results) for name, results in runs.items()}
        cost["helper"] = helper["cpu"]
        unit = 1e6
    parts = [
        ("Flask/WSGI hooks, server span", cost["server"] - cost["none"]),
        ("cursor wrapping, scrubbing, 3 DB spans", cost["db"] - cost["server"]),
        ("HTTP client span, traceparent", cost["http"] - cost["db"]),
        ("spans queued, encoded in batches, marshal", cost["records"] - cost["http"]),
        ("hand-off (socket send)", cost["sent"] - cost["records"]),
        ("helper: recv, frame, post", cost["helper"]),
    ]
    measure = f"instructions (callgrind; the app runs {rate / 1e9:.2f} G/s here)" if rate else "CPU time"
    # The app's rate counts its system calls' time but not their instructions: microseconds at it are an
    # upper bound.
    print(f"app alone: {cost['none'] * unit:.0f} µs per request; measured by {measure}; "
          f"{ids:,} distinct ids")
    print(f"{'part':<46}{'µs/request':>12}{'µs/span':>10}" + (f"{'instr/span':>12}" if rate else ""))
    for label, value in parts + [("total (app + helper)", sum(v for _, v in parts))]:
        line = f"{label:<46}{value * unit:>12.1f}{value * unit / SPANS_PER_REQUEST:>10.2f}"
        print(line + (f"{value / SPANS_PER_REQUEST:>12.0f}" if rate else ""))


if __name__ == "__main__":
    sys.exit(main())
