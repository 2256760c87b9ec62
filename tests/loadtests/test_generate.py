"""``load generate`` from a store filled with crafted OTLP traces (through the collector's own
conversion and write API), then the suite runs under ``load run`` and plain ``locust``."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from takealook.loadtests.generate import collect
from takealook.loadtests.runs import load_run
from tests.conftest import script
from tests.loadtests.server import DelayServer

NOW_NS = 1_800_000_000_000_000_000 - 3600 * 10**9
SECRET = "s3cr3t-token-value"


def _attr(key, value):
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


def _span(trace, span, parent, name, kind, start, ms, attrs):
    return {"traceId": trace, "spanId": span, "parentSpanId": parent or "", "name": name, "kind": kind,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + int(ms * 1e6)),
            "attributes": [_attr(k, v) for k, v in attrs.items()], "status": {}}


KINDS = ["orders"] * 60 + ["cart"] * 30 + ["items"] * 10
random.Random(5).shuffle(KINDS)


def crafted_traces(now_ns):
    """100 traces: 60 GET /orders/<int:id> (id 999 slow), 30 POST /cart, 10 GET /items/<uuid> (no route).

    Each gateway request calls the orders service (Django route), which must not become an entry.
    """
    rng = random.Random(5)
    gateway, orders = [], []
    for i, kind in enumerate(KINDS):
        trace, root, client, inner = f"{i + 1:032x}", f"{i + 1:016x}", f"{i + 1001:016x}", f"{i + 2001:016x}"
        start = now_ns + i * 10**8
        slow = kind == "orders" and i % 10 == 0
        attrs = {"http.request.method": "GET", "http.response.status_code": 200,
                 "http.request.header.accept": "application/json",
                 "http.request.header.authorization": "Bearer " + SECRET}
        if kind == "orders":
            oid = 999 if slow else rng.randint(1, 50)
            attrs.update({"http.route": "/orders/<int:id>", "url.path": f"/orders/{oid}",
                          "url.query": f"page=2&token={SECRET}"})
        elif kind == "cart":
            attrs.update({"http.request.method": "POST", "http.route": "/cart", "url.path": "/cart"})
        else:
            attrs.update({"url.path": f"/items/{rng.getrandbits(128):032x}"[:7] + "3f2a9c1e-1b2c-4d5e-8f90-1234567890ab"})
        gateway.append(_span(trace, root, None, "gateway request", 2, start, 300 if slow else 12, attrs))
        gateway.append(_span(trace, client, root, "GET", 3, start + 10**6, 5,
                             {"http.request.method": "GET", "url.full": "http://orders/api/orders/7/"}))
        orders.append(_span(trace, inner, client, "orders request", 2, start + 2 * 10**6, 3,
                            {"http.request.method": "GET", "http.route": "api/orders/<int:pk>/",
                             "url.path": "/api/orders/7/", "http.response.status_code": 200}))
    resource = lambda name: {"attributes": [_attr("service.name", name)]}  # noqa: E731
    return {"resourceSpans": [
        {"resource": resource("gateway"), "scopeSpans": [{"scope": {"name": "t"}, "spans": gateway}]},
        {"resource": resource("orders"), "scopeSpans": [{"scope": {"name": "t"}, "spans": orders}]}]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from takealook.collector.convert import Converter
    from takealook.collector.otlp_json import parse_traces
    from takealook.collector.store import SpanStore

    path = tmp_path_factory.mktemp("store") / "spans.db"
    import time

    request = parse_traces(json.dumps(crafted_traces(time.time_ns() - 3600 * 10**9)))
    converted = Converter().traces(request.SerializeToString())
    assert converted.rejected == 0, converted.problems
    writer = SpanStore(path)
    writer.write([converted.batch])
    writer.close()
    return path


def test_pages_of_a_catch_all_route_are_tasks_up_to_the_cap_and_the_rest_one_task():
    from takealook.collector.model import Span
    from takealook.routes import PATHS_PER_ROUTE

    def page(number: int, path: str) -> list:
        return [Span(f"{number:032x}", f"{number:016x}", None, "cms", "GET", "server", 10**18 + number, 10**6,
                     "unset", http_method="GET", http_route="/((?:[\\w\\-]+/)*)$", http_status=200, url_path=path)]

    paths = ["/blog/"] * 5 + ["/locations/"] * 3 + [f"/page-{chr(97 + i % 26)}{i // 26}/" for i in range(30)]
    endpoints, _ = collect([page(i, path) for i, path in enumerate(paths)])
    templates = {e.template: e for e in endpoints}
    assert templates["/blog/"].requests == 5 and templates["/blog/"].values == (("/blog/", 5.0),)
    assert templates["/locations/"].requests == 3
    assert len(endpoints) == PATHS_PER_ROUTE + 1
    rest = templates["/{path}"]  # the pages past the cap, named as traces report names their row
    assert rest.requests == len(paths) - sum(e.requests for e in endpoints if e is not rest)
    assert all(value.startswith("/page-") for value, _ in rest.values)


def test_generate_writes_entries_weights_values_and_no_secrets(store, tmp_path):
    suite = tmp_path / "suite.py"
    out = subprocess.run([script("takealook"), "load", "generate", "--store", store, "-o", suite,
                          "--slow-weight", "50", "--values", "5", "--host", "http://127.0.0.1:1", "--include-writes"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = suite.read_text()
    compile(text, str(suite), "exec")
    assert SECRET not in text and "authorization" not in text.lower()
    assert "name='/orders/{id}'" in text and "name='/cart'" in text and "name='/items/{uuid}'" in text
    assert "@task(60)" in text and "@task(30)" in text and "@task(10)" in text
    assert "/api/orders" not in text  # the call between services is not an entry
    # The slow request's value, its requests counted 50x: the heaviest of the endpoint's values.
    slow = sum(1 for i, kind in enumerate(KINDS) if kind == "orders" and i % 10 == 0)
    assert f"('/orders/999?page=2', {50 * slow})," in text
    assert text.index("/orders/999?page=2") < min(text.index(f"'/orders/{n}?page=2'") for n in range(1, 51)
                                                  if f"'/orders/{n}?page=2'" in text)
    assert "'accept': 'application/json'" in text
    assert "request bodies" in text  # the POST says the traces had no body
    # Not overwriting a suite someone may have edited.
    again = subprocess.run([script("takealook"), "load", "generate", "--store", store, "-o", suite],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr


def test_generated_suite_runs_and_hits_routes_in_proportion(store, tmp_path):
    suite = tmp_path / "suite.py"
    subprocess.run([script("takealook"), "load", "generate", "--store", store, "-o", suite, "--include-writes"],
                   check=True, capture_output=True)
    runs = tmp_path / "runs"
    with DelayServer() as server:
        out = subprocess.run([script("takealook"), "load", "run", suite, "--host", server.url, "--label", "gen",
                              "--runs-dir", runs, "--rate", "150/s", "--duration", "3s", "--drain", "1s"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        # Plain Locust runs the same file (closed model, the suite's own wait_time).
        plain = subprocess.run([sys.executable, "-m", "locust", "-f", suite, "--headless", "-u", "3", "-r", "3",
                                "-t", "2s", "--host", server.url], capture_output=True, text=True, timeout=60,
                               cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
        assert plain.returncode == 0, plain.stderr[-2000:]
        logged = list(server.log)
    run = load_run("gen", runs)
    shares = Counter(s.name for s in run.measured())
    total = sum(shares.values())
    assert total >= 400
    assert abs(shares["/orders/{id}"] / total - 0.6) < 0.08
    assert abs(shares["/cart"] / total - 0.3) < 0.08
    assert abs(shares["/items/{uuid}"] / total - 0.1) < 0.06
    paths = Counter(path.split("/")[1] for _, path, _ in logged)
    assert set(paths) == {"orders", "cart", "items"}
    assert all(method == "POST" for method, path, _ in logged if path == "/cart")


def test_collect_over_plain_spans_and_service_filter():
    from takealook.collector.model import Span

    def span(trace, sid, parent, service, kind, route, path, ms=10.0):
        return Span(trace, sid, parent, service, "x", kind, 0, int(ms * 1e6), "unset", http_method="GET",
                    http_route=route, url_path=path)

    traces = [[span("a" * 32, "1" * 16, None, "web", "server", "/p/<id>", "/p/1"),
               span("a" * 32, "2" * 16, "1" * 16, "api", "server", "/q", "/q")],
              [span("b" * 32, "3" * 16, "f" * 16, "api", "server", "/q", "/q")]]  # parent outside the store
    endpoints, count = collect(traces)
    assert count == 2
    assert {(e.service, e.template, e.requests) for e in endpoints} == {("web", "/p/{id}", 1), ("api", "/q", 1)}
    only_web, _ = collect(traces, services=("web",))
    assert [e.template for e in only_web] == ["/p/{id}"]


def test_paths_the_agent_redacted_are_not_replayed():
    """A username the agent recorded as REDACTED is no value to send: such paths are not sampled, and an
    endpoint with no other path is left out rather than replayed with the placeholder."""
    from takealook.collector.model import Span

    def span(sid, route, path):
        return Span(sid * 32, sid * 16, None, "web", "x", "server", 0, 10_000_000, "unset", http_method="GET",
                    http_route=route, url_path=path)

    traces = [[span("1", "/users/<name>", "/users/REDACTED")], [span("2", "/users/<name>", "/users/REDACTED")],
              [span("3", "/products/<sku>", "/products/SKU-1")], [span("4", "/products/<sku>", "/products/REDACTED")],
              [span("5", None, "/REDACTED/REDACTED")]]
    endpoints, _ = collect(traces)
    assert [(e.template, e.values) for e in endpoints] == [("/products/{sku}", (("/products/SKU-1", 1),))]


def _spans_of_paths(paths_ms):
    """Entry spans of GET /p/<int:id>, one trace each: [(path, duration_ms)]."""
    import time

    from takealook.collector.model import Span

    an_hour_ago = time.time_ns() - 3600 * 10**9
    return [[Span(f"{n + 1:032x}", f"{n + 1:016x}", None, "web", "GET /p/<int:id>", "server", an_hour_ago + n * 10**6,
                  int(ms * 1e6),
                  "unset", http_method="GET", http_route="/p/<int:id>", url_path=path)]
            for n, (path, ms) in enumerate(paths_ms)]


def test_values_are_drawn_as_often_as_real_traffic_used_them(tmp_path):
    """99 real requests used /p/1 and one hand-made request /p/2: /p/2 must not get half the load."""
    from tests.analyzers.traces.builder import write_store

    store = tmp_path / "spans.db"
    write_store(store, _spans_of_paths([("/p/1", 10.0)] * 99 + [("/p/2", 10.0)]))
    suite = tmp_path / "suite.py"
    out = subprocess.run([script("takealook"), "load", "generate", "--store", store, "-o", suite],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "    ('/p/1', 99),\n    ('/p/2', 1),\n" in suite.read_text()
    with DelayServer() as server:
        run = subprocess.run([script("takealook"), "load", "run", suite, "--host", server.url, "--label", "mix",
                              "--runs-dir", tmp_path / "runs", "--rate", "100/s", "--duration", "3s", "--drain", "1s"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        paths = Counter(path for _, path, _ in server.log)
    assert sum(paths.values()) >= 100  # ~300 on an idle machine
    # 1% expected (8% is 1 in 10^5 by chance with 100 requests); drawn uniformly it would be 50%.
    assert paths["/p/2"] < 0.08 * sum(paths.values())


def test_slow_weight_works_on_top_of_the_traffic_weights():
    fast_and_slow = [("/p/1", 10.0)] * 90 + [("/p/2", 300.0)] * 5 + [("/p/3", 10.0)] * 5
    (endpoint,), _ = collect(_spans_of_paths(fast_and_slow), slow_weight=4)
    assert endpoint.values == (("/p/1", 90), ("/p/2", 20), ("/p/3", 5))
    (capped,), _ = collect(_spans_of_paths(fast_and_slow), values=2)
    assert [v for v, _ in capped.values] == ["/p/1", "/p/2"] or [v for v, _ in capped.values] == ["/p/1", "/p/3"]
