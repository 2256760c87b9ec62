"""Fixtures for the agent's tests: three seeded databases, an OTLP sink, app processes."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
import pytest

from takealook.pgcluster import free_port
from tests.agent.otlp_sink import OtlpSink
from tests.processes import Processes

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


@pytest.fixture
def apps(tmp_path):
    runner = Processes(tmp_path, cwd=APPS)
    yield runner
    runner.stop()


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


__all__ = ["APPS", "Processes", "bin_path", "free_port"]
