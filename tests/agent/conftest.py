"""Fixtures for the agent's tests: three seeded databases, an OTLP sink, app processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from takealook.pgcluster import free_port
from tests.agent.otlp_sink import OtlpSink
from tests.conftest import wait_for_port

APPS = Path(__file__).resolve().parent / "apps"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def app_dbs(pg):
    """DSNs of the gateway, orders and inventory databases, seeded."""
    dsns = {name: pg.create_database(name) for name in ("gateway", "orders", "inventory")}
    with psycopg.connect(dsns["gateway"], autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(0, 99) i")
    with psycopg.connect(dsns["orders"], autocommit=True) as conn:
        conn.execute("CREATE TABLE order_lines (order_id int, sku text, qty int)")
        conn.execute("INSERT INTO order_lines SELECT i / 3, 'sku-' || i, i FROM generate_series(0, 299) i")
    with psycopg.connect(dsns["inventory"], autocommit=True) as conn:
        conn.execute("CREATE TABLE stock (sku text PRIMARY KEY, qty int, note text)")
        conn.execute("INSERT INTO stock SELECT 'sku-' || i, i * 2, 'n' FROM generate_series(0, 299) i")
    yield dsns
    for dsn in dsns.values():
        pg.drop_database(dsn)


@pytest.fixture
def sink():
    with OtlpSink() as receiver:
        yield receiver


class Apps:
    """Starts app processes; stops them all at the end of the test."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, argv: list[str], env: dict, cwd: Path = APPS, port: int | None = None,
              timeout: float = 30.0) -> subprocess.Popen:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TAKEALOOK_"))}
        full_env.update({"PYTHONPATH": str(ROOT), "OTEL_METRIC_EXPORT_INTERVAL": "500", "PYTHONUNBUFFERED": "1"})
        full_env.update(env)
        log = self.tmp_path / f"app-{len(self.procs)}.log"
        out = open(log, "w")
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((proc, log))
        if port is not None:
            try:
                wait_for_port(port, timeout, proc)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{log.read_text()}") from None
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.args}\n{log.read_text()}" for p, log in self.procs)

    def stop(self) -> None:
        import signal

        for proc, _ in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc, _ in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def apps(tmp_path):
    runner = Apps(tmp_path)
    yield runner
    runner.stop()


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


__all__ = ["APPS", "Apps", "bin_path", "free_port"]
