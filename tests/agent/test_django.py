"""Django as its own project template makes it: settings set after the agent starts, or configure()."""

from __future__ import annotations

import pytest
import requests

from tests.agent.conftest import APPS, bin_path, free_port

SERVER, CLIENT = 2, 3


@pytest.mark.parametrize("driver, reload", [("psycopg2", False), ("psycopg", True)])
def test_manage_py_runserver_under_takealook_run(apps, app_dbs, sink, driver, reload):
    port = free_port()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "ORDERS_DSN": app_dbs["orders"],
           "INVENTORY_URL": "http://127.0.0.1:9"}
    if driver == "psycopg2":
        env["ORDERS_FORCE_PSYCOPG2"] = "1"
    argv = [bin_path("takealook-run"), "--service", "orders", bin_path("python"), "manage.py", "runserver",
            f"127.0.0.1:{port}"] + ([] if reload else ["--noreload"])
    apps.start(argv, env=env, cwd=APPS / "orders_site", port=port, timeout=40)
    answer = requests.get(f"http://127.0.0.1:{port}/api/orders/100/", timeout=20)  # no lines: no inventory call
    assert answer.status_code == 200, apps.logs()
    assert answer.json()["driver"] == driver
    spans = sink.wait_for_spans(lambda spans: any("order_lines" in s["attributes"].get("db.query.text", "")
                                                  for s in spans))
    (server,) = [s for s in spans if s["kind"] == SERVER]
    assert server["name"] == "GET /api/orders/<int:pk>/" and server["service"] == "orders"
    (sql,) = [s for s in spans if "order_lines" in s["attributes"].get("db.query.text", "")]
    assert sql["parent_span_id"] == server["span_id"] and sql["trace_id"] == server["trace_id"]

    failing = requests.get(f"http://127.0.0.1:{port}/api/fail/", timeout=20)
    assert failing.status_code == 500
    spans = sink.wait_for_spans(lambda spans: any(s["attributes"].get("http.route") == "/api/fail/" for s in spans))
    (error,) = [s for s in spans if s["attributes"].get("http.route") == "/api/fail/"]
    assert error["status"] == 2 and error["attributes"]["http.response.status_code"] == 500
    (event,) = error["events"]
    assert event["attributes"]["exception.type"] == "RuntimeError"
    assert event["attributes"]["exception.message"] == "orders exploded"


def test_settings_configure_in_code(apps, sink):
    port = free_port()
    apps.start([bin_path("takealook-run"), "--service", "hello", bin_path("python"), "django_configure.py",
                str(port)], env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}, port=port)
    answer = requests.get(f"http://127.0.0.1:{port}/hello/ann/", timeout=20)
    assert answer.status_code == 200 and answer.json() == {"hello": "ann"}, apps.logs()
    spans = sink.wait_for_spans(lambda spans: len(spans) >= 1)
    assert spans[0]["name"] == "GET /hello/<str:name>/"
