"""Benchmark: OTLP/HTTP protobuf ingest of the embedded collector.

N client processes send batches of 512 realistic spans (an HTTP server span,
DB client spans with a handful of statements, outbound HTTP client spans,
typical attributes in both semantic-convention generations) to a
``takealook collect`` subprocess pinned to one CPU. Prints the sustained
spans/s acknowledged, the collector's CPU seconds per 100k spans, its peak RSS,
and checks every acknowledged span is in the store.

Baseline, same run, same clients: a discard-only HTTP sink (Python's
``http.server``, reads the body and answers 200), the ceiling that the
transport and the clients allow on this machine; the collector's rate is
printed as a ratio of it.

    python bench/collector_ingest.py [--clients 2] [--spans 1000000] [--batch 512]

Target (issue 3): 100k spans/s on one core, all acknowledged spans stored.
Figures are noisy on a shared machine; run it twice.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

T0 = 1_700_000_000_000_000_000
STATEMENTS = [
    "SELECT id, customer_id, total, created_at FROM orders_order WHERE id = %s",
    "SELECT id, order_id, product_id, quantity, price FROM orders_item WHERE order_id = %s",
    "SELECT id, name, price FROM catalog_product WHERE id = %s",
    "UPDATE orders_order SET updated_at = %s WHERE id = %s",
    "SELECT count(*) FROM orders_item WHERE order_id = %s AND product_id = %s",
]


def _kv(key, value):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def make_body(rng: random.Random, spans: int, service: str, at_ns: int = T0) -> bytes:
    """One serialized ExportTraceServiceRequest of ``spans`` realistic spans, starting near ``at_ns``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(_kv(k, v) for k, v in {
        "service.name": service, "service.version": "2.3.1", "service.instance.id": f"{service}-{rng.randrange(4)}",
        "deployment.environment": "production", "host.name": "web-3", "process.pid": 4242,
        "telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": "1.45.1"}.items())
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "opentelemetry.instrumentation.django"
    out = scope.spans
    while len(out) < spans:
        trace, root = rng.randbytes(16), rng.randbytes(8)
        start = at_ns + rng.randrange(10**9)  # requests of the last second, as an exporter sends them
        order = rng.randrange(100_000)
        server = out.add(trace_id=trace, span_id=root, name="GET /orders/<int:id>", kind=2,
                         start_time_unix_nano=start, end_time_unix_nano=start + rng.randrange(5, 900) * 10**6)
        server.attributes.extend([
            _kv("http.request.method", "GET"), _kv("http.route", "/orders/<int:id>"),
            _kv("url.path", f"/orders/{order}"), _kv("url.scheme", "https"), _kv("url.query", "expand=items"),
            _kv("http.response.status_code", 200), _kv("server.address", "orders.internal"),
            _kv("server.port", 8000), _kv("client.address", f"10.0.{rng.randrange(255)}.{rng.randrange(255)}"),
            _kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/125.0"),
            _kv("network.protocol.version", "1.1")])
        for number in range(rng.randrange(6, 16)):
            at = start + (number + 1) * 10**6
            span = out.add(trace_id=trace, span_id=rng.randbytes(8), parent_span_id=root, name="SELECT orders",
                           kind=3, start_time_unix_nano=at, end_time_unix_nano=at + rng.randrange(200, 5000) * 1000)
            span.attributes.extend([
                _kv("db.system", "postgresql"), _kv("db.name", "orders"), _kv("db.user", "app"),
                _kv("db.statement", STATEMENTS[rng.randrange(len(STATEMENTS))]), _kv("net.peer.name", "db.internal"),
                _kv("net.peer.port", 5432)])
        for _ in range(rng.randrange(1, 3)):
            at = start + 20 * 10**6
            span = out.add(trace_id=trace, span_id=rng.randbytes(8), parent_span_id=root, name="GET", kind=3,
                           start_time_unix_nano=at, end_time_unix_nano=at + rng.randrange(1, 50) * 10**6)
            span.attributes.extend([
                _kv("http.request.method", "GET"), _kv("url.full", f"http://stock.internal:8001/stock/{order}?f=1"),
                _kv("http.response.status_code", 200), _kv("server.address", "stock.internal"),
                _kv("server.port", 8001)])
    del out[spans:]
    return request.SerializeToString()


def _client(number: int, url: str, requests_count: int, batch: int, cpus: list, ready, results) -> None:
    import requests

    if cpus:
        os.sched_setaffinity(0, cpus)
    rng = random.Random(1000 + number)
    bodies = [make_body(rng, batch, f"service-{number % 3}", T0 + i * 10**9) for i in range(requests_count)]
    acked = refused = 0
    ready.wait()  # every client has built its bodies: the clock starts
    with requests.Session() as session:
        for body in bodies:
            for _attempt in range(60):
                answer = session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"},
                                      timeout=60)
                if answer.status_code == 200:
                    acked += batch
                    break
                if answer.status_code in (429, 503):
                    refused += 1
                    time.sleep(float(answer.headers.get("Retry-After", "1")))
                    continue
                raise SystemExit(f"unexpected answer {answer.status_code}: {answer.content[:200]!r}")
    results.put((acked, refused))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run(server_cmd: list[str], port: int, path: str, args, server_cpus, client_cpus) -> dict:
    proc = subprocess.Popen(server_cmd, stderr=subprocess.DEVNULL)
    try:
        if server_cpus:
            os.sched_setaffinity(proc.pid, server_cpus)
        _wait_port(port, proc)
        per_client = args.spans // args.batch // args.clients
        ready, results = mp.Barrier(args.clients + 1), mp.Queue()
        clients = [mp.Process(target=_client, args=(n, f"http://127.0.0.1:{port}{path}", per_client, args.batch,
                                                    client_cpus, ready, results)) for n in range(args.clients)]
        for client in clients:
            client.start()
        ready.wait(timeout=900)
        cpu_before = _cpu_seconds(proc.pid)
        began = time.perf_counter()
        outcomes = [results.get(timeout=900) for _ in clients]
        elapsed = time.perf_counter() - began
        cpu = _cpu_seconds(proc.pid) - cpu_before
        rss = _peak_rss_mb(proc.pid)
        for client in clients:
            client.join()
        acked = sum(a for a, _ in outcomes)
        return {"acked": acked, "refused": sum(r for _, r in outcomes), "elapsed": elapsed, "cpu": cpu, "rss": rss}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def sink_main(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Sink)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--sink-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink_port:
        sink_main(args.sink_port)
        return 0
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, client_cpus = ([cpus[0]], cpus[1:]) if len(cpus) > 1 else ([], [])
    takealook = str(Path(sys.executable).parent / "takealook")

    port = _free_port()
    sink = _run([sys.executable, __file__, "--sink-port", str(port)], port, "/v1/traces", args, server_cpus,
                client_cpus)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "spans.db"
        port = _free_port()
        got = _run([takealook, "collect", "--listen", f"127.0.0.1:{port}", "--grpc", "off", "--quiet",
                    "--store", str(store)], port, "/v1/traces", args, server_cpus, client_cpus)
        from takealook.collector import open_store

        with open_store(store) as reader:
            stored = reader.summary().spans
    rate, sink_rate = got["acked"] / got["elapsed"], sink["acked"] / sink["elapsed"]
    print(f"collector ingest: {args.clients} client processes, batches of {args.batch} spans, OTLP/HTTP protobuf; "
          f"collector pinned to CPU {server_cpus or 'any'}, clients to {client_cpus or 'any'}")
    print(f"  sustained:  {rate:,.0f} spans/s  ({got['acked']:,} acknowledged in {got['elapsed']:.1f} s, "
          f"{got['refused']} requests refused with 429/503 and retried)")
    print(f"  CPU:        {got['cpu'] / got['acked'] * 1e5:.2f} s per 100k spans  "
          f"(one core: {got['acked'] / max(got['cpu'], 1e-9):,.0f} spans per CPU-second)")
    print(f"  peak RSS:   {got['rss']:.0f} MB")
    print(f"  stored:     {stored:,} spans; every acknowledged span stored: {'yes' if stored == got['acked'] else 'NO'}")
    print(f"  baseline:   discard-only HTTP sink {sink_rate:,.0f} spans/s, "
          f"sink CPU {sink['cpu'] / sink['acked'] * 1e5:.2f} s per 100k spans; collector/sink = {rate / sink_rate:.2f}")
    print(f"  target 100k spans/s on one core: {'met' if rate >= 100_000 else 'not met'}")
    return 0 if stored == got["acked"] else 1


if __name__ == "__main__":
    sys.exit(main())
