"""Benchmark: `takealook traces report --format json` over a store of 1,000,000 spans, and over ClickHouse.

    .venv/bin/python bench/traces_report.py [--traces 50000] [--keep PATH]
    .venv/bin/python bench/traces_report.py --scale 1M,10M [--stores sqlite,chdb]

Builds a store of 50,000 traces of 20 spans across 3 services (a gateway
calling an orders service and a stock service, each with its own SQL, and an N+1
over products in the slower orders calls) the way the collector stores them
(OTLP protobuf requests through its Converter and SpanStore.write), then times
`takealook traces report --format json` as a subprocess, with its default
parallel readers and with one process: wall time and peak resident memory of
the whole process tree (sampled from /proc). Targets: under 10 s and 1 GiB.

Baseline, measured in the same run on the same file: a subprocess that only
reads every span row with Python's sqlite3 (the store's own span SELECT, spans
joined to their attribute sets), the floor for any Python reader of this store; the report's time is printed as a ratio
of it. The machine may be shared with other work: run it a few times.

``--scale 1M,10M`` (issue 17): the same report over 1 and 10 million spans in
each store: SQLite (built as above) and chdb (ClickHouse embedded, the
Collector clickhouse exporter's layout; the first 50,000 traces written by
``traces import``'s writer from the same requests, larger tables made of copies
of them with new ids, later in time, by the engine). Wall time and peak memory
of the report, and the 10M/1M time ratio per store. Goals: 10M spans on chdb
reported in 30 s and 2 GiB at most on a 2-core machine, and a ratio well under
10 (over a large table the per-trace analyses run on a bounded sample).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from takealook.collector.convert import Converter  # noqa: E402
from takealook.collector.store import SpanStore  # noqa: E402

SERVICES = ("gateway", "orders", "stock")
STATEMENTS = {
    "gateway": ("SELECT id, name FROM users WHERE id = %s", "SELECT * FROM sessions WHERE key = %s"),
    "orders": ("SELECT * FROM orders WHERE id = %s", "SELECT * FROM order_items WHERE order_id = %s",
               "SELECT * FROM products WHERE id = %s"),
    "stock": ("SELECT qty FROM stock WHERE product_id = %s", "UPDATE stock SET reserved = reserved + 1 WHERE id = %s"),
}
MS = 1_000_000


class TraceWriter:
    """OTLP requests of 20-span traces, stored as the collector stores them (Converter, SpanStore.write)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.request = ExportTraceServiceRequest()
        self.scopes = {}
        for service in SERVICES:
            resource_spans = self.request.resource_spans.add()
            _set(resource_spans.resource.attributes, {"service.name": service, "service.version": "1.4.2",
                                                      "host.name": f"{service}-1"})
            self.scopes[service] = resource_spans.scope_spans.add()
            self.scopes[service].scope.name = "takealook"

    def _span(self, trace, span_id, parent, service, name, kind, start, duration, **attributes):
        span = self.scopes[service].spans.add()
        span.trace_id, span.span_id = trace, span_id
        if parent:
            span.parent_span_id = parent
        span.name, span.kind = name, kind
        span.start_time_unix_nano, span.end_time_unix_nano = start, start + duration
        _set(span.attributes, {"thread.id": 140000000 + self.rng.randrange(8), **attributes})

    def trace(self, number: int, t0: int) -> None:
        rng = self.rng
        trace = number.to_bytes(16, "big")
        ids = iter((number * 32 + i).to_bytes(8, "big") for i in range(1, 21))
        root, sql_ms = next(ids), rng.uniform(0.5, 3)
        orders_ms, stock_ms = rng.uniform(20, 80), rng.uniform(5, 30)
        total = 2 * sql_ms + orders_ms + stock_ms + 4
        self._span(trace, root, None, "gateway", "GET /dashboard/<int:id>", 2, t0, int(total * MS),
                   **{"http.request.method": "GET", "http.route": "/dashboard/<int:id>",
                      "http.response.status_code": 200, "url.path": f"/dashboard/{number}"})
        t = t0 + MS
        for statement in STATEMENTS["gateway"]:
            self._span(trace, next(ids), root, "gateway", statement.split()[0], 3, t, int(sql_ms * MS),
                       **_db("gateway", statement))
            t += int(sql_ms * MS)
        self._call(trace, ids, root, "orders", "/api/orders/<int:id>", f"/api/orders/{number}", t, orders_ms, 8)
        t += int(orders_ms * MS)
        self._call(trace, ids, root, "stock", "/stock/<int:id>", f"/stock/{number}", t, stock_ms, 4)

    def _call(self, trace, ids, parent, service, route, path, start, duration_ms, statements):
        client, server = next(ids), next(ids)
        self._span(trace, client, parent, "gateway", "GET", 3, start, int(duration_ms * MS),
                   **{"http.request.method": "GET", "http.response.status_code": 200,
                      "url.full": f"http://{service}.internal:8000{path}", "server.address": f"{service}.internal"})
        self._span(trace, server, client, service, f"GET {route}", 2, start + MS // 2, int((duration_ms - 1) * MS),
                   **{"http.request.method": "GET", "http.route": route, "http.response.status_code": 200,
                      "url.path": path})
        step = int((duration_ms - 2) / statements * MS)
        for i in range(statements):
            statement = STATEMENTS[service][min(i, len(STATEMENTS[service]) - 1)]
            self._span(trace, next(ids), server, service, statement.split()[0], 3, start + MS + i * step,
                       int(step * 0.9), **_db(service, statement))
        if statements < 8:  # the stock call has an internal span to reach 20 spans per trace
            self._span(trace, next(ids), server, service, "reserve", 1, start + MS, step)

    def take(self) -> bytes:
        body = self.request.SerializeToString()
        for scope in self.scopes.values():
            del scope.spans[:]
        return body


def _db(service: str, statement: str) -> dict:
    return {"db.system": "postgresql", "db.namespace": service, "db.query.text": statement,
            "server.address": "127.0.0.1", "server.port": 5432}


def _set(target, values: dict) -> None:
    for key, value in values.items():
        kv = target.add()
        kv.key = key
        if isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = value


def build_store(path: Path, traces: int) -> float:
    rng = random.Random(7)
    writer = TraceWriter(rng)
    converter = Converter()
    store = SpanStore(path, synchronous="OFF")
    started = time.perf_counter()
    t0 = time.time_ns() - traces * 50 * MS  # one trace every 50 ms, ending now
    try:
        for number in range(1, traces + 1):
            writer.trace(number, t0 + number * 50 * MS)
            if number % 500 == 0 or number == traces:
                store.write([converter.traces(writer.take()).batch])
    finally:
        store.close()
    return time.perf_counter() - started


def measure(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak resident memory of the process and its children together (MiB), exit code.

    The report may read with worker processes, so /proc is sampled every 50 ms and the
    resident sizes of the whole process tree are added up.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss(process.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if process.returncode:
        sys.stderr.write(process.stderr.read().decode())
    process.stderr.close()
    return wall, peak / 2**20, process.returncode


def _tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and all its descendants (Linux /proc; children via task/*/children)."""
    total, todo, seen = 0, [root], set()
    while todo and len(seen) < 256:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
        except (OSError, ValueError):
            continue  # it ended meanwhile
    return total


PAGE = os.sysconf("SC_PAGE_SIZE")


BASELINE = """
import sqlite3, sys
from takealook.collector.schema import SPAN_SELECT
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
n = 0
for row in conn.execute(SPAN_SELECT):
    n += 1
print(n)
"""


BASE_TRACES = 50_000  # written through the writer; larger chdb tables copy them
COPY = """
INSERT INTO {table}
SELECT Timestamp + toIntervalNanosecond({shift} * copy), concat(leftPad(hex(toUInt16(copy)), 4, '0'), substring(TraceId, 5)),
       SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName, ResourceAttributes, ScopeName, ScopeVersion,
       SpanAttributes, Duration, StatusCode, StatusMessage, `Events.Timestamp`, `Events.Name`, `Events.Attributes`,
       `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`
FROM {table} ARRAY JOIN range(1, {copies} + 1) AS copy WHERE TraceId LIKE '0000%'
"""


def build_chdb(folder: Path, traces: int) -> float:
    """The first BASE_TRACES traces as `traces import` writes them, the rest as copies made by the engine."""
    from takealook.collector.clickhouse import connect
    from takealook.collector.clickhouse_write import ClickHouseWriter
    from takealook.collector.location import parse_store

    url = parse_store(f"chdb:{folder}")
    rng = random.Random(7)
    writer, converter = TraceWriter(rng), Converter()
    started = time.perf_counter()
    base = min(traces, BASE_TRACES)
    t0 = time.time_ns() - traces * 50 * MS
    store = ClickHouseWriter(url)
    try:
        for number in range(1, base + 1):
            writer.trace(number, t0 + number * 50 * MS)
            if number % 500 == 0 or number == base:
                store.write([converter.traces(writer.take()).batch])
    finally:
        store.close()
    if traces > base:
        engine = connect(url)
        try:
            engine.command(COPY.format(table=url.qualified, shift=base * 50 * MS, copies=traces // base - 1))
            engine.command(f"OPTIMIZE TABLE {url.qualified} FINAL")
        finally:
            engine.close()
    return time.perf_counter() - started


def scale(sizes: list[int], stores: list[str], keep: Path) -> int:
    """The report over each size of each store: time, peak memory, and the ratio of the largest to the smallest."""
    takealook = str(Path(sys.executable).with_name("takealook"))
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f} (a shared machine is noisy)")
    for kind in stores:
        walls = {}
        for spans in sizes:
            traces = spans // 20
            target = keep / f"{kind}-{spans}" / ("spans.db" if kind == "sqlite" else "ch")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run([sys.executable, __file__, "--build-only", "--traces", str(traces), "--keep",
                                str(target), "--stores", kind], check=True)
            store = str(target) if kind == "sqlite" else f"chdb:{target}"
            wall, rss, code = measure([takealook, "traces", "report", "--store", store, "--format", "json"])
            if code:
                print(f"{kind}, {spans:,} spans: traces report failed with exit code {code}")
                return 1
            walls[spans] = wall
            goal = (f"; goal 30 s ({'met' if wall <= 30 else 'MISSED'}) and 2048 MiB "
                    f"({'met' if rss <= 2048 else 'MISSED'})" if kind == "chdb" and spans >= 10_000_000 else "")
            print(f"{kind}, {spans:,} spans: traces report --format json {wall:.2f} s, peak {rss:.0f} MiB{goal}")
        if len(walls) > 1:
            low, high = min(walls), max(walls)
            print(f"{kind}: {high // 10**6}M/{low // 10**6}M time ratio {walls[high] / walls[low]:.2f} "
                  f"(spans x{high / low:.0f})")
    return 0


def _spans(text: str) -> int:
    text = text.strip().upper()
    return int(float(text[:-1]) * 1_000_000) if text.endswith("M") else int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=50_000)
    parser.add_argument("--keep", metavar="PATH", help="build (or reuse) the store here instead of a temp folder")
    parser.add_argument("--scale", metavar="SIZES", help="spans per store, e.g. 1M,10M: the scale benchmark")
    parser.add_argument("--stores", default="sqlite,chdb", help="stores of the scale benchmark (sqlite, chdb)")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale:
        with tempfile.TemporaryDirectory() as tmp:
            return scale([_spans(s) for s in args.scale.split(",")], args.stores.split(","), Path(args.keep or tmp))
    if args.build_only and args.stores == "chdb":
        seconds = build_chdb(Path(args.keep), args.traces)
        print(f"chdb store: {args.traces:,} traces x 20 spans written in {seconds:.1f} s")
        return 0
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
        print(f"baseline (read every span row with sqlite3, nothing else): {base_wall:.2f} s, "
              f"peak {base_rss:.0f} MiB")
        report = [takealook, "traces", "report", "--store", str(path), "--format", "json"]
        for label, extra in (("default (parallel readers)", []), ("one process (--jobs 1)", ["--jobs", "1"])):
            wall, rss, code = measure(report + extra)
            if code:
                print(f"traces report failed with exit code {code}")
                return 1
            print(f"traces report --format json, {label}: {wall:.2f} s, peak {rss:.0f} MiB "
                  f"(all processes), {wall / base_wall:.1f}x the baseline's time; targets under 10 s "
                  f"({'met' if wall < 10 else 'MISSED'}) and 1024 MiB ({'met' if rss < 1024 else 'MISSED'})")
        print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f} (a shared machine is noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
