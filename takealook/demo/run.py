"""The demo, step by step: everything it starts, it stops (also on Ctrl-C), unless asked to keep it running.

``run_demo(options, progress)`` returns a ``DemoResult`` with the report's
parts; the CLI renders it. Every server binds 127.0.0.1; the load is bounded
by ``duration`` and the rate; nothing outside the demo's own private
PostgreSQL is written to.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from takealook.demo import data
from takealook.errors import TakealookError
from takealook.pgcluster import PrivateCluster, free_port

Progress = Callable[[str], None]
BIN = Path(sys.executable).parent
STEPS = 8


@dataclass(frozen=True)
class DemoOptions:
    duration_s: int = 30
    rate: float = 20.0  # requests/s of the load test (open model: no coordinated omission)
    keep_running: bool = False
    workdir: Optional[Path] = None  # where the store and runs go (a temporary folder by default)


@dataclass
class DemoResult:
    workdir: Path
    store: Path
    dsns: dict
    urls: dict
    traces: object = None  # TraceReport
    audit: object = None  # AuditReport
    comparison: object = None  # Comparison
    applied_index: Optional[str] = None
    timings: dict = field(default_factory=dict)
    stop: Optional[Callable[[], None]] = None  # with keep_running: stops what the demo started


class DemoError(TakealookError):
    """A step of the demo failed; the message says which and why."""


class _Step:
    def __init__(self, progress: Progress, result: DemoResult):
        self.number = 0
        self.progress = progress
        self.result = result
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        self.number += 1
        elapsed = time.monotonic() - self.started
        self.progress(f"[{self.number}/{STEPS}] {text} (at {elapsed:.0f}s)")


def run_demo(options: DemoOptions, progress: Progress) -> DemoResult:
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="takealook-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(workdir=workdir, store=workdir / "spans.db", dsns={}, urls={})
    step = _Step(progress, result)
    stack = ExitStack()
    try:
        _run(options, step, stack, result)
        result.timings["total_s"] = time.monotonic() - step.started
        if options.keep_running:
            kept = stack.pop_all()

            def stop() -> None:
                kept.close()
                if options.workdir is None:
                    shutil.rmtree(workdir, ignore_errors=True)

            result.stop = stop
        return result
    finally:
        stack.close()
        if options.workdir is None and not options.keep_running:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(options: DemoOptions, step: _Step, stack: ExitStack, result: DemoResult) -> None:
    step("starting a private PostgreSQL with three databases")
    cluster = PrivateCluster()
    cluster.start()
    stack.callback(cluster.stop)
    for name, sql in data.DATABASES.items():
        result.dsns[name] = cluster.create_database(f"demo_{name}")
        cluster.psql(data.EXTENSIONS + sql, dbname=f"demo_{name}")
    for name in data.DATABASES:  # the audit should see the apps' statements, not the seeding
        cluster.psql("SELECT pg_stat_statements_reset()", dbname=f"demo_{name}")

    step("starting the embedded collector")
    from takealook.collector.server import Collector
    from takealook.collector.settings import CollectorSettings

    collector = Collector(CollectorSettings(store=result.store, http=("127.0.0.1", 0), grpc=None))
    collector.start()
    stack.callback(collector.stop)

    step("starting the gateway (Flask), orders (Django) and inventory (Flask) apps under takealook-run")
    _start_apps(collector.http_url, result, stack)

    step("sending warm-up traffic so the collector has traces to build the load test from")
    sent = _warm_up(result.urls["gateway"])
    _wait_for_spans(result.store, sent)

    step(f"load test before the change: {options.duration_s}s at {options.rate:g} requests/s")
    suite = _generate_suite(result)
    before = _load(suite, result, "before", options)

    step("auditing the three databases and the traces")
    result.audit = _audit(result)
    result.traces = _analyze_traces(result.store)

    step("applying the top index suggestion to the demo's own database")
    result.applied_index = _apply_top_index(result, cluster)

    step(f"load test after the change: {options.duration_s}s at {options.rate:g} requests/s")
    after = _load(suite, result, "after", options)
    from takealook.loadtests.compare import compare_runs

    result.comparison = compare_runs([before], [after])
    result.traces = _analyze_traces(result.store)


# --------------------------------------------------------------------------- apps


def _start_apps(collector_url: str, result: DemoResult, stack: ExitStack) -> None:
    ports = {name: free_port() for name in ("gateway", "orders", "inventory")}
    result.urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TAKEALOOK_"))}
    base.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector_url, "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "DEMO_GATEWAY_DSN": result.dsns["gateway"], "DEMO_ORDERS_DSN": result.dsns["orders"],
        "DEMO_INVENTORY_DSN": result.dsns["inventory"], "DEMO_ORDERS_URL": result.urls["orders"],
        "DEMO_INVENTORY_URL": result.urls["inventory"], "PYTHONUNBUFFERED": "1",
        # SKUs and tiers are catalogue values, not personal ones: recorded, so the load test can replay them.
        "TAKEALOOK_RECORD_PATH_VALUES": "sku,tier",
    })
    modules = {"gateway": "takealook.demo.apps.gateway:app", "orders": "takealook.demo.apps.orders.wsgi:application",
               "inventory": "takealook.demo.apps.inventory:app"}
    procs: list[subprocess.Popen] = []
    stack.callback(_stop_processes, procs)
    for name, module in modules.items():
        log = open(result.workdir / f"{name}.log", "w")
        stack.callback(log.close)
        argv = [str(BIN / "takealook-run"), "--service", name, str(BIN / "gunicorn"), "-w", "2",
                "--threads", "4", "--graceful-timeout", "5", "-b", f"127.0.0.1:{ports[name]}",
                "--access-logfile", "-", module]
        procs.append(subprocess.Popen(argv, env=base, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=result.workdir))
    for name, port in ports.items():
        _wait_port(port, result.workdir / f"{name}.log")


def _stop_processes(procs: list) -> None:
    """SIGTERM to every app's process group at once, then wait (bounded), then SIGKILL what is left."""
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)  # the group: workers and export helpers too
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_port(port: int, log: Path, timeout: float = 60.0) -> None:
    """Waits until the app accepts connections (a health request would show up in the traces)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    raise DemoError(f"the demo app on port {port} did not start: {' / '.join(tail) or 'no output'}")


def _warm_up(gateway: str) -> int:
    """The demo's real traffic; returns the requests made (each a trace entering at the gateway)."""
    paths = [f"/dashboard/{c}" for c in data.BUSY_CUSTOMERS[:12]] + \
            [f"/orders/{c}" for c in data.BUSY_CUSTOMERS[:12]] + [f"/products/{sku}" for sku in data.SKUS[:24]]
    for path in paths:
        try:
            with urllib.request.urlopen(gateway + path, timeout=30) as response:
                response.read()
        except urllib.error.HTTPError:
            pass
    return len(paths)


def _wait_for_spans(store: Path, expected: int, timeout: float = 30.0) -> None:
    """Until the gateway's spans of every warm-up request are stored (the suite's weights count them).

    A trace exists as soon as any of its spans arrives, often the called app's, which ends first:
    counting traces with a gateway span waits for the entries themselves. After the deadline, most
    of them (5 in 6) will do.
    """
    from takealook.collector import open_store

    deadline = time.monotonic() + timeout
    stored = 0
    while time.monotonic() < deadline:
        try:
            with open_store(store, allow_empty=True) as reader:
                stored = reader.count_traces(service="gateway")
        except TakealookError:
            pass
        if stored >= expected:
            return
        time.sleep(0.3)
    if stored < expected * 5 // 6:
        raise DemoError("no traces reached the collector: see the app logs in the demo's folder")


# --------------------------------------------------------------------------- load, audit, change


def _generate_suite(result: DemoResult) -> Path:
    from takealook.loadtests.generate import from_store

    suite = from_store(result.store, since_ns=None, services=("gateway",), host=result.urls["gateway"])
    path = result.workdir / "suite.py"
    path.write_text(suite.text)
    return path


def _load(suite: Path, result: DemoResult, label: str, options: DemoOptions):
    from takealook.loadtests.runner import LoadShape, RunRequest, run_load
    from takealook.loadtests.runs import load_run

    runs = result.workdir / "runs"
    outcome = run_load(RunRequest(suite=suite, host=result.urls["gateway"], label=label, runs_dir=runs,
                                  shape=LoadShape(rate=options.rate), duration_s=options.duration_s,
                                  warmup_s=3, drain_s=3, replace=True))
    return load_run(str(outcome.path), runs)


def _audit(result: DemoResult):
    from takealook.analyzers.db.audit import audit_databases

    return audit_databases(list(result.dsns.values()))


def _analyze_traces(store: Path):
    from takealook.analyzers.traces import Settings
    from takealook.analyzers.traces.source import analyze_store

    # The demo has no users of its own: its load runs stand in for them, so its report reads them
    # (a real store's analyses leave load tests out). No finding comes from their being load tests:
    # the load generator, the parent of every load request, is not an orphan's missing parent.
    return analyze_store(store, Settings(), load=True)[1]


def _apply_top_index(result: DemoResult, cluster: PrivateCluster) -> Optional[str]:
    """CREATE the audit's top verified index suggestion: in the demo's database, never elsewhere."""
    best = None
    for database in result.audit.databases:
        advice = getattr(database, "index_advice", None)
        for index in getattr(advice, "indexes", ()) or ():
            if index.verified and (best is None or index.benefit_ms > best[0]):
                best = (index.benefit_ms, database, index)
    if best is None:
        return None
    _, database, index = best
    dbname = database.database or ""
    if not dbname.startswith("demo_"):
        raise DemoError(f"refusing to create an index outside the demo's databases ({dbname})")
    cluster.psql(index.create_sql, dbname=dbname)
    cluster.psql("ANALYZE", dbname=dbname)
    return index.create_sql

