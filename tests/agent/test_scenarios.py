"""The agent in small real programs: each runs as its own process and exports to a real receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.agent.conftest import ROOT, bin_path, free_port

SERVER, CLIENT = 2, 3


def run_script(tmp_path: Path, code: str, env: dict, argv_prefix: list | None = None, timeout: float = 60):
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(code))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TAKEALOOK_"))}
    full_env.update({"PYTHONPATH": str(ROOT)}, **env)
    argv = (argv_prefix or []) + [sys.executable, str(script)]
    result = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_connections_opened_before_start_are_traced(tmp_path, sink, app_dbs):
    run_script(tmp_path, f"""
        import psycopg, psycopg2
        early2 = psycopg2.connect({app_dbs["gateway"]!r})
        early3 = psycopg.connect({app_dbs["gateway"]!r})
        import takealook.agent
        assert takealook.agent.start(service_name="early")
        from opentelemetry import trace
        tracer = trace.get_tracer("scenario")
        with tracer.start_as_current_span("job"):
            with early2.cursor() as cur:
                cur.execute("SELECT name FROM customers WHERE id = %s", (1,))
            early3.execute("SELECT id FROM customers WHERE name = %s", ("x",))
        early2.cursor().execute("SELECT 1")  # outside any span: no span
        takealook.agent.shutdown()
    """, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint})
    spans = sink.wait_for_spans(lambda spans: len(spans) >= 3)
    statements = sorted(s["attributes"]["db.query.text"] for s in spans if s["kind"] == CLIENT)
    assert statements == ["SELECT id FROM customers WHERE name = %s", "SELECT name FROM customers WHERE id = %s"]
    (job,) = [s for s in spans if s["name"] == "job"]
    assert all(s["parent_span_id"] == job["span_id"] for s in spans if s["kind"] == CLIENT)


def test_psycopg2_cursor_factories_and_composed_sql(tmp_path, sink, app_dbs):
    run_script(tmp_path, f"""
        import takealook.agent
        takealook.agent.start(service_name="factories")
        import psycopg2, psycopg2.extras
        from psycopg2 import sql
        from opentelemetry import trace
        conn = psycopg2.connect({app_dbs["gateway"]!r}, cursor_factory=psycopg2.extras.RealDictCursor)
        psycopg2.extras.register_default_jsonb(conn)  # needs a genuine connection (contrib issue 1774)
        with trace.get_tracer("s").start_as_current_span("job"):
            cur = conn.cursor()
            cur.execute("SELECT id FROM customers WHERE id = %s", (3,))
            assert cur.fetchone() == {{"id": 3}}
            cur = conn.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor)
            cur.execute(sql.SQL("SELECT {{}} FROM customers WHERE id = {{}}").format(sql.Identifier("name"), sql.Literal(4)))
            assert cur.fetchone().name == "customer 4"
            cur.executemany("SELECT %s", [(1,), (2,)])
            try:
                cur.execute("SELECT * FROM no_such_table WHERE x = %s", (1,))
            except psycopg2.errors.UndefinedTable:
                pass
            else:
                raise SystemExit("the driver's error must reach the app unchanged")
        takealook.agent.shutdown()
    """, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint})
    spans = sink.wait_for_spans(lambda spans: len(spans) >= 5)
    texts = {s["attributes"]["db.query.text"]: s for s in spans if s["kind"] == CLIENT}
    assert set(texts) == {"SELECT id FROM customers WHERE id = %s", 'SELECT "name" FROM customers WHERE id = %s',
                          "SELECT %s", "SELECT * FROM no_such_table WHERE x = %s"}
    assert texts["SELECT %s"]["attributes"]["db.operation.batch.size"] == 2
    failed = texts["SELECT * FROM no_such_table WHERE x = %s"]
    assert failed["status"] == 2 and failed["attributes"]["error.type"] == "UndefinedTable"


def test_logs_headers_and_sqlcommenter(tmp_path, sink, app_dbs):
    result = run_script(tmp_path, f"""
        import logging, sys, io
        import takealook.agent
        takealook.agent.start(service_name="web")
        from flask import Flask
        import psycopg
        app = Flask(__name__)
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(otelTraceID)s %(message)s")
        @app.route("/hi")
        def hi():
            logging.getLogger("app").info("inside")
            print("META", takealook.agent.traceparent())
            with psycopg.connect({app_dbs["gateway"]!r}) as conn:
                conn.execute("SELECT 1 WHERE 2 = %s", (2,))
                text = conn.execute("SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()[0]
            return text
        client = app.test_client()
        response = client.get("/hi", headers={{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}})
        print("BODY", response.get_data(as_text=True))
        print("HEADERS", response.headers.get("traceresponse"), response.headers.get("Server-Timing"))
        response.close()  # as a WSGI server does: the span ends when the response is closed
        logging.getLogger("app").info("outside")
        takealook.agent.shutdown()
    """, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "TAKEALOOK_RESPONSE_HEADERS": "true",
          "TAKEALOOK_SQLCOMMENTER": "true"})
    lines = result.stdout.splitlines()
    assert "0af7651916cd43dd8448eb211c80319c inside" in lines
    assert "0 outside" in lines
    spans = sink.wait_for_spans(lambda spans: any(s["kind"] == SERVER for s in spans))
    (server,) = [s for s in spans if s["kind"] == SERVER]
    assert server["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert server["parent_span_id"] == "b7ad6b7169203331"
    header = f"00-0af7651916cd43dd8448eb211c80319c-{server['span_id']}-01"
    assert f"HEADERS {header} traceparent;desc=\"{header}\"" in lines
    assert f"META 00-0af7651916cd43dd8448eb211c80319c-{server['span_id']}-01" in lines
    body = next(line for line in lines if line.startswith("BODY"))
    assert "/*traceparent='00-0af7651916cd43dd8448eb211c80319c-" in body
    recorded = [s["attributes"]["db.query.text"] for s in spans if "db.query.text" in s["attributes"]]
    assert all("traceparent" not in text for text in recorded)


def test_flask_exception_becomes_error_span(tmp_path, sink):
    run_script(tmp_path, """
        import takealook.agent
        takealook.agent.start(service_name="web")
        from flask import Flask
        app = Flask(__name__)
        @app.route("/orders/<int:n>")
        def boom(n):
            raise KeyError("missing order")
        with app.test_client().get("/orders/3") as response:
            assert response.status_code == 500
        takealook.agent.shutdown()
    """, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint})
    (span,) = sink.wait_for_spans(lambda spans: len(spans) == 1)
    assert span["name"] == "GET /orders/<int:n>" and span["status"] == 2
    assert span["attributes"]["error.type"] == "KeyError"
    # A KeyError's key is a value more often than not: quoted text is recorded as '?' (docs/agent.md).
    event = span["events"][0]["attributes"]
    assert event["exception.message"] == "'?'" and span["status_message"] == "KeyError: '?'"
    assert event["exception.stacktrace"].endswith("KeyError: '?'\n") and "in boom" in event["exception.stacktrace"]


def test_platform_resources_heroku_and_ecs(tmp_path, sink):
    task = {"Cluster": "prod", "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/prod/abc", "Family": "web",
            "Revision": "7", "LaunchType": "FARGATE", "AvailabilityZone": "eu-west-1a"}
    container = {"DockerId": "d0c", "Name": "web", "ContainerARN": "arn:aws:ecs:eu-west-1:123456789012:container/x"}

    class Metadata(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = json.dumps(task if self.path.endswith("/task") else container).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = """
        import takealook.agent
        takealook.agent.start()
        from opentelemetry import trace
        trace.get_tracer("s").start_span("job").end()
        takealook.agent.shutdown()
    """
    try:
        run_script(tmp_path, code, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_SERVICE_NAME": "ecs-app",
                                    "ECS_CONTAINER_METADATA_URI_V4": f"http://127.0.0.1:{server.server_port}/v4/x"})
    finally:
        server.shutdown()
    run_script(tmp_path, code, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "DYNO": "web.1",
                                "HEROKU_APP_NAME": "shop-api", "HEROKU_RELEASE_VERSION": "v42",
                                "HEROKU_SLUG_COMMIT": "abc123", "OTEL_SERVICE_NAME": "heroku-app"})
    unreachable = f"http://127.0.0.1:{free_port()}/v4/x"
    run_script(tmp_path, code, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_SERVICE_NAME": "ecs-down",
                                "ECS_CONTAINER_METADATA_URI_V4": unreachable})
    spans = sink.wait_for_spans(lambda spans: len(spans) == 3)
    resources = {s["service"]: s["resource"] for s in spans}
    ecs = resources["ecs-app"]
    assert ecs["cloud.platform"] == "aws_ecs" and ecs["aws.ecs.task.arn"] == task["TaskARN"]
    assert ecs["aws.ecs.cluster.arn"] == "arn:aws:ecs:eu-west-1:123456789012:cluster/prod"
    assert ecs["cloud.region"] == "eu-west-1" and ecs["container.id"] == "d0c"
    heroku = resources["heroku-app"]
    assert heroku["cloud.provider"] == "heroku" and heroku["heroku.dyno"] == "web.1"
    assert heroku["service.version"] == "v42" and heroku["heroku.release.commit"] == "abc123"
    assert resources["ecs-down"]["cloud.platform"] == "aws_ecs" and "aws.ecs.task.arn" not in resources["ecs-down"]


@pytest.mark.parametrize("uwsgi", [True, False], ids=["under-uwsgi", "elsewhere"])
def test_fork_without_hooks_is_recovered(tmp_path, sink, uwsgi):
    """uWSGI forks workers in C, so Python's at-fork hooks do not run: the agent notices by itself, at the
    child's first trace under uWSGI (its ``uwsgi`` module is there), elsewhere at the child's first message
    (no getpid at every request where forks go through os.fork): there, the spans the child ended before
    that message are lost with the parent's copies it holds, and what follows has ids of its own."""
    result = run_script(tmp_path, f"""
        import ctypes, os, sys, time, types
        if {uwsgi!r}:
            sys.modules["uwsgi"] = types.ModuleType("uwsgi")  # what uWSGI's embedded interpreter has
        import takealook.agent
        takealook.agent.start(service_name="cfork")
        from opentelemetry import trace
        tracer = trace.get_tracer("s")
        tracer.start_span("in-parent").end()
        pid = ctypes.CDLL(None).fork()  # a fork that bypasses os.register_at_fork, as uWSGI's does
        if pid == 0:
            if not {uwsgi!r}:
                tracer.start_span("early").end()
                takealook.agent.current().pipeline.flush()  # the first message: the fork is found
            tracer.start_span("in-child").end()
            takealook.agent.shutdown()
            os._exit(0)
        os.waitpid(pid, 0)
        takealook.agent.shutdown()
    """, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint})
    spans = sink.wait_for_spans(lambda spans: {s["name"] for s in spans} == {"in-parent", "in-child"})
    by_name = {s["name"]: s for s in spans}
    assert by_name["in-child"]["resource"]["process.pid"] != by_name["in-parent"]["resource"]["process.pid"]
    assert by_name["in-child"]["trace_id"] != by_name["in-parent"]["trace_id"]
    assert len(spans) == 2
    assert result.stderr.count("forked without Python's at-fork hooks") == 1


def test_takealook_run_bad_input():
    out = subprocess.run([bin_path("takealook-run")], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr and "give the command" in out.stderr
    out = subprocess.run([bin_path("takealook-run"), "no-such-command-xyz"], capture_output=True, text=True)
    assert out.returncode == 127 and "command not found: no-such-command-xyz" in out.stderr
    out = subprocess.run([bin_path("takealook-run"), "--service", "x", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "takealook-run" in out.stdout


def test_sdk_disabled_runs_untraced(tmp_path, sink):
    run_script(tmp_path, """
        import takealook.agent
        assert takealook.agent.start() is False
    """, {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint})


def _capture_headers():
    """A server on 127.0.0.1 that answers every GET (503 under /down) and keeps its headers: (their list,
    server, URL)."""
    seen: list[dict] = []

    class Capture(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(503 if self.path.startswith("/down") else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return seen, server, f"http://127.0.0.1:{server.server_port}"


def test_trace_context_and_baggage_in_and_out(tmp_path, sink):
    """A request's traceparent and baggage reach the services it calls, through every client library."""
    seen, server, url = _capture_headers()
    try:
        run_script(tmp_path, f"""
            import takealook.agent
            takealook.agent.start(service_name="web")
            import urllib.request
            import httpx, requests
            from flask import Flask
            app = Flask(__name__)
            @app.route("/go")
            def go():
                requests.get("{url}/requests", headers={{"X-Caller": "kept"}})
                httpx.get("{url}/httpx")
                urllib.request.urlopen("{url}/urllib").read()
                return "done"
            headers = {{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                       "tracestate": "vendor=1", "baggage": "tenant=acme,plan=gold"}}
            with app.test_client().get("/go", headers=headers) as response:
                assert response.status_code == 200
            takealook.agent.shutdown()
        """, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint})
    finally:
        server.shutdown()
    assert len(seen) == 3
    spans = sink.wait_for_spans(lambda spans: len([s for s in spans if s["kind"] == CLIENT]) == 3)
    clients = {s["span_id"]: s for s in spans if s["kind"] == CLIENT}
    for headers in seen:
        version, trace_id, parent, flags = headers["traceparent"].split("-")
        assert trace_id == "0af7651916cd43dd8448eb211c80319c" and parent in clients and flags == "01"
        assert headers["tracestate"] == "vendor=1"
        assert sorted(headers["baggage"].replace(" ", "").split(",")) == ["plan=gold", "tenant=acme"]
    assert seen[0]["x-caller"] == "kept"


def test_a_load_test_mark_reaches_every_span_outbound_calls_and_metrics(tmp_path, sink):
    """tracestate takealook=load:<label> rides on every span of the request, on its outbound calls, and
    puts the request's duration in a metric series of its own."""
    seen, server, url = _capture_headers()
    try:
        run_script(tmp_path, f"""
            import sqlite3
            import takealook.agent
            takealook.agent.start(service_name="web")
            import requests
            from flask import Flask
            app = Flask(__name__)
            @app.route("/go")
            def go():
                requests.get("{url}/next")
                return "done"
            marked = {{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                      "tracestate": "takealook=load:run-7,vendor=1"}}
            for headers in (marked, {{}}):
                with app.test_client().get("/go", headers=headers) as response:  # closing it ends the span
                    assert response.status_code == 200
            takealook.agent.shutdown()
        """, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint})
    finally:
        server.shutdown()
    marked = [s for s in sink.wait_for_spans(lambda spans: len(spans) >= 4)
              if s["trace_id"] == "0af7651916cd43dd8448eb211c80319c"]
    assert len(marked) == 2 and {s["trace_state"] for s in marked} == {"takealook=load:run-7,vendor=1"}
    assert [h.get("tracestate") for h in seen] == ["takealook=load:run-7,vendor=1", None]
    from tests.conftest import wait_for

    wait_for(lambda: sum(p["count"] for p in sink.points) == 2, 15, message="two requests in the metrics")
    by_load = {p["attributes"].get("takealook.load"): p["count"] for p in sink.points
               if p["name"] == "http.server.request.duration"}
    assert by_load == {"run-7": 1, None: 1}


def test_requests_not_sampled_still_count_in_the_duration_histogram(tmp_path, sink):
    """With a sampler that keeps no trace, every request still counts in http.server.request.duration, by
    its route and status (what gives rates and error ratios when traces are sampled), under WSGI (Flask)
    and ASGI alike, a load test's request in its own series; and with no span to send, the metrics still
    go on their interval, not only at exit."""
    run_script(tmp_path, """
        import asyncio, time
        import takealook.agent
        takealook.agent.start(service_name="web")
        from flask import Flask
        app = Flask(__name__)
        @app.route("/orders/<int:order_id>")
        def order(order_id):
            if order_id == 13:
                raise RuntimeError("unlucky")
            return "ok"
        client = app.test_client()
        for path, headers in (("/orders/1", {}), ("/orders/2", {}), ("/orders/13", {}),
                              ("/orders/3", {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                                             "tracestate": "takealook=load:run-9"})):
            with client.get(path, headers=headers):
                pass

        async def raw(scope, receive, send):
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        async def call_asgi():
            async def receive():
                return {"type": "http.request", "body": b""}
            async def send(message):
                pass
            scope = {"type": "http", "method": "GET", "path": "/ping", "scheme": "http", "headers": []}
            await takealook.agent.asgi_app(raw)(scope, receive, send)

        asyncio.run(call_asgi())
        time.sleep(2.5)  # the metric interval (1 s) passes: they go while the app runs
        import os
        os._exit(0)  # no exit handlers: what reaches the sink went on the interval
    """, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_TRACES_SAMPLER": "always_off",
          "OTEL_METRIC_EXPORT_INTERVAL": "1000"})
    from tests.conftest import wait_for

    def series():
        counts = {}
        for p in sink.points:
            if p["name"] == "http.server.request.duration":
                a = p["attributes"]
                key = (a.get("http.route"), a["http.response.status_code"], a.get("takealook.load"))
                counts[key] = counts.get(key, 0) + p["count"]
        return counts

    expected = {("/orders/<int:order_id>", 200, None): 2, ("/orders/<int:order_id>", 500, None): 1,
                ("/orders/<int:order_id>", 200, "run-9"): 1, (None, 204, None): 1}
    wait_for(lambda: series() == expected, 15, message=f"every request counted: {series()}")
    assert sink.spans == []


def test_outgoing_calls_that_fail_or_answer_an_error_are_spans_with_their_error(tmp_path, sink):
    """Through requests: a call answered 503 is a CLIENT span in error (its status code, error.type 503)
    whose id is the one its traceparent carried; a call that raises (nothing listens) is a span with the
    exception's type and event, and the app's own handling goes on; URLs go through the URL rules."""
    import socket

    seen, server, url = _capture_headers()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    try:
        run_script(tmp_path, f"""
            import takealook.agent
            takealook.agent.start(service_name="web")
            import requests
            from flask import Flask
            app = Flask(__name__)
            @app.route("/go")
            def go():
                answer = requests.get("{url}/down/alice?token=s3cr3t&page=2")
                try:
                    requests.get("http://127.0.0.1:{dead_port}/orders/7", timeout=2)
                except requests.ConnectionError:
                    pass
                return str(answer.status_code)
            with app.test_client().get("/go") as response:
                assert response.data == b"503"
            takealook.agent.shutdown()
        """, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint})
    finally:
        server.shutdown()
    clients = sorted(sink.wait_for_spans(lambda spans: len([s for s in spans if s["kind"] == CLIENT]) == 2),
                     key=lambda s: s["start"])
    clients = [s for s in clients if s["kind"] == CLIENT]
    answered, raised = clients
    assert answered["status"] == 2 and answered["attributes"]["http.response.status_code"] == 503
    assert answered["attributes"]["error.type"] == "503"
    assert answered["attributes"]["url.full"] == f"{url}/REDACTED/REDACTED?token=REDACTED&page=2"
    assert seen[0]["traceparent"].split("-")[2] == answered["span_id"]
    assert raised["status"] == 2 and raised["attributes"]["error.type"] == "MaxRetryError"  # urllib3 under requests
    assert raised["attributes"]["url.full"] == f"http://127.0.0.1:{dead_port}/REDACTED/7"
    assert [event["name"] for event in raised["events"]] == ["exception"]
    assert "http.response.status_code" not in raised["attributes"]
