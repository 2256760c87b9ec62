"""Real traces end to end: three instrumented apps -> `takealook collect` -> `traces report` finds the seeded problems.

The apps (``apps/``): a Flask gateway under ``takealook-run`` and gunicorn that calls the orders service and
then the inventory service one after the other (seeded: sequential calls); a Django orders service that loads
each order's product with its own query (seeded: an N+1 of 8 statements of ~8 ms); a Flask inventory service
that runs 6 queries at once in a thread pool (a deliberate fan-out: must not be flagged). Each has its own
PostgreSQL database. The report must find exactly the two seeded problems, on the right endpoint, and what
all three apps do as many small apps do: open a new database connection in every request (Django's default
``CONN_MAX_AGE = 0``, a ``connect()`` per request or per query in the Flask apps).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import requests

from takealook.collector import open_store
from takealook.pgcluster import free_port
from tests.conftest import script, wait_for
from tests.contracts import check
from tests.processes import Processes

APPS = Path(__file__).resolve().parent / "apps"
N_PLUS_ONE = "SELECT name, pg_sleep(%s)::text FROM products WHERE id = %s"  # the agent scrubs literals
DASHBOARDS, HEALTH_CHECKS = 8, 5


@pytest.fixture
def databases(pg):
    dsns = {name: pg.create_database(name) for name in ("gateway", "orders", "inventory")}
    with psycopg.connect(dsns["gateway"], autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO users SELECT i, 'user ' || i FROM generate_series(0, 99) i")
    with psycopg.connect(dsns["orders"], autocommit=True) as conn:
        conn.execute("CREATE TABLE products (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO products SELECT i, 'product ' || i FROM generate_series(0, 99) i")
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, user_id int, product_id int)")
        conn.execute("INSERT INTO orders (user_id, product_id) SELECT i % 10, i FROM generate_series(0, 79) i")
    with psycopg.connect(dsns["inventory"], autocommit=True) as conn:
        conn.execute("CREATE TABLE stock (warehouse int, qty int)")
        conn.execute("INSERT INTO stock SELECT i % 6, i FROM generate_series(0, 599) i")
    yield dsns
    for dsn in dsns.values():
        pg.drop_database(dsn)


@pytest.fixture
def processes(tmp_path):
    running = Processes(tmp_path, cwd=APPS)
    yield running
    running.stop()


def _complete(store: Path) -> bool:
    """Every request's trace is whole in the store: the seeded spans of each dashboard and each health check."""
    if not store.exists():
        return False
    try:
        with open_store(store, allow_empty=True) as reader:
            traces = list(reader.iter_traces())
    except Exception:  # noqa: BLE001 - the collector may be creating the file right now
        return False
    dashboards = health = 0
    for spans in traces:
        # Whole: every span's parent is there too. A server span ends after its response is sent, so its
        # children can reach the store a flush (up to a second) before it does: without this the report
        # once ran while one dashboard's inventory span was still on its way, and found it broken.
        ids = {s.span_id for s in spans}
        if any(s.parent_span_id is not None and s.parent_span_id not in ids for s in spans):
            continue
        routes = [s.http_route for s in spans if s.kind == "server" and s.parent_span_id is None]
        statements = [s.db_statement for s in spans]
        if routes == ["/dashboard/<int:user_id>"] and statements.count(N_PLUS_ONE) == 8 and sum(
                1 for s in spans if s.service == "inventory" and s.db_statement) == 6:
            dashboards += 1
        elif routes == ["/health"] and any(s.db_statement for s in spans):
            health += 1
    return dashboards == DASHBOARDS and health == HEALTH_CHECKS


def test_the_report_finds_exactly_the_seeded_problems(databases, processes, tmp_path):
    store = tmp_path / "spans.db"
    otlp, gateway, orders, inventory = free_port(), free_port(), free_port(), free_port()
    processes.start([script("takealook"), "collect", "--listen", f"127.0.0.1:{otlp}", "--grpc", "off",
                     "--store", str(store), "--quiet"], port=otlp, env={})
    common = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp}"}
    processes.start([sys.executable, "inventory.py", str(inventory)], port=inventory,
                    env={**common, "OTEL_SERVICE_NAME": "inventory", "INVENTORY_DSN": databases["inventory"]})
    processes.start([sys.executable, "orders.py", str(orders)], port=orders,
                    env={**common, "OTEL_SERVICE_NAME": "orders", "ORDERS_DSN": databases["orders"]})
    processes.start([script("takealook-run"), "--service", "gateway", script("gunicorn"), "-w", "1",
                     "-b", f"127.0.0.1:{gateway}", "gateway:app"], port=gateway,
                    env={**common, "GATEWAY_DSN": databases["gateway"], "ORDERS_URL": f"http://127.0.0.1:{orders}",
                     "INVENTORY_URL": f"http://127.0.0.1:{inventory}"})

    with requests.Session() as session:
        for i in range(DASHBOARDS):
            answer = session.get(f"http://127.0.0.1:{gateway}/dashboard/{i}", timeout=30)
            assert answer.status_code == 200, processes.logs()
            assert len(answer.json()["orders"]["products"]) == 8
        for _ in range(HEALTH_CHECKS):
            assert session.get(f"http://127.0.0.1:{gateway}/health", timeout=30).json() == {"ok": True}
    wait_for(lambda: _complete(store), 45, message=f"all traces in the store\n{processes.logs()}")

    out = subprocess.run([script("takealook"), "traces", "report", "--store", str(store), "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    check("traces-report", report)  # docs/json.md, on real apps' traces

    assert report["totals"]["services"] == ["gateway", "inventory", "orders"]
    assert report["totals"]["skipped_spans"] == 0 and report["totals"]["traces_without_entry"] == 0
    endpoints = {e["endpoint"]: e for e in report["endpoints"]}
    assert set(endpoints) == {"GET /dashboard/{user_id}", "GET /health"}
    dashboard = endpoints["GET /dashboard/{user_id}"]
    assert (dashboard["service"], dashboard["requests"], dashboard["error_rate"]) == ("gateway", DASHBOARDS, 0.0)
    assert dashboard["services_per_request"] == 3.0 and dashboard["outbound_calls_per_request"] == 2.0
    assert dashboard["sql_per_request"] >= 1 + 1 + 8 + 6  # user, orders list, the N+1, the fan-out
    assert dashboard["critical_path"]["sql"] > 0.3  # the N+1 and the fan-out's slowest query dominate
    assert endpoints["GET /health"]["requests"] == HEALTH_CHECKS

    found = sorted((f["kind"], f["service"], f["endpoint"]) for f in report["findings"])
    assert found == [("connection_per_request", "gateway", "GET /dashboard/{user_id}"),
                     ("connection_per_request", "inventory", "GET /dashboard/{user_id}"),
                     ("connection_per_request", "orders", "GET /dashboard/{user_id}"),
                     ("n_plus_one", "orders", "GET /dashboard/{user_id}"),
                     ("sequential_calls", "gateway", "GET /dashboard/{user_id}")], json.dumps(
        report["findings"], indent=1)
    churn = {f["service"]: f for f in report["findings"] if f["kind"] == "connection_per_request"}
    assert churn["gateway"]["requests_connecting"] == DASHBOARDS + HEALTH_CHECKS
    assert churn["inventory"]["connects_per_request"] == 6.0  # one per query of the fan-out
    (n_plus_one,) = [f for f in report["findings"] if f["kind"] == "n_plus_one"]
    assert n_plus_one["statement"] == N_PLUS_ONE
    assert (n_plus_one["count"], n_plus_one["occurrences"]) == (8, DASHBOARDS)
    assert n_plus_one["operation"] == "GET /api/orders/"
    assert n_plus_one["total_ms"] >= 8 * 8
    (sequential,) = [f for f in report["findings"] if f["kind"] == "sequential_calls"]
    assert sequential["calls"] == ["GET orders /api/orders/", "GET inventory /api/stock/summary"]
    assert sequential["occurrences"] == DASHBOARDS and sequential["saving_ms"] >= 12  # the fan-out takes >= 12 ms
    assert n_plus_one["impact_ms_per_min"] > 0 and sequential["impact_ms_per_min"] > 0
