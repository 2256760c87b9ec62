"""Endpoints as users feel them: RED figures, per-request counts, sampled rates, browser roots, bad spans."""

import json
from dataclasses import replace

import pytest

from takealook.analyzers.traces import Settings, Window, analyze
from takealook.collector.model import MetricPoint

from tests.analyzers.traces.builder import BASE_NS, TraceBuilder


def _request(duration_ms: float, offset_ms: float, status: int = 200):
    b = TraceBuilder(offset_ms)
    root = b.server("gateway", "GET", "/orders/<int:id>", 0, duration_ms, status_code=status)
    b.sql("gateway", "SELECT 1", 0, 1, root)
    b.sql("gateway", "SELECT 2", 1, 1, root)
    orders = b.call("gateway", "orders", "GET", "http://orders/api", "/api", 2, duration_ms - 4, root)
    b.sql("orders", "SELECT 3", 3, 1, orders)
    return b.spans


def test_red_figures_and_per_request_counts_are_exact():
    traces = [_request(float(ms), offset_ms=i * 600, status=500 if i % 10 == 0 else 200)
              for i, ms in enumerate(range(10, 110))]  # 10..109 ms, one request every 0.6 s
    report = analyze(traces, window=Window(BASE_NS, BASE_NS + 60 * 10**9))
    (endpoint,) = report.endpoints
    assert (endpoint.service, endpoint.method, endpoint.route) == ("gateway", "GET", "/orders/{id}")
    assert endpoint.requests == 100 and endpoint.requests_per_min == 100.0
    assert endpoint.error_rate == 0.1
    assert (endpoint.p50_ms, endpoint.p95_ms, endpoint.p99_ms) == (59.5, 104.05, 108.01)
    assert (endpoint.services_per_request, endpoint.sql_per_request, endpoint.outbound_calls_per_request) == (
        2.0, 3.0, 1.0)
    services = {s.service: s for s in report.services}
    assert services["orders"].requests == 100 and services["orders"].sql_per_request == 1.0
    assert services["gateway"].error_rate == 0.1
    assert report.totals.traces == 100 and report.totals.spans == 600
    assert report.totals.services == ("gateway", "orders")


def _point(count: int, time_s: float, status: int = 200, temporality="delta", start_s: float = 0.0):
    return MetricPoint("gateway", "http.server.request.duration", "s", temporality, BASE_NS + int(start_s * 1e9),
                       BASE_NS + int(time_s * 1e9), "GET", "/orders/<int:id>", status, count, 0.0, (), (count,))


def test_sampled_traces_take_their_rate_and_error_rate_from_metric_points():
    traces = [_request(50, offset_ms=i * 6000) for i in range(10)]
    points = [_point(95, 30), _point(100, 60), _point(5, 60, status=503)]
    (endpoint,) = analyze(traces, points, window=Window(BASE_NS, BASE_NS + 60 * 10**9)).endpoints
    assert endpoint.rate_source == "metrics" and endpoint.requests_measured == 200
    assert endpoint.requests_per_min == 200.0 and endpoint.error_rate == 0.025
    assert endpoint.requests == 10 and endpoint.p50_ms == 50.0


def test_a_route_other_services_call_too_keeps_its_entry_rate_from_the_spans():
    # 10 users called gateway's /orders/<int:id> directly; 90 times another service called it. The metric
    # counts all 100 (it cannot tell callers apart): the entry endpoint is not 100 requests a minute.
    traces = [_request(50, offset_ms=i * 6000) for i in range(10)]
    for i in range(90):
        b = TraceBuilder(i * 600)
        root = b.server("shop", "GET", "/basket", 0, 40)
        b.call("shop", "gateway", "GET", f"http://gateway/orders/{i}", "/orders/<int:id>", 1, 30, root)
        traces.append(b.spans)
    points = [_point(100, 60)]
    endpoints = {e.endpoint: e for e in analyze(traces, points, window=Window(BASE_NS, BASE_NS + 60 * 10**9)).endpoints}
    assert endpoints["GET /orders/{id}"].rate_source == "spans"
    assert endpoints["GET /orders/{id}"].requests_per_min == 10.0
    # Sampled (a fifth of the spans kept), the metric scales each endpoint by its share of the route's spans.
    sampled = traces[:2] + traces[10:28]
    report = analyze(sampled, points, window=Window(BASE_NS, BASE_NS + 60 * 10**9))
    endpoints = {e.endpoint: e for e in report.endpoints}
    assert endpoints["GET /orders/{id}"].rate_source == "metrics"
    assert endpoints["GET /orders/{id}"].requests_measured == 10


def test_cumulative_points_count_their_increase_inside_the_window():
    traces = [_request(50, offset_ms=60_000 + i * 6000) for i in range(10)]
    # A series started long before the window: 1000 requests then, 1300 at the window's end.
    points = [_point(1000, 60, temporality="cumulative"), _point(1300, 120, temporality="cumulative")]
    (endpoint,) = analyze(traces, points, window=Window(BASE_NS + 60 * 10**9, BASE_NS + 120 * 10**9)).endpoints
    assert endpoint.requests_measured == 300 and endpoint.requests_per_min == 300.0


def test_a_browser_document_load_is_an_entry_endpoint():
    b = TraceBuilder()
    page = b.span("frontend", "documentLoad", 0, 900, None, "internal", url_full="https://shop.example/orders/42",
                  resource_json=json.dumps({"telemetry.sdk.language": "webjs"}))
    fetch = b.span("frontend", "HTTP GET", 300, 500, page, "client", http_method="GET",
                   url_full="https://api.shop.example/api/orders/42")
    b.server("gateway", "GET", "/api/orders/<int:id>", 310, 480, fetch)
    (endpoint,) = analyze([b.spans]).endpoints
    assert (endpoint.service, endpoint.method, endpoint.route, endpoint.source) == (
        "frontend", "GET", "/orders/{id}", "browser")
    assert endpoint.p50_ms == 900.0


def test_a_browser_fetch_root_is_named_by_the_route_it_reached():
    b = TraceBuilder()
    fetch = b.span("frontend", "HTTP POST", 0, 200, None, "client", http_method="POST",
                   url_full="https://api.shop.example/api/carts/9/items",
                   resource_json=json.dumps({"telemetry.sdk.language": "webjs"}))
    b.server("gateway", "POST", "/api/carts/<int:id>/items", 10, 180, fetch)
    (endpoint,) = analyze([b.spans]).endpoints
    assert (endpoint.endpoint, endpoint.source) == ("POST /api/carts/{id}/items", "browser")


def test_routes_missing_from_server_spans_are_templated_from_the_path():
    b = TraceBuilder()
    b.span("legacy", "GET", 0, 10, None, "server", http_method="GET", url_path="/orders/123/items/9f8e7d6c5b4a")
    (endpoint,) = analyze([b.spans]).endpoints
    assert endpoint.route == "/orders/{id}/items/{hex}"


def test_unusable_spans_are_skipped_and_counted_never_fatal():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/a", 0, 100)
    b.sql("gateway", "SELECT 1", 1, 2, root)
    spans = list(b.spans)
    spans.append(replace(spans[1], span_id="00000000000000f1", start_ns=5))  # 1970
    spans.append(replace(spans[1], span_id="00000000000000f2", duration_ns=-1))
    spans.append(replace(spans[1], span_id="00000000000000f3", start_ns=None))
    spans.append(replace(spans[1], span_id=""))
    spans.append(replace(spans[1], span_id="00000000000000f4", service=""))
    spans.append(spans[1])  # a duplicate
    lonely = TraceBuilder()
    lonely = [replace(lonely.span("gateway", "x", 0, 1), start_ns=2**62)]  # year 2116
    report = analyze([spans, lonely])
    assert report.totals.spans == 2 and report.totals.skipped_spans == 7
    assert report.totals.skipped_reasons == {
        "start time before 2000 or after 2100": 2, "negative duration or longer than a week": 1,
        "missing start time or duration": 1, "missing span or trace id": 1, "missing service name": 1,
        "duplicate span id": 1,
    }
    assert [e.endpoint for e in report.endpoints] == ["GET /a"]


def test_traces_without_an_entry_span_are_counted_but_not_endpoints():
    b = TraceBuilder()
    job = b.span("worker", "send_invoices", 0, 500, None, "internal")
    b.sql("worker", "SELECT * FROM invoices", 1, 10, job)
    report = analyze([b.spans])
    assert report.endpoints == () and report.totals.traces_without_entry == 1
    assert report.statements[0].calls == 1


@pytest.mark.parametrize("bad", [dict(n_plus_one_min_count=1), dict(n_plus_one_min_ms=-1),
                                 dict(repeated_http_min_count=0)])
def test_bad_thresholds_are_usage_errors(bad):
    from takealook.analyzers.traces import Settings
    from takealook.errors import UsageError

    with pytest.raises(UsageError):
        Settings(**bad)


WAGTAIL = r"/((?:[\w\-]+/)*)$"  # Wagtail's page route, as the Django agent records it


def _page(path: str, offset_ms: float, status: int = 200, route: str = WAGTAIL):
    b = TraceBuilder(offset_ms)
    b.server("cms", "GET", route, 0, 10, url_path=path, status_code=status)
    return b.spans


def test_pages_of_a_catch_all_route_are_endpoints_of_their_own():
    traces = [_page("/blog/", i * 100) for i in range(6)] + [_page("/locations/", 1000 + i * 100) for i in range(3)]
    traces.append(_page("/", 2000))
    endpoints = {e.endpoint: e for e in analyze(traces).endpoints}
    assert set(endpoints) == {"GET /blog/", "GET /locations/", "GET /"}
    blog = endpoints["GET /blog/"]
    assert (blog.requests, blog.route_template, blog.by_path, blog.other_paths) == (6, "/{path}", True, 0)


def test_past_the_cap_the_quietest_pages_are_one_row_named_by_the_route():
    traces = [_page("/blog/", i * 100) for i in range(5)] + [_page("/about/", 600 + i * 100) for i in range(3)]
    traces += [_page(f"/page-{name}/", 2000 + i * 100) for i, name in enumerate("abcdef")]
    report = analyze(traces, settings=Settings(paths_per_route=2))
    endpoints = {e.endpoint: e for e in report.endpoints}
    assert set(endpoints) == {"GET /blog/", "GET /about/", "GET /{path}"}
    other = endpoints["GET /{path}"]
    assert (other.requests, other.other_paths, other.by_path) == (6, 6, False)
    assert sum(e.requests for e in report.endpoints) == len(traces)
    assert {s.endpoint for s in report.slowest} == set(endpoints)


def test_client_errors_are_shown_beside_server_errors():
    traces = [_page("/api/me/", i * 100, status=401, route="/api/me/") for i in range(6)]
    traces += [_page("/api/me/", 1000 + i * 100, route="/api/me/") for i in range(3)]
    traces.append(_page("/api/me/", 2000, status=503, route="/api/me/"))
    (endpoint,) = analyze(traces).endpoints
    assert (endpoint.error_rate, endpoint.client_error_rate) == (0.1, 0.6)
    (service,) = analyze(traces).services
    assert (service.error_rate, service.client_error_rate) == (0.1, 0.6)


def test_endpoint_filter_takes_pages_routes_and_framework_spellings():
    from takealook.analyzers.traces.source import endpoint_matcher

    traces = [_page("/blog/", 0), _page("/locations/", 100), _page("/orders/7", 200, route="/orders/<int:id>")]
    for wanted, expected in (("/blog/", {"GET /blog/"}), ("GET /blog/", {"GET /blog/"}),
                             ("cms GET /blog/", {"GET /blog/"}), ("GET /{path}", {"GET /blog/", "GET /locations/"}),
                             ("GET /orders/<int:id>", {"GET /orders/{id}"}), ("/orders/{id}", {"GET /orders/{id}"})):
        report = analyze(traces, entry_filter=endpoint_matcher(wanted))
        assert {e.endpoint for e in report.endpoints} == expected, wanted
