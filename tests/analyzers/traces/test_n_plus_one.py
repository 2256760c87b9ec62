"""N+1 statements and repeated calls: counted exactly, fan-out told apart, thresholds honoured."""

from takealook.analyzers.traces import Settings, analyze
from takealook.analyzers.traces.n_plus_one import find_repeats
from takealook.analyzers.traces.trace import TraceView

from tests.analyzers.traces.builder import TraceBuilder

ITEMS = "SELECT * FROM items WHERE order_id = {}"


def _orders_trace(count: int, each_ms: float, parallel: bool = False, offset_ms: float = 0.0):
    b = TraceBuilder(offset_ms)
    root = b.server("orders", "GET", "/orders/", 0, 200)
    b.sql("orders", "SELECT * FROM orders LIMIT 20", 1, 2, root)
    for i in range(count):
        start = 5 if parallel else 5 + i * each_ms
        b.sql("orders", ITEMS.format(i + 1), start, each_ms, root)  # literal ids: one fingerprint
    return b


def _kinds(report):
    return [f.kind for f in report.findings if f.kind in ("n_plus_one", "repeated_http")]


def test_sequential_run_of_one_fingerprint_is_an_n_plus_one_with_exact_figures():
    traces = [_orders_trace(8, 10, offset_ms=i * 15_000).spans for i in range(4)]
    report = analyze(traces)
    (finding,) = [f for f in report.findings if f.kind == "n_plus_one"]
    assert (finding.service, finding.endpoint, finding.operation) == ("orders", "GET /orders/", "GET /orders/")
    assert finding.count == 8 and finding.count_max == 8
    assert finding.total_ms == 80.0
    assert finding.occurrences == 4 and finding.affected_share == 1.0
    assert finding.share_of_latency == 0.4  # 80 of 200 ms
    assert finding.statement == ITEMS.format(1)
    # Avoidable: 80 - 10 ms per request; 4 requests over 45.2 s of traffic.
    minutes = (45_000 + 200) / 60_000
    assert abs(finding.impact_ms_per_min - 70 * 4 / minutes) < 0.1  # the rate is rounded to 3 decimals
    assert len(finding.trace_ids) == 4


def test_reported_once_per_endpoint_however_many_traces():
    traces = [_orders_trace(6, 10, offset_ms=i * 1000).spans for i in range(30)]
    findings = [f for f in analyze(traces).findings if f.kind == "n_plus_one"]
    assert len(findings) == 1 and findings[0].occurrences == 30
    assert len(findings[0].trace_ids) == Settings().evidence_traces


def test_parallel_fan_out_is_not_flagged():
    view = TraceView(_orders_trace(8, 10, parallel=True).spans)
    assert find_repeats(view, Settings()) == []


def test_below_the_count_or_the_time_threshold_is_not_flagged():
    assert find_repeats(TraceView(_orders_trace(4, 20).spans), Settings()) == []  # 4 < 5
    assert find_repeats(TraceView(_orders_trace(8, 6).spans), Settings()) == []  # 48 ms < 50
    (repeat,) = find_repeats(TraceView(_orders_trace(8, 6).spans), Settings(n_plus_one_min_ms=40))
    assert (repeat.count, repeat.total_ns) == (8, 48_000_000)
    assert find_repeats(TraceView(_orders_trace(4, 20).spans), Settings(n_plus_one_min_count=3))


def test_runs_under_different_parents_are_separate():
    b = TraceBuilder()
    root = b.server("orders", "GET", "/orders/", 0, 200)
    first = b.span("orders", "serialize page 1", 0, 90, root)
    second = b.span("orders", "serialize page 2", 100, 90, root)
    for i in range(3):
        b.sql("orders", ITEMS.format(i), 1 + i * 20, 20, first)
        b.sql("orders", ITEMS.format(i), 101 + i * 20, 20, second)
    assert find_repeats(TraceView(b.spans), Settings()) == []  # 3 + 3, never 5 under one parent


def test_identical_http_calls_are_repeated_calls():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/cart", 0, 100)
    for i in range(3):
        b.call("gateway", "users", "GET", "http://users:8000/api/me", "/api/me", 10 + i * 20, 15, root)
    (repeat,) = [f for f in analyze([b.spans]).findings if f.kind == "repeated_http"]
    assert repeat.identical
    assert (repeat.count, repeat.total_ms, repeat.call) == (3, 45.0, "GET http://users:8000/api/me")


def test_calls_to_one_route_with_different_ids_are_an_n_plus_one_over_http():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/cart", 0, 200)
    for i in range(6):
        b.call("gateway", "stock", "GET", f"http://stock:8000/stock/{i}", "/stock/<int:id>", 10 + i * 20, 15, root)
    findings = [f for f in analyze([b.spans]).findings if f.kind == "repeated_http"]
    assert len(findings) == 1
    assert not findings[0].identical
    assert (findings[0].count, findings[0].call) == (6, "GET stock /stock/<int:id>")


def test_statements_that_do_not_parse_are_grouped_by_text():
    b = TraceBuilder()
    root = b.server("orders", "GET", "/odd", 0, 200)
    for i in range(5):
        b.span("orders", "query", 1 + i * 12, 11, root, "client", db_system="postgresql", db_statement="CALL odd(")
    (finding,) = analyze([b.spans]).findings
    assert finding.kind == "n_plus_one" and finding.count == 5 and finding.fingerprint == ""


def test_calls_whose_urls_the_agent_redacted_are_not_claimed_identical():
    """/users/alice and /users/bob both arrive as /users/REDACTED: the same route, not the same call."""
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/team", 0, 200)
    for i in range(6):
        b.call("gateway", "users", "GET", "http://users:8000/users/REDACTED?q=REDACTED", "/users/<name>",
               10 + i * 20, 15, root)
    findings = [f for f in analyze([b.spans]).findings if f.kind == "repeated_http"]
    assert [(f.identical, f.count, f.call) for f in findings] == [(False, 6, "GET users /users/<name>")]
