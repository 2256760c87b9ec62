"""Instrumentation health and errors: orphans, clock skew, broken traces, services without DB spans."""

from dataclasses import replace

from takealook.analyzers.traces import Settings, analyze

from tests.analyzers.traces.builder import TraceBuilder, exception_events


def _by_kind(report, kind):
    return [f for f in report.findings if f.kind == kind]


def test_clock_skew_between_services_is_detected_with_its_size():
    traces = []
    for i, skew in enumerate((30, 10, 0.5)):
        b = TraceBuilder(offset_ms=i * 1000)
        root = b.server("gateway", "GET", "/a", 0, 100)
        client = b.http("gateway", "GET", "http://stock:8000/s", 10, 80, root)
        server = b.server("stock", "GET", "/s", 10 - skew, 79, client)
        b.sql("stock", "SELECT 1", 12, 2, server)
        traces.append(b.spans)
    (skew,) = _by_kind(analyze(traces), "clock_skew")
    assert (skew.parent_service, skew.service, skew.spans) == ("gateway", "stock", 2)  # 0.5 ms is within tolerance
    assert skew.max_skew_ms == 30.0 and skew.mean_skew_ms == 20.0
    assert skew.impact_ms_per_min == 0.0
    assert _by_kind(analyze(traces, settings=Settings(clock_skew_tolerance_ms=50)), "clock_skew") == []


def test_orphans_are_counted_as_entry_or_inner():
    b = TraceBuilder()
    # The browser propagated traceparent but exported nothing: the gateway's root has a parent we never see.
    root = b.server("gateway", "GET", "/page", 0, 100, parent_span_id="00000000000000aa")
    b.sql("gateway", "SELECT 1", 1, 2, root)
    # A span whose parent was dropped by a full export queue.
    b.sql("gateway", "SELECT 2", 50, 2, None, parent_span_id="00000000000000bb")
    report = analyze([b.spans])
    (orphans,) = _by_kind(report, "orphan_span")
    assert (orphans.service, orphans.spans, orphans.entry, orphans.inner) == ("gateway", 2, 1, 1)
    # The orphan root still is the trace's entry endpoint.
    assert [e.endpoint for e in report.endpoints] == ["GET /page"]


def test_a_call_without_a_server_span_is_a_broken_trace_unless_it_is_a_third_party():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/a", 0, 100)
    b.sql("gateway", "SELECT 1", 1, 2, root)
    b.http("gateway", "GET", "http://10.0.0.9:8000/api/stock", 10, 20, root)  # private: one of ours
    b.http("gateway", "GET", "https://api.stripe.com/v1/charges", 40, 20, root)  # third party
    b.http("gateway", "GET", "http://10.0.0.10/down", 70, 1, root, status="error", status_code=None)  # refused
    (broken,) = _by_kind(analyze([b.spans]), "broken_trace")
    assert (broken.service, broken.host, broken.calls, broken.callee_service) == ("gateway", "10.0.0.9", 1, None)


def test_services_with_server_spans_but_no_db_spans():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/a", 0, 100)
    orders = b.call("gateway", "orders", "GET", "http://orders/x", "/x", 10, 50, root)
    b.sql("orders", "SELECT 1", 20, 5, orders)
    (missing,) = _by_kind(analyze([b.spans]), "missing_db_spans")
    assert (missing.service, missing.server_spans) == ("gateway", 1)


def test_errors_name_the_exception_where_it_was_raised():
    traces = []
    for i in range(4):
        b = TraceBuilder(offset_ms=i * 1000)
        failing = i < 3
        root = b.server("gateway", "GET", "/checkout", 0, 100, status_code=502 if failing else 200)
        orders = b.call("gateway", "orders", "POST", "http://orders/api/orders", "/api/orders", 10, 50, root)
        if failing:
            b.sql("orders", "INSERT INTO orders VALUES (%s)", 20, 5, orders, status="error",
                  events_json=exception_events("psycopg2.errors.UniqueViolation",
                                               'duplicate key value violates unique constraint "orders_pkey"\nDETAIL'))
        traces.append(b.spans)
    report = analyze(traces)
    (error,) = _by_kind(report, "error")
    assert (error.service, error.endpoint, error.exception_type) == ("orders", "GET /checkout",
                                                                    "psycopg2.errors.UniqueViolation")
    assert error.message == 'duplicate key value violates unique constraint "orders_pkey"'
    assert (error.count, error.share_of_requests) == (3, 0.75)
    assert report.endpoints[0].error_rate == 0.75


def test_a_failure_without_exception_events_is_named_by_its_innermost_failing_span():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/a", 0, 100, status_code=500)
    b.call("gateway", "orders", "GET", "http://orders/x", "/x", 10, 50, root)
    b.spans[-1] = replace(b.spans[-1], status="error", http_status=503, status_message="overloaded")
    (error,) = _by_kind(analyze([b.spans]), "error")
    assert (error.service, error.exception_type, error.message) == ("orders", "HTTP 503", "overloaded")
