"""OpenTelemetry's contrib instrumentations join the agent's traces: a Flask app on Redis under takealook-run.

The Redis spans come from the installed ``opentelemetry-instrumentation-redis``; the agent loads it
with its own tracer provider, so they are children of the request's span and leave through the
same export helper. A private redis-server runs on a free loopback port.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import redis
import requests

from tests.agent.conftest import APPS, bin_path, free_port
from tests.agent.otlp_sink import OtlpSink
from tests.conftest import wait_for_port
from tests.processes import Processes

SERVER, CLIENT = 2, 3
TOKEN = "tok-5e55ion-8472"  # a session token: a value that must never be recorded
REDIS_SCOPE = "opentelemetry.instrumentation.redis"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 20, proc)
        url = f"redis://127.0.0.1:{port}/0"
        redis.Redis.from_url(url).set(f"session:{TOKEN}", "ann")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, app_dbs, redis_url):
    """Two catalog apps under takealook-run: one with every instrumentation (and a broken contrib one
    installed), one with Redis's disabled by name. They share one OTLP sink."""
    with OtlpSink() as sink:
        runner = Processes(tmp_path_factory.mktemp("catalog"), cwd=APPS)
        ports = {"catalog": free_port(), "catalog-noredis": free_port()}
        try:
            for service, port in ports.items():
                env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "CATALOG_DSN": app_dbs["gateway"],
                       "CATALOG_REDIS_URL": redis_url,
                       "PYTHONPATH": f"{APPS.parent.parent.parent}:{APPS / 'contrib_dist'}"}
                if service == "catalog-noredis":
                    env["TAKEALOOK_DISABLED_INSTRUMENTATIONS"] = "redis"
                runner.start([bin_path("takealook-run"), "--service", service, bin_path("gunicorn"), "-w", "1",
                              "-b", f"127.0.0.1:{port}", "catalog:app"], env=env, port=port)
            yield sink, ports, runner
        finally:
            runner.stop()


def _trace_of(sink, service, route_id):
    def found(spans):
        roots = [s for s in spans if s["service"] == service and s["kind"] == SERVER
                 and s["attributes"].get("url.path") == f"/customers/{route_id}"]
        return roots and [s for s in spans if s["trace_id"] == roots[0]["trace_id"]]

    spans = sink.wait_for_spans(found)
    root = [s for s in spans if s["service"] == service and s["kind"] == SERVER
            and s["attributes"].get("url.path") == f"/customers/{route_id}"][0]
    return root, [s for s in spans if s["trace_id"] == root["trace_id"]]


def test_redis_spans_are_in_the_request_trace(catalog):
    sink, ports, runner = catalog
    answer = requests.get(f"http://127.0.0.1:{ports['catalog']}/customers/7",
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
    assert answer.status_code == 200, runner.logs()
    assert answer.json() == {"customer": {"id": 7, "name": "customer 7"}, "user": "ann"}
    root, trace = _trace_of(sink, "catalog", 7)
    assert root["name"] == "GET /customers/<int:customer_id>" and root["parent_span_id"] is None

    # Ours win where both exist: the installed contrib Flask, psycopg2 and requests packages add no span.
    assert {s["scope"] for s in trace} == {"takealook.agent", REDIS_SCOPE}
    redis_spans = [s for s in trace if s["scope"] == REDIS_SCOPE]
    # session GET, the INCR+EXPIRE pipeline (one span), cache GET (a miss), cache SET
    assert sorted(s["name"] for s in redis_spans) == ["GET", "GET", "INCRBY EXPIRE", "SET"]
    assert all(s["kind"] == CLIENT and s["parent_span_id"] == root["span_id"] for s in redis_spans)
    assert all(s["attributes"]["db.system"] == "redis" for s in redis_spans)
    statements = sorted(s["attributes"].get("db.statement") or s["attributes"].get("db.query.text")
                        for s in redis_spans)
    assert statements == ["GET ?", "GET ?", "INCRBY ? ?\nEXPIRE ? ?", "SET ? ? ? ?"]
    (sql,) = [s for s in trace if "db.query.text" in s["attributes"] and s["attributes"].get("db.system") ==
              "postgresql"]
    assert sql["parent_span_id"] == root["span_id"]
    assert sql["attributes"]["db.query.text"] == "SELECT id, name FROM customers WHERE id = %s"
    assert {s["service"] for s in trace} == {"catalog"} and len({s["resource"]["service.instance.id"]
                                                                   for s in trace}) == 1

    text = json.dumps([s["attributes"] for s in trace])
    for value in (TOKEN, "customer 7", "session:", "rate:ann"):
        assert value not in text, value

    # The broken contrib instrumentor installed beside: one warning per app, and the apps served regardless.
    warnings = [line for line in runner.logs().splitlines() if "broken instrumentation failed" in line]
    assert len(warnings) == len(ports) and all("built for another version" in w for w in warnings), runner.logs()


def test_a_contrib_instrumentation_disabled_by_name_makes_no_span(catalog):
    sink, ports, runner = catalog
    answer = requests.get(f"http://127.0.0.1:{ports['catalog-noredis']}/customers/8",
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
    assert answer.status_code == 200, runner.logs()
    root, trace = _trace_of(sink, "catalog-noredis", 8)
    assert [s for s in trace if s["scope"] == REDIS_SCOPE] == []
    assert [s["attributes"]["db.query.text"] for s in trace if "db.query.text" in s["attributes"]] == [
        "SELECT id, name FROM customers WHERE id = %s"]
    assert root["attributes"]["http.response.status_code"] == 200
