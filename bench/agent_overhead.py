"""What the agent costs a request: takealook-run vs OpenTelemetry's auto-instrumentation vs nothing.

One Flask endpoint doing 3 PostgreSQL queries (psycopg2) and one outbound HTTP
call (requests, to a small server on loopback), served by gunicorn with one
sync worker, three times side by side: uninstrumented, under
``opentelemetry-instrument`` (the anchor: the same OpenTelemetry versions,
flask/requests/psycopg2 instrumentations, OTLP/HTTP export) and under
``takealook-run``. Both export to the same discarding OTLP/HTTP receiver. A
client drives the three in interleaved rounds (a round of each variant in turn,
order shuffled per round) so that drift of the machine hits them alike.

Two client modes (``--client``, default both, each a separate set of servers):
``new`` opens a new connection per request (gunicorn's sync worker, which
closes every connection anyway); ``keep-alive`` keeps one connection (served by
the gthread worker with one thread, since the sync worker cannot keep one).

Prints p50/p99 per variant, the microseconds each adds per request, the ratios
takealook/none and takealook-added/otel-added, and the CPU time the server's
processes (gunicorn master and worker, takealook's export helper) spend per
request and per span, which is steadier than latency on a busy machine.

    python bench/agent_overhead.py [--rounds 12] [--requests 250] [--client new|keep-alive|both] [--ids 100]

Targets (issue 16): CPU (app + helper) at most 10 µs per span and a quarter of
OpenTelemetry's added CPU per request; p50 at most +5% and p99 at most +20%
over no agent, in both client modes.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from takealook.pgcluster import PrivateCluster, free_port  # noqa: E402

BIN = Path(sys.executable).parent

APP = '''
import os
import psycopg2
import requests
from flask import Flask

app = Flask(__name__)
conn = None
session = requests.Session()
DOWNSTREAM = os.environ["BENCH_DOWNSTREAM"]


@app.route("/orders/<int:order_id>")
def order(order_id):
    global conn
    if conn is None:
        conn = psycopg2.connect(os.environ["BENCH_DSN"])
        conn.autocommit = True
    customer_id = order_id % 1000  # the ids in the path may run higher (--ids): the table has 1,000
    with conn.cursor() as cur:
        cur.execute("SELECT id, name FROM customers WHERE id = %s", (customer_id,))
        customer = cur.fetchone()
        cur.execute("SELECT count(*) FROM orders WHERE customer_id = %s", (customer_id,))
        count = cur.fetchone()[0]
        cur.execute("SELECT sum(total) FROM orders WHERE customer_id = %s", (customer_id,))
        total = cur.fetchone()[0]
    stock = session.get(DOWNSTREAM + "/stock/" + str(order_id), timeout=5).text
    return {"customer": customer[1], "orders": count, "total": float(total or 0), "stock": stock}
'''

# A tiny downstream and a discarding OTLP receiver, each in its own process.
SERVERS = '''
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        # headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def log_message(self, *args):
        pass
    def do_GET(self):
        body = b"42"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.daemon_threads = True
server.serve_forever()
'''


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


SPANS_PER_REQUEST = 5  # the server span, 3 statements, 1 outbound call (both agents make these)


# How many distinct ids the paths cycle through (--ids): with 100 the agent's encoding caches hold every
# path; most real apps see a long tail of ids, new at nearly every request.
IDS = [100]
_requests_made = [0]


def drive(port: int, count: int, keep_alive: bool) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies = []
    for _ in range(count):
        i = _requests_made[0] = _requests_made[0] + 1
        start = time.perf_counter()
        if not keep_alive:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/orders/{i % IDS[0]}")
        response = conn.getresponse()
        response.read()
        if not keep_alive:
            conn.close()
        latencies.append(time.perf_counter() - start)
        if response.status != 200:
            raise SystemExit(f"port {port}: HTTP {response.status}")
    conn.close()
    return latencies


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system, seconds) of the processes' threads, read in nanoseconds from schedstat.

    /proc/PID/stat counts in clock ticks (10 ms): a variant's window of 250 requests is ~0.5 s, so
    ticks alone would move a process's figure by ±2% a window."""
    total = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9


def descendants(pid: int) -> list[int]:
    """The process and everything it started (gunicorn workers, the export helper)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


VARIANTS = {
    "none": [],
    "opentelemetry": ["opentelemetry-instrument"],
    "takealook": ["takealook-run", "--service", "bench"],
}
# Every variant runs with the same environment, OpenTelemetry's settings included (the others ignore
# them; takealook-run --service sets the same OTEL_SERVICE_NAME): `requests` reads the whole of
# os.environ for proxies and .netrc at every call, ~25,000 instructions a variable a request here, so
# a variant with three more variables would look ~15 µs a request dearer for no work of its own.
SHARED_ENV = {"OTEL_SERVICE_NAME": "bench", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
              "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
# The sync worker closes every connection; the gthread worker with one thread keeps them.
WORKERS = {"new": ["--worker-class", "sync"], "keep-alive": ["--worker-class", "gthread", "--threads", "1"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=250, help="requests per variant per round")
    parser.add_argument("--client", choices=["new", "keep-alive", "both"], default="both",
                        help="a new connection per request, one kept-alive connection, or both in turn")
    parser.add_argument("--ids", type=int, default=100,
                        help="distinct ids in the paths (default 100; 1000000000: a new id at every request)")
    args = parser.parse_args()
    IDS[0] = max(1, args.ids)
    with backends("takealook-bench-") as (work, base_env):
        for mode in (["new", "keep-alive"] if args.client == "both" else [args.client]):
            servers = start_servers(work, base_env, WORKERS[mode])
            try:
                samples, cpu = measure(servers, args.rounds, args.requests, keep_alive=(mode == "keep-alive"))
            finally:
                stop(list(servers.values()))
            print(f"\n== client: {mode} ({' '.join(WORKERS[mode])}) ==")
            report(samples, cpu)
    return 0


@contextmanager
def backends(prefix: str):
    """(work folder, the app's environment): a private PostgreSQL, the downstream server and the OTLP
    sink, stopped on the way out. Shared with agent_parts.py and agent_server_parts.py."""
    procs: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = PrivateCluster().start()
    try:
        yield work, start_backends(work, cluster, procs)
    finally:
        stop(procs)
        cluster.stop()


def start_backends(work: Path, cluster, procs: list) -> dict:
    """The app's files in ``work``, its database, the downstream server and the OTLP sink; the
    environment the app runs with."""
    (work / "benchapp.py").write_text(textwrap.dedent(APP))
    (work / "servers.py").write_text(SERVERS)
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
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink}", "PYTHONPATH": str(work)})
    return env


def start_servers(work: Path, base_env: dict, worker: list[str]) -> dict[str, tuple[subprocess.Popen, int]]:
    servers = {}
    gunicorn = [str(BIN / "gunicorn"), "-w", "1", *worker, "--keep-alive", "60"]
    for name, prefix in VARIANTS.items():
        port = free_port()
        command = ([str(BIN / prefix[0])] + prefix[1:] if prefix else []) + gunicorn + \
            ["-b", f"127.0.0.1:{port}", "benchapp:app"]
        proc = subprocess.Popen(command, env={**base_env, **SHARED_ENV}, cwd=work, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        servers[name] = (proc, port)
        wait_port(port, proc)
    return servers


def measure(servers: dict, rounds: int, requests: int, keep_alive: bool) -> tuple[dict, dict]:
    for _, port in servers.values():  # warm up: connections, caches, the first spans
        drive(port, 1500, keep_alive)
    samples: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, float] = {name: 0.0 for name in servers}
    order = list(servers)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            proc, port = servers[name]
            pids = descendants(proc.pid)
            before = cpu_seconds(pids)
            samples[name] += drive(port, requests, keep_alive)
            cpu[name] += cpu_seconds(pids) - before
    return samples, cpu


def stop(procs) -> None:
    procs = [p[0] if isinstance(p, tuple) else p for p in procs]
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def report(samples: dict[str, list[float]], cpu: dict[str, float]) -> None:
    stats = {name: (statistics.median(v) * 1e6, percentile(v, 0.99) * 1e6, len(v)) for name, v in samples.items()}
    print(f"{'variant':<14}{'requests':>9}{'p50 µs':>10}{'p99 µs':>10}{'added p50 µs':>14}{'added p99 µs':>14}"
          f"{'server CPU µs/req':>19}{'added CPU µs/span':>19}")
    none50, none99, _ = stats["none"]
    cpu_per_request = {name: cpu[name] / stats[name][2] * 1e6 for name in stats}
    for name, (p50, p99, n) in stats.items():
        added = (cpu_per_request[name] - cpu_per_request["none"]) / SPANS_PER_REQUEST
        print(f"{name:<14}{n:>9}{p50:>10.0f}{p99:>10.0f}{p50 - none50:>14.0f}{p99 - none99:>14.0f}"
              f"{cpu_per_request[name]:>19.0f}{added if name != 'none' else 0:>19.1f}")
    added_cpu_t = cpu_per_request["takealook"] - cpu_per_request["none"]
    added_cpu_o = cpu_per_request["opentelemetry"] - cpu_per_request["none"]
    if added_cpu_o > 0:
        print(f"takealook-added / opentelemetry-added server CPU per request: {added_cpu_t / added_cpu_o:.2f}")
    t50, t99, _ = stats["takealook"]
    o50, o99, _ = stats["opentelemetry"]
    print(f"takealook/none p50 ratio: {t50 / none50:.3f}   p99 ratio: {t99 / none99:.3f}")
    print(f"opentelemetry/none p50 ratio: {o50 / none50:.3f}   p99 ratio: {o99 / none99:.3f}")
    added_t, added_o = t50 - none50, o50 - none50
    if added_o > 0:
        print(f"takealook-added / opentelemetry-added (p50): {added_t / added_o:.2f}")
    if o99 - none99 > 0:
        print(f"takealook-added / opentelemetry-added (p99): {(t99 - none99) / (o99 - none99):.2f}")


if __name__ == "__main__":
    sys.exit(main())
