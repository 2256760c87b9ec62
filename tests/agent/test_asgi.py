"""Django's asgi.py under uvicorn is traced like its wsgi.py under gunicorn: the same trace shape.

One Django project (tests/agent/apps/orders_site) served twice under takealook-run, by gunicorn
(WSGI) and by uvicorn (ASGI), both calling the same inventory app; the same request to each gives
traces of the same shape: span names, kinds, parents, the SQL and the calls across services.
Its async view (async psycopg 3, httpx.AsyncClient in gather) runs under uvicorn only.
"""

from __future__ import annotations

import pytest
import requests

from tests.agent.conftest import APPS, bin_path, free_port
from tests.agent.otlp_sink import OtlpSink
from tests.processes import Processes

SERVER, CLIENT = 2, 3


@pytest.fixture(scope="module")
def servers(tmp_path_factory, app_dbs):
    with OtlpSink() as sink:
        runner = Processes(tmp_path_factory.mktemp("asgi"), cwd=APPS)
        ports = {"inventory": free_port(), "orders-wsgi": free_port(), "orders-asgi": free_port()}
        try:
            runner.start([bin_path("python"), "inventory.py", str(ports["inventory"])], port=ports["inventory"],
                         env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_SERVICE_NAME": "inventory",
                              "INVENTORY_DSN": app_dbs["inventory"]})
            common = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "ORDERS_DSN": app_dbs["orders"],
                      "INVENTORY_URL": f"http://127.0.0.1:{ports['inventory']}",
                      "DJANGO_SETTINGS_MODULE": "orders_site.settings"}
            # wsgi.py calls start() itself; asgi.py is Django's template, the agent comes from takealook-run.
            runner.start([bin_path("gunicorn"), "-w", "1", "-b", f"127.0.0.1:{ports['orders-wsgi']}",
                          "orders_site.wsgi"], cwd=APPS / "orders_site", port=ports["orders-wsgi"],
                         env={**common, "OTEL_SERVICE_NAME": "orders-wsgi"})
            runner.start([bin_path("takealook-run"), "--service", "orders-asgi", bin_path("uvicorn"), "--host",
                          "127.0.0.1", "--port", str(ports["orders-asgi"]), "--no-access-log",
                          "orders_site.asgi:application"], cwd=APPS / "orders_site", port=ports["orders-asgi"],
                         env=common)
            yield sink, ports, runner
        finally:
            runner.stop()


def _trace(sink, service, path):
    def complete(spans):
        roots = [s for s in spans if s["service"] == service and s["kind"] == SERVER
                 and s["attributes"].get("url.path") == path]
        if not roots:
            return False
        trace = [s for s in spans if s["trace_id"] == roots[0]["trace_id"]]
        return len([s for s in trace if s["service"] == "inventory" and "db.query.text" in s["attributes"]]) == 4

    spans = sink.wait_for_spans(complete)
    root = [s for s in spans if s["service"] == service and s["kind"] == SERVER
            and s["attributes"].get("url.path") == path][0]
    return root, [s for s in spans if s["trace_id"] == root["trace_id"]]


def _shape(root, trace) -> list:
    """The trace as (depth, service kind, name, SQL text or URL path) rows in a canonical order."""
    children: dict = {}
    for span in trace:
        children.setdefault(span["parent_span_id"], []).append(span)

    def label(span):
        attributes = span["attributes"]
        detail = attributes.get("db.query.text") or attributes.get("url.full", "").split("/", 3)[-1]
        service = "orders" if span["service"].startswith("orders") else span["service"]
        return (service, span["kind"], span["name"], detail)

    rows = []

    def walk(span, depth):
        rows.append((depth,) + label(span))
        for child in sorted(children.get(span["span_id"], []), key=label):
            walk(child, depth + 1)

    walk(root, 0)
    return rows


def test_django_asgi_under_uvicorn_has_the_trace_shape_of_wsgi_under_gunicorn(servers):
    sink, ports, runner = servers
    shapes = {}
    for service in ("orders-wsgi", "orders-asgi"):
        answer = requests.get(f"http://127.0.0.1:{ports[service]}/api/orders/7/", timeout=30)
        assert answer.status_code == 200, runner.logs()
        assert answer.json()["stock"] == {"sku-21": 42, "sku-22": 44}
        root, trace = _trace(sink, service, "/api/orders/7/")
        assert root["parent_span_id"] is None and root["attributes"]["http.response.status_code"] == 200
        assert root["attributes"]["http.route"] == "/api/orders/<int:pk>/"
        assert root["attributes"]["url.path"] == "/api/orders/7/" and "user_agent.original" not in root["attributes"]
        assert all(s["parent_span_id"] in {t["span_id"] for t in trace} for s in trace if s is not root)
        shapes[service] = _shape(root, trace)
    assert shapes["orders-asgi"] == shapes["orders-wsgi"]
    (first, *rest) = shapes["orders-asgi"]
    assert first == (0, "orders", SERVER, "GET /api/orders/<int:pk>/", "")
    assert len([row for row in rest if row[1] == "inventory" and row[2] == SERVER]) == 2
    assert [row[4] for row in rest if row[:3] == (1, "orders", CLIENT) and row[4].startswith("SELECT")] == [
        "SELECT set_config(%s, %s, false)", "SELECT sku, qty FROM order_lines WHERE order_id = %s ORDER BY sku"]


def test_async_view_with_async_psycopg_and_httpx_async_client(servers):
    sink, ports, runner = servers
    answer = requests.get(f"http://127.0.0.1:{ports['orders-asgi']}/api/orders/7/async/", timeout=30)
    assert answer.status_code == 200, runner.logs()
    root, trace = _trace(sink, "orders-asgi", "/api/orders/7/async/")
    assert root["name"] == "GET /api/orders/<int:pk>/async/"
    children = [s for s in trace if s["parent_span_id"] == root["span_id"]]
    (sql,) = [s for s in children if "db.query.text" in s["attributes"]]
    assert sql["attributes"]["db.query.text"] == "SELECT sku, qty FROM order_lines WHERE order_id = %s ORDER BY sku"
    calls = [s for s in children if "url.full" in s["attributes"]]
    assert len(calls) == 2 and all(s["attributes"]["http.response.status_code"] == 200 for s in calls)
    for call in calls:  # each concurrent call carried its own span as the parent
        (inventory,) = [s for s in trace if s["parent_span_id"] == call["span_id"]]
        assert inventory["service"] == "inventory" and inventory["kind"] == SERVER


def test_asgi_errors_and_status(servers):
    sink, ports, runner = servers
    failing = requests.get(f"http://127.0.0.1:{ports['orders-asgi']}/api/fail/", timeout=30)
    assert failing.status_code == 500
    spans = sink.wait_for_spans(lambda spans: any(s["service"] == "orders-asgi" and
                                                  s["attributes"].get("http.route") == "/api/fail/" for s in spans))
    (error,) = [s for s in spans if s["service"] == "orders-asgi" and s["attributes"].get("http.route") == "/api/fail/"]
    assert error["status"] == 2 and error["attributes"]["http.response.status_code"] == 500
    assert [e["attributes"]["exception.type"] for e in error["events"]] == ["RuntimeError"]
