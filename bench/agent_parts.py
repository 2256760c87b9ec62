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
  records     + span records buffered and marshalled per request (not sent)
  sent        + the hand-off: one message per request over the helper's socket
  helper      the export helper's CPU (decode, OTLP encode, post), from /proc

Variants are run interleaved, ``--repeat`` times each; the figure per variant
is the median of its runs' CPU time (``time.process_time``) per request, and a
part's cost is the difference between neighbours. Spans per request: 5.

    python bench/agent_parts.py [--requests 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
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
        agent = takealook.agent.current()
        if variant == "records":
            agent.pipeline._send = lambda payload: True  # noqa: SLF001 - everything but the socket
    import benchapp

    def call(i: int) -> None:
        def start_response(status, headers, exc_info=None):
            if not status.startswith("200"):
                raise SystemExit(f"HTTP {status}")

        result = benchapp.app(environ(f"/orders/{i % 100}"), start_response)
        for _ in result:
            pass
        result.close()

    for i in range(300):  # warm up: connections, caches, the statement texts
        call(i)
    helper = _helper_pid()
    helper_before = _proc_cpu(helper)
    before = time.process_time()
    for i in range(requests):
        call(i)
    cpu = time.process_time() - before
    helper_cpu = 0.0
    if helper:
        import takealook.agent

        takealook.agent.current().pipeline.flush()
        time.sleep(2.5)  # the helper exports once a second: let it finish this run's spans
        helper_cpu = _proc_cpu(helper) - helper_before
    print(json.dumps({"cpu": cpu / requests, "helper": helper_cpu / requests}))


def _helper_pid():
    from takealook.agent import channel

    helper = getattr(channel, "_helper", None)
    return helper.pid if helper is not None else None


def _proc_cpu(pid) -> float:
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests)
        return 0
    from agent_overhead import APP, SERVERS, stop, wait_port

    from takealook.pgcluster import PrivateCluster, free_port

    work = Path(tempfile.mkdtemp(prefix="takealook-parts-"))
    (work / "benchapp.py").write_text(textwrap.dedent(APP))
    (work / "servers.py").write_text(SERVERS)
    cluster = PrivateCluster().start()
    procs = []
    try:
        dsn = cluster.create_database("bench")
        cluster.psql("CREATE TABLE customers (id int PRIMARY KEY, name text);"
                     "INSERT INTO customers SELECT i, 'c' || i FROM generate_series(0, 999) i;"
                     "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, total numeric);"
                     "INSERT INTO orders (customer_id, total) SELECT i % 1000, i FROM generate_series(1, 20000) i;"
                     "CREATE INDEX ON orders (customer_id); ANALYZE;", dbname="bench")
        downstream, sink = free_port(), free_port()
        for port in (downstream, sink):
            procs.append(subprocess.Popen([sys.executable, str(work / "servers.py"), str(port)]))
            wait_port(port, procs[-1])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TAKEALOOK_"))}
        env.update({"BENCH_DSN": dsn, "BENCH_DOWNSTREAM": f"http://127.0.0.1:{downstream}",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink}", "OTEL_SERVICE_NAME": "bench",
                    "PYTHONPATH": os.pathsep.join([str(work), str(ROOT)])})
        runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeat):
            order = list(VARIANTS)
            random.shuffle(order)
            for name in order:
                out = subprocess.run([sys.executable, __file__, "--child", name, "--requests", str(args.requests)],
                                     env=env, cwd=work, capture_output=True, text=True, check=True)
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        report(runs)
    finally:
        stop(procs)
        cluster.stop()
    return 0


def report(runs: dict[str, list[dict]]) -> None:
    cpu = {name: statistics.median(r["cpu"] for r in results) * 1e6 for name, results in runs.items()}
    helper = statistics.median(r["helper"] for r in runs["sent"]) * 1e6
    parts = [
        ("Flask/WSGI hooks, server span", cpu["server"] - cpu["none"]),
        ("cursor wrapping, scrubbing, 3 DB spans", cpu["db"] - cpu["server"]),
        ("HTTP client span, traceparent", cpu["http"] - cpu["db"]),
        ("span records, marshal", cpu["records"] - cpu["http"]),
        ("hand-off (socket send)", cpu["sent"] - cpu["records"]),
        ("helper: decode, encode, post", helper),
    ]
    spread = {name: (max(r["cpu"] for r in results) - min(r["cpu"] for r in results)) * 1e6
              for name, results in runs.items()}
    print(f"app alone: {cpu['none']:.0f} µs CPU per request (spread of runs per variant: "
          + ", ".join(f"{name} {value:.0f}" for name, value in spread.items()) + " µs)")
    print(f"{'part':<42}{'µs/request':>12}{'µs/span':>10}")
    for label, value in parts:
        print(f"{label:<42}{value:>12.1f}{value / SPANS_PER_REQUEST:>10.1f}")
    total = sum(value for _, value in parts)
    print(f"{'total (app + helper)':<42}{total:>12.1f}{total / SPANS_PER_REQUEST:>10.1f}")


if __name__ == "__main__":
    sys.exit(main())
