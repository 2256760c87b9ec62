"""Outbound calls: sequential ones that could run in parallel, and own services called over public addresses."""

import pytest

from takealook.analyzers.traces import Settings, analyze
from takealook.analyzers.traces.public_calls import public_reason
from takealook.analyzers.traces.sequential import find_sequential
from takealook.analyzers.traces.trace import TraceView

from tests.analyzers.traces.builder import TraceBuilder


def _dashboard(orders_at: float, stock_at: float, users_at: float, offset_ms: float = 0.0) -> TraceBuilder:
    b = TraceBuilder(offset_ms)
    root = b.server("gateway", "GET", "/dashboard/<id>", 0, 150)
    b.call("gateway", "orders", "GET", "http://10.0.0.5:8000/api/orders/7", "/api/orders/<int:id>", orders_at, 40,
           root)
    b.call("gateway", "stock", "GET", "http://10.0.0.6:8000/stock/7", "/stock/<int:id>", stock_at, 30, root)
    b.call("gateway", "users", "GET", "http://users.internal/api/users/3", "/api/users/<int:id>", users_at, 20, root)
    return b


def test_back_to_back_calls_to_different_endpoints_are_flagged_with_their_saving():
    traces = [_dashboard(5, 50, 85, offset_ms=i * 30_000).spans for i in range(3)]
    (finding,) = [f for f in analyze(traces).findings if f.kind == "sequential_calls"]
    assert finding.calls == ("GET orders /api/orders/{id}", "GET stock /stock/{id}",
                             "GET users /api/users/{id}")
    assert finding.total_ms == 90.0
    assert finding.saving_ms == 50.0  # 40 + 30 + 20 - 40
    assert (finding.service, finding.endpoint, finding.occurrences) == ("gateway", "GET /dashboard/{id}", 3)
    assert finding.impact_ms_per_min == pytest.approx(50 * 3 / ((60_000 + 150) / 60_000), rel=1e-3)


def test_overlapping_calls_already_run_in_parallel():
    view = TraceView(_dashboard(5, 5, 5).spans)
    assert find_sequential(view) == []


def test_a_call_after_a_parallel_group_is_still_sequential_to_it():
    # orders 5-45 and stock 10-40 run together; users waits until 60: it could have joined them.
    (run,) = find_sequential(TraceView(_dashboard(5, 10, 60).spans))
    assert run.calls == ("GET stock /stock/{id}", "GET users /api/users/{id}")
    assert run.saving_ns == 20_000_000


def test_small_savings_and_repeats_of_one_endpoint_are_not_sequential_findings():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/x", 0, 100)
    b.call("gateway", "a", "GET", "http://a/one", "/one", 1, 3, root)
    b.call("gateway", "b", "GET", "http://b/two", "/two", 5, 3, root)
    assert [f for f in analyze([b.spans]).findings if f.kind == "sequential_calls"] == []  # saves 3 ms < 10
    assert [f.kind for f in analyze([b.spans], settings=Settings(sequential_min_saving_ms=2)).findings
            if f.kind == "sequential_calls"] == ["sequential_calls"]
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/x", 0, 100)
    for i in range(3):
        b.call("gateway", "a", "GET", f"http://a/items/{i}", "/items/<id>", 1 + 30 * i, 25, root)
    assert find_sequential(TraceView(b.spans)) == []


@pytest.mark.parametrize("host, scheme, reason", [
    ("orders-api.herokuapp.com", "https", "a public herokuapp.com URL"),
    ("34.201.10.7", "http", "a public IP address"),
    ("orders.example.com", "https", "TLS to a public host name"),
    ("10.0.0.5", "http", None),
    ("127.0.0.1", "http", None),
    ("::1", "http", None),
    ("orders", "http", None),
    ("orders.internal", "https", None),
    ("ip-10-0-1-5.ec2.internal", "http", None),
    ("orders.default.svc.cluster.local", "http", None),
])
def test_public_addresses(host, scheme, reason):
    assert public_reason(host, scheme) == reason


def _public_trace(host_url: str, with_server: bool, offset_ms: float = 0.0):
    b = TraceBuilder(offset_ms)
    root = b.server("gateway", "GET", "/checkout", 0, 300)
    if with_server:
        b.call("gateway", "orders", "POST", host_url, "/api/orders", 10, 120, root, server_ms=40)
    else:
        b.http("gateway", "POST", host_url, 10, 120, root)
    return b.spans


def test_own_service_called_by_its_herokuapp_url_is_flagged_with_its_overhead():
    traces = [_public_trace("https://orders-api.herokuapp.com/api/orders", True, offset_ms=i * 20_000)
              for i in range(4)]
    (finding,) = [f for f in analyze(traces).findings if f.kind == "public_address_call"]
    assert (finding.service, finding.callee_service, finding.host) == ("gateway", "orders",
                                                                       "orders-api.herokuapp.com")
    assert finding.reason == "a public herokuapp.com URL"
    assert finding.calls_per_request == 1.0
    assert finding.time_ms_per_request == 120.0
    assert finding.overhead_ms_per_request == 80.0  # 120 ms call, 40 ms of it in orders
    assert finding.occurrences == 4


def test_a_host_is_own_when_any_trace_reaches_its_server_span():
    # One trace shows orders answering at that host; in the others its spans are missing,
    # and the calls are still own-service calls over a public address.
    traces = [_public_trace("https://orders.example.com/api/orders", i == 0, offset_ms=i * 1000) for i in range(3)]
    (finding,) = [f for f in analyze(traces).findings if f.kind == "public_address_call"]
    assert finding.occurrences == 3 and finding.reason == "TLS to a public host name"


def test_third_party_apis_and_private_addresses_are_not_flagged():
    stripe = [_public_trace("https://api.stripe.com/v1/charges", False)]
    private = [_public_trace("http://10.0.0.5:8000/api/orders", True)]
    for traces in (stripe, private):
        assert [f for f in analyze(traces).findings if f.kind == "public_address_call"] == []


def test_a_call_instrumented_twice_counts_once_and_reaches_its_server_span():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/x", 0, 100)
    b.sql("gateway", "SELECT 1", 1, 1, root)
    outer = b.http("gateway", "GET", "http://10.0.0.5:8000/api/orders", 10, 60, root)  # requests
    inner = b.http("gateway", "GET", "http://10.0.0.5:8000/api/orders", 11, 58, outer)  # urllib3 under it
    orders = b.server("orders", "GET", "/api/orders", 12, 56, inner)
    b.sql("orders", "SELECT 2", 13, 1, orders)
    report = analyze([b.spans])
    assert report.endpoints[0].outbound_calls_per_request == 1.0
    assert [f.kind for f in report.findings] == []
    view = TraceView(b.spans)
    assert view.server_child(outer) is orders
