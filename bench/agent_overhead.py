"""What the agent costs a request: takealook-run vs OpenTelemetry's auto-instrumentation vs nothing.

One Flask endpoint doing 3 PostgreSQL queries (psycopg2) and one outbound HTTP
call (requests, to a small server on loopback), served by gunicorn with one
sync worker, three times side by side: uninstrumented, under
``opentelemetry-instrument`` (the anchor: the same OpenTelemetry versions,
flask/requests/psycopg2 instrumentations, OTLP/HTTP export) and under
``takealook-run``. Both export to the same discarding OTLP/HTTP receiver. A
keep-alive client drives the three in interleaved rounds (a round of each
variant in turn, order shuffled per round) so that drift of the machine hits
them alike. Prints p50/p99 per variant, the microseconds each adds per request,
and the ratios takealook/none and takealook-added/otel-added; also the CPU time
the server's processes (gunicorn master and worker, and takealook's export
helper) spend per request, which is steadier than latency on a busy machine.

    python bench/agent_overhead.py [--rounds 12] [--requests 250]

Target (issue 2): takealook adds no more than OpenTelemetry's own
auto-instrumentation, and at most 5% of p50.
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
    with conn.cursor() as cur:
        cur.execute("SELECT id, name FROM customers WHERE id = %s", (order_id,))
        customer = cur.fetchone()
        cur.execute("SELECT count(*) FROM orders WHERE customer_id = %s", (order_id,))
        count = cur.fetchone()[0]
        cur.execute("SELECT sum(total) FROM orders WHERE customer_id = %s", (order_id,))
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


def drive(port: int, count: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies = []
    for i in range(count):
        start = time.perf_counter()
        conn.request("GET", f"/orders/{i % 100}")
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - start)
        if response.status != 200:
            raise SystemExit(f"port {port}: HTTP {response.status}")
    conn.close()
    return latencies


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes, from /proc (clock ticks)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=250, help="requests per variant per round")
    args = parser.parse_args()
    procs: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="takealook-bench-"))
    (work / "benchapp.py").write_text(textwrap.dedent(APP))
    (work / "servers.py").write_text(SERVERS)
    cluster = PrivateCluster().start()
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
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TAKEALOOK_"))}
        base_env.update({"BENCH_DSN": dsn, "BENCH_DOWNSTREAM": f"http://127.0.0.1:{downstream}",
                         "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink}", "PYTHONPATH": str(work)})
        gunicorn = [str(BIN / "gunicorn"), "-w", "1", "--worker-class", "sync", "--keep-alive", "60"]
        variants = {
            "none": ([], {}),
            "opentelemetry": ([str(BIN / "opentelemetry-instrument")],
                              {"OTEL_SERVICE_NAME": "bench", "OTEL_TRACES_EXPORTER": "otlp",
                               "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "none",
                               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}),
            "takealook": ([str(BIN / "takealook-run"), "--service", "bench"], {}),
        }
        ports, masters = {}, {}
        for name, (prefix, env) in variants.items():
            ports[name] = free_port()
            procs.append(subprocess.Popen(prefix + gunicorn + ["-b", f"127.0.0.1:{ports[name]}", "benchapp:app"],
                                          env={**base_env, **env}, cwd=work, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
            masters[name] = procs[-1].pid
            wait_port(ports[name], procs[-1])
        for name in variants:  # warm up: connections, caches, the first spans
            drive(ports[name], 200)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, float] = {name: 0.0 for name in variants}
        order = list(variants)
        for _ in range(args.rounds):
            random.shuffle(order)
            for name in order:
                pids = descendants(masters[name])
                before = cpu_seconds(pids)
                samples[name] += drive(ports[name], args.requests)
                cpu[name] += cpu_seconds(pids) - before
        report(samples, cpu)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM) if proc.pid else None
            except (ProcessLookupError, PermissionError):
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.stop()
    return 0


def report(samples: dict[str, list[float]], cpu: dict[str, float]) -> None:
    stats = {name: (statistics.median(v) * 1e6, percentile(v, 0.99) * 1e6, len(v)) for name, v in samples.items()}
    print(f"{'variant':<14}{'requests':>9}{'p50 µs':>10}{'p99 µs':>10}{'added p50 µs':>14}{'added p99 µs':>14}"
          f"{'server CPU µs/req':>19}")
    none50, none99, _ = stats["none"]
    for name, (p50, p99, n) in stats.items():
        print(f"{name:<14}{n:>9}{p50:>10.0f}{p99:>10.0f}{p50 - none50:>14.0f}{p99 - none99:>14.0f}"
              f"{cpu[name] / n * 1e6:>19.0f}")
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
