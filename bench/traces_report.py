"""Benchmark: `takealook traces report --format json` over a store of 1,000,000 spans.

    .venv/bin/python bench/traces_report.py [--traces 50000] [--keep PATH]

Builds a store of 50,000 traces of 20 spans across 3 services (a gateway
calling an orders service and a stock service, each with its own SQL, and an N+1
over products in the slower orders calls) through the collector's write API, then times
`takealook traces report --format json` as a subprocess: wall time and peak
resident memory (from wait4's rusage). Targets: under 10 s and 1 GiB.

Baseline, measured in the same run on the same file: a subprocess that only
reads every span row with Python's sqlite3 (`SELECT * FROM spans`), the floor
for any Python reader of this store; the report's time is printed as a ratio
of it. The machine may be shared with other work: run it a few times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from takealook.collector.store import IngestBatch, SpanStore, TraceInfo  # noqa: E402
from takealook.sqltext import fingerprint  # noqa: E402

SERVICES = ("gateway", "orders", "stock")
STATEMENTS = {
    "gateway": ("SELECT id, name FROM users WHERE id = %s", "SELECT * FROM sessions WHERE key = %s"),
    "orders": ("SELECT * FROM orders WHERE id = %s", "SELECT * FROM order_items WHERE order_id = %s",
               "SELECT * FROM products WHERE id = %s"),
    "stock": ("SELECT qty FROM stock WHERE product_id = %s", "UPDATE stock SET reserved = reserved + 1 WHERE id = %s"),
}
MS = 1_000_000


class TraceWriter:
    """Rows for the store's write API, 20 spans per trace."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.batch = IngestBatch()
        self.digests = {}
        for service in SERVICES:
            text = json.dumps({"service.name": service, "service.version": "1.4.2", "host.name": f"{service}-1",
                               "telemetry.sdk.language": "python"}, sort_keys=True)
            digest = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
            self.digests[service] = digest
            self.batch.resources[digest] = (service, text)
        self.fingerprints = {s: fingerprint(s) for group in STATEMENTS.values() for s in group}

    def _span(self, trace, span_id, parent, service, name, kind, start, duration, **typed):
        attributes = {"code.function": name, "thread.id": 140000000 + self.rng.randrange(100)}
        statement = typed.get("db_statement")
        if statement:
            attributes.update({"db.system": "postgresql", "db.name": service, "db.statement": statement,
                               "net.peer.name": "127.0.0.1", "net.peer.port": 5432})
        if typed.get("http_method"):
            attributes.update({"http.method": typed["http_method"], "http.status_code": typed.get("http_status")})
        self.batch.spans.append([
            trace, span_id, parent, service, name, kind, start, duration, 0, "",
            typed.get("http_method"), typed.get("http_route"), typed.get("http_status"), typed.get("url_path"),
            typed.get("url_full"), typed.get("server_address"), "postgresql" if statement else None,
            service if statement else None, statement, self.fingerprints.get(statement),
            json.dumps(attributes), self.digests[service], "[]", "[]", "bench",
        ])
        info = self.batch.traces.setdefault(trace, TraceInfo(start, start + duration))
        info.start_ns, info.end_ns = min(info.start_ns, start), max(info.end_ns, start + duration)
        info.services.add(service)
        if kind == 2 and typed.get("http_route"):
            info.endpoints.add((service, typed["http_route"]))

    def trace(self, number: int, t0: int) -> None:
        rng = self.rng
        trace = f"{number:032x}"
        ids = iter(f"{number % 10**8:08x}{i:08x}" for i in range(1, 21))
        root, sql_ms = next(ids), rng.uniform(0.5, 3)
        orders_ms, stock_ms = rng.uniform(20, 80), rng.uniform(5, 30)
        total = 2 * sql_ms + orders_ms + stock_ms + 4
        self._span(trace, root, None, "gateway", "GET /dashboard/<int:id>", 2, t0, int(total * MS),
                   http_method="GET", http_route="/dashboard/<int:id>", http_status=200, url_path=f"/dashboard/{number}")
        t = t0 + MS
        for statement in STATEMENTS["gateway"]:
            self._span(trace, next(ids), root, "gateway", statement.split()[0], 3, t, int(sql_ms * MS),
                       db_statement=statement)
            t += int(sql_ms * MS)
        self._call(trace, ids, root, "orders", "/api/orders/<int:id>", f"/api/orders/{number}", t, orders_ms, 8)
        t += int(orders_ms * MS)
        self._call(trace, ids, root, "stock", "/stock/<int:id>", f"/stock/{number}", t, stock_ms, 4)

    def _call(self, trace, ids, parent, service, route, path, start, duration_ms, statements):
        client, server = next(ids), next(ids)
        url = f"http://{service}.internal:8000{path}"
        self._span(trace, client, parent, "gateway", "GET", 3, start, int(duration_ms * MS), http_method="GET",
                   http_status=200, url_full=url, server_address=f"{service}.internal")
        self._span(trace, server, client, service, f"GET {route}", 2, start + MS // 2, int((duration_ms - 1) * MS),
                   http_method="GET", http_route=route, http_status=200, url_path=path)
        step = int((duration_ms - 2) / statements * MS)
        for i in range(statements):
            statement = STATEMENTS[service][min(i, len(STATEMENTS[service]) - 1)]
            self._span(trace, next(ids), server, service, statement.split()[0], 3, start + MS + i * step,
                       int(step * 0.9), db_statement=statement)
        if statements < 8:  # the stock call has an internal span to reach 20 spans per trace
            self._span(trace, next(ids), server, service, "reserve", 1, start + MS, step)

    def take(self) -> IngestBatch:
        batch, self.batch = self.batch, IngestBatch(resources=dict(self.batch.resources))
        return batch


def build_store(path: Path, traces: int) -> float:
    rng = random.Random(7)
    writer = TraceWriter(rng)
    store = SpanStore(path, synchronous="OFF")
    started = time.perf_counter()
    t0 = time.time_ns() - traces * 50 * MS  # one trace every 50 ms, ending now
    try:
        for number in range(1, traces + 1):
            writer.trace(number, t0 + number * 50 * MS)
            if number % 2000 == 0 or number == traces:
                store.write([writer.take()])
    finally:
        store.close()
    return time.perf_counter() - started


def measure(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB, and the exit code of a subprocess."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.stderr.write(process.stderr.read().decode())
    process.stderr.close()
    return wall, usage.ru_maxrss / 1024, process.returncode


BASELINE = """
import sqlite3, sys
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
n = 0
for row in conn.execute("SELECT * FROM spans"):
    n += 1
print(n)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=50_000)
    parser.add_argument("--keep", metavar="PATH", help="build (or reuse) the store here instead of a temp folder")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        seconds = build_store(Path(args.keep), args.traces)
        print(f"store: {args.traces:,} traces x 20 spans written in {seconds:.1f} s "
              f"({Path(args.keep).stat().st_size / 2**20:.0f} MiB)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "spans.db"
        if not path.exists():
            # In a child process: a child forked from a parent that built the store would report
            # the parent's memory as part of its own peak.
            subprocess.run([sys.executable, __file__, "--build-only", "--traces", str(args.traces),
                            "--keep", str(path)], check=True)
        takealook = str(Path(sys.executable).with_name("takealook"))
        base_wall, base_rss, _ = measure([sys.executable, "-c", BASELINE, str(path)])
        wall, rss, code = measure([takealook, "traces", "report", "--store", str(path), "--format", "json"])
        if code:
            print(f"traces report failed with exit code {code}")
            return 1
        print(f"baseline (read every span row with sqlite3): {base_wall:.2f} s, peak {base_rss:.0f} MiB")
        print(f"traces report --format json: {wall:.2f} s, peak {rss:.0f} MiB "
              f"({wall / base_wall:.1f}x the baseline's time)")
        print(f"targets: under 10 s ({'met' if wall < 10 else 'MISSED'}), "
              f"under 1024 MiB ({'met' if rss < 1024 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
