"""One user request across three real apps (Flask -> Django -> Flask) is one trace, down to SQL."""

from __future__ import annotations

import json

import requests

from tests.agent.conftest import APPS, bin_path, free_port

SERVER, CLIENT = 2, 3


def _start_three(apps, app_dbs, sink):
    pa, pb, pc = free_port(), free_port(), free_port()
    common = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}
    apps.start([bin_path("python"), "inventory.py", str(pc)], port=pc,
               env={**common, "OTEL_SERVICE_NAME": "inventory", "INVENTORY_DSN": app_dbs["inventory"]})
    apps.start([bin_path("gunicorn"), "-b", f"127.0.0.1:{pb}", "-w", "1", "orders_site.wsgi"], port=pb,
               cwd=APPS / "orders_site",
               env={**common, "OTEL_SERVICE_NAME": "orders", "ORDERS_DSN": app_dbs["orders"],
                    "INVENTORY_URL": f"http://127.0.0.1:{pc}"})
    apps.start([bin_path("takealook-run"), "--service", "gateway", bin_path("gunicorn"), "-w", "2",
                "-b", f"127.0.0.1:{pa}", "gateway:app"], port=pa,
               env={**common, "GATEWAY_DSN": app_dbs["gateway"], "ORDERS_URL": f"http://127.0.0.1:{pb}"})
    return pa


def test_one_trace_across_three_apps(apps, app_dbs, sink):
    pa = _start_three(apps, app_dbs, sink)
    response = requests.get(f"http://127.0.0.1:{pa}/orders/7", timeout=30)
    assert response.status_code == 200, apps.logs()
    assert response.json()["order"]["lines"] == [["sku-21", 21], ["sku-22", 22], ["sku-23", 23]]

    def complete(spans):
        roots = [s for s in spans if s["service"] == "gateway" and s["kind"] == SERVER]
        if not roots:
            return False
        trace = [s for s in spans if s["trace_id"] == roots[0]["trace_id"]]
        # Each app exports on its own: the orders server span may arrive after the inventory's spans, and a
        # server span after its own children (it ends once its response is sent): wait for a whole trace.
        ids = {s["span_id"] for s in trace}
        if any(s["parent_span_id"] is not None and s["parent_span_id"] not in ids for s in trace):
            return False
        return len([s for s in trace if s["service"] == "inventory" and s["kind"] == SERVER]) == 2 \
            and len([s for s in trace if s["service"] == "inventory" and "db.query.text" in s["attributes"]]) == 4 \
            and any(s["service"] == "orders" and s["kind"] == SERVER for s in trace)

    try:
        spans = sink.wait_for_spans(complete)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{apps.logs()}") from None
    (root,) = [s for s in spans if s["service"] == "gateway" and s["kind"] == SERVER]
    trace = [s for s in spans if s["trace_id"] == root["trace_id"]]
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}, "one request, one trace"
    by_id = {s["span_id"]: s for s in trace}

    def children(span, service=None, kind=None):
        return [s for s in trace if s["parent_span_id"] == span["span_id"]
                and (service is None or s["service"] == service) and (kind is None or s["kind"] == kind)]

    assert root["parent_span_id"] is None
    assert root["name"] == "GET /orders/<int:order_id>"
    assert root["attributes"]["http.route"] == "/orders/<int:order_id>"
    assert root["attributes"]["http.response.status_code"] == 200
    (gw_sql,) = [s for s in children(root, "gateway", CLIENT) if "db.query.text" in s["attributes"]]
    assert gw_sql["attributes"]["db.query.text"] == "SELECT id, name FROM customers WHERE id = %s"
    assert gw_sql["attributes"]["db.system"] == "postgresql"
    (gw_call,) = [s for s in children(root, "gateway", CLIENT) if "url.full" in s["attributes"]]
    # An outgoing path keeps ids, the words of the caller's own routes (the gateway serves /orders/...)
    # and API words (api); the callee's server span has the route that names it.
    assert gw_call["attributes"]["url.full"].endswith("/api/orders/7/")

    (orders_server,) = children(gw_call, "orders", SERVER)
    assert orders_server["attributes"]["http.route"] == "/api/orders/<int:pk>/"
    assert orders_server["attributes"]["url.path"] == "/api/orders/7/"
    orders_sql = [s for s in children(orders_server, "orders", CLIENT) if "db.query.text" in s["attributes"]]
    # Django's first query on a new connection sets the time zone: its value is scrubbed too.
    assert [s["attributes"]["db.query.text"] for s in orders_sql] == [
        "SELECT set_config(%s, %s, false)", "SELECT sku, qty FROM order_lines WHERE order_id = %s ORDER BY sku"]
    calls = [s for s in children(orders_server, "orders", CLIENT) if "url.full" in s["attributes"]]
    assert len(calls) == 2
    for call in calls:
        (inventory_server,) = children(call, "inventory", SERVER)
        assert inventory_server["attributes"]["http.route"] == "/stock/<sku>"
        statements = sorted(s["attributes"]["db.query.text"] for s in children(inventory_server, "inventory", CLIENT)
                            if "db.query.text" in s["attributes"])
        assert statements == ["SELECT count(*) FROM stock WHERE note = %s OR qty > %s",
                              "SELECT qty FROM stock WHERE sku = %s"]
    assert all(s["parent_span_id"] is None or s["parent_span_id"] in by_id for s in trace)

    # No value, secret or header leaks into any attribute.
    text = json.dumps([s["attributes"] for s in trace] + [s["resource"] for s in trace])
    for secret in ("s3cret", "secret-literal-123", "987654", "'sku-21'"):
        assert secret not in text

    # RED metrics from every app.
    sink_points = lambda: {p["service"] for p in sink.points if p["name"] == "http.server.request.duration"}  # noqa: E731
    from tests.conftest import wait_for

    wait_for(lambda: sink_points() == {"gateway", "orders", "inventory"}, 15, message="metrics from all apps")
    gateway_points = [p for p in sink.points if p["service"] == "gateway"]
    assert gateway_points[0]["attributes"]["http.route"] == "/orders/<int:order_id>"
    assert sum(p["count"] for p in gateway_points) == 1
