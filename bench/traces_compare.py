"""Benchmark: `takealook traces compare --format json` over the store of bench/traces_report.py (1,000,000 spans).

    .venv/bin/python bench/traces_compare.py [--traces 50000] [--keep PATH]

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=50_000)
    parser.add_argument("--keep", metavar="PATH", help="build (or reuse) the store here instead of a temp folder")
    args = parser.parse_args()
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
