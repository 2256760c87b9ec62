"""Benchmark: `takealook traces compare --format json` over the store of bench/traces_report.py (1,000,000 spans).

    .venv/bin/python bench/traces_compare.py [--traces 50000] [--keep PATH]
    .venv/bin/python bench/traces_compare.py --scale 1M,10M [--stores sqlite,chdb] [--keep DIR]

The store (50,000 traces of 20 spans, 3 services, one trace every 50 ms) is
built as bench/traces_report.py builds it. The two sides are its first and
second halves in time (``--before ..MID --after MID..``), so every trace is read
and compared: per trace its entry endpoint, critical path, statements and calls;
per endpoint the bootstrap of 2,000 resamples.

Baselines, measured in the same run on the same file: reading every span row
with Python's sqlite3 (the floor of any Python reader), and `traces report
--format json --jobs 1` (the same reading and critical paths in one process,
plus every other analysis). Times are printed as ratios of both. Peak memory is
that of the whole process tree. The machine may be shared: run it a few times.

``--scale 1M,10M``: the stores of ``bench/traces_report.py --scale`` (SQLite,
and chdb: ClickHouse embedded in the Collector exporter's layout), compared in
two halves. These windows are large (20,000 traces or more): the verdicts come
from every request's root span, where the time went from 200 whole traces per
endpoint and side. Baseline, in the same run, on stores up to ``--whole-max``
spans (default 1M): the same comparison reading every trace whole
(``compare_store(..., sample=False)`` in a subprocess), as before large windows
were sampled. Printed: time and peak memory per store and size, the ratio of the
largest size's time to the smallest's, and the sampled/whole time ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("traces_report_bench", HERE / "traces_report.py")
report_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_bench)


def _middle(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    low, high = conn.execute("SELECT min(start_ns), max(start_ns) FROM traces").fetchone()
    conn.close()
    middle = dt.datetime.fromtimestamp((low + high) / 2e9, dt.timezone.utc)
    return middle.strftime("%Y-%m-%dT%H:%M:%S")


WHOLE = """
import sys
from takealook.analyzers.traces.compare import Side, compare_store
middle = int(sys.argv[2])
result = compare_store(sys.argv[1], Side(until_ns=middle), Side(since_ns=middle), sample=False)
print(result.traces_before + result.traces_after)
"""
MIDDLE = """
import sys
from takealook.collector import open_store
with open_store(sys.argv[1]) as store:
    summary = store.summary()
print((summary.start_ns + summary.end_ns) // 2)
"""


def scale(sizes: list[int], stores: list[str], keep: Path, whole_max: int) -> int:
    takealook = str(Path(sys.executable).with_name("takealook"))
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f} (a shared machine is noisy)")
    for kind in stores:
        walls = {}
        for spans in sizes:
            target = keep / f"{kind}-{spans}" / ("spans.db" if kind == "sqlite" else "ch")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run([sys.executable, str(HERE / "traces_report.py"), "--build-only", "--traces",
                                str(spans // 20), "--keep", str(target), "--stores", kind], check=True)
            store = str(target) if kind == "sqlite" else f"chdb:{target}"
            middle_ns = int(subprocess.run([sys.executable, "-c", MIDDLE, store], check=True, capture_output=True,
                                           text=True).stdout)
            middle = dt.datetime.fromtimestamp(middle_ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            wall, rss, code = report_bench.measure(
                [takealook, "traces", "compare", "--store", store, "--before", f"..{middle}", "--after",
                 f"{middle}..", "--format", "json"])
            if code:
                print(f"{kind}, {spans:,} spans: traces compare failed with exit code {code}")
                return 1
            walls[spans] = wall
            line = f"{kind}, {spans:,} spans: traces compare --format json {wall:.2f} s, peak {rss:.0f} MiB"
            if spans <= whole_max:
                whole_wall, whole_rss, code = report_bench.measure(
                    [sys.executable, "-c", WHOLE, store, str(middle_ns)])
                if code:
                    print(f"{kind}, {spans:,} spans: the whole-trace baseline failed with exit code {code}")
                    return 1
                line += (f"; every trace read whole: {whole_wall:.2f} s, peak {whole_rss:.0f} MiB "
                         f"(sampled/whole time {wall / whole_wall:.2f})")
            print(line, flush=True)
        if len(walls) > 1:
            low, high = min(walls), max(walls)
            print(f"{kind}: {high // 10**6}M/{low // 10**6}M time ratio {walls[high] / walls[low]:.2f} "
                  f"(spans x{high / low:.0f})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=50_000)
    parser.add_argument("--keep", metavar="PATH", help="build (or reuse) the store here instead of a temp folder")
    parser.add_argument("--scale", metavar="SIZES", help="spans per store, e.g. 1M,10M: the scale benchmark")
    parser.add_argument("--stores", default="sqlite,chdb", help="stores of the scale benchmark (sqlite, chdb)")
    parser.add_argument("--whole-max", default="1M", help="largest store also compared reading every trace whole")
    args = parser.parse_args()
    if args.scale:
        spans = report_bench._spans
        with tempfile.TemporaryDirectory() as tmp:
            return scale([spans(s) for s in args.scale.split(",")], args.stores.split(","),
                         Path(args.keep or tmp), spans(args.whole_max))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "spans.db"
        if not path.exists():
            subprocess.run([sys.executable, str(HERE / "traces_report.py"), "--build-only", "--traces",
                            str(args.traces), "--keep", str(path)], check=True)
        takealook = str(Path(sys.executable).with_name("takealook"))
        base_wall, base_rss, _ = report_bench.measure([sys.executable, "-c", report_bench.BASELINE, str(path)])
        print(f"baseline (read every span row with sqlite3, nothing else): {base_wall:.2f} s, peak {base_rss:.0f} MiB")
        report_wall, report_rss, code = report_bench.measure(
            [takealook, "traces", "report", "--store", str(path), "--format", "json", "--jobs", "1"])
        if code:
            return 1
        print(f"traces report --format json --jobs 1: {report_wall:.2f} s, peak {report_rss:.0f} MiB")
        middle = _middle(path)
        wall, rss, code = report_bench.measure(
            [takealook, "traces", "compare", "--store", str(path), "--before", f"..{middle}", "--after",
             f"{middle}..", "--format", "json"])
        if code:
            print(f"traces compare failed with exit code {code}")
            return 1
        print(f"traces compare --format json (two halves of the store): {wall:.2f} s, peak {rss:.0f} MiB; "
              f"{wall / base_wall:.1f}x the sqlite baseline's time, {wall / report_wall:.2f}x traces report --jobs 1")
        print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f} (a shared machine is noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
