"""N+1 statements and repeated calls: judged per pattern across requests, loops fused, fan-out told apart."""

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


def _n_plus_one(report):
    return [f for f in report.findings if f.kind == "n_plus_one"]


def test_sequential_run_of_one_fingerprint_is_an_n_plus_one_with_exact_figures():
    traces = [_orders_trace(8, 10, offset_ms=i * 15_000).spans for i in range(4)]
    report = analyze(traces)
    (finding,) = [f for f in report.findings if f.kind == "n_plus_one"]
    assert (finding.service, finding.endpoint, finding.operation) == ("orders", "GET /orders/", "GET /orders/")
    assert finding.count == 8 and finding.count_max == 8 and finding.count_p95 == 8 and finding.iterations == 8
    assert finding.total_ms == 80.0 and finding.total_ms_p95 == 80.0
    assert finding.occurrences == 4 and finding.affected_share == 1.0
    assert finding.share_of_latency == 0.4  # 80 of 200 ms
    assert finding.statement == ITEMS.format(1) and finding.statements == (ITEMS.format(1),)
    # Avoidable: 80 - 10 ms per request; 4 requests over 45.2 s of traffic.
    minutes = (45_000 + 200) / 60_000
    assert abs(finding.impact_ms_per_min - 70 * 4 / minutes) < 0.1  # the rate is rounded to 3 decimals
    assert finding.severity == "medium"  # 372 ms of users' time a minute (high from a second)
    assert len(finding.trace_ids) == 4


def test_reported_once_per_endpoint_however_many_traces():
    traces = [_orders_trace(6, 10, offset_ms=i * 1000).spans for i in range(30)]
    findings = [f for f in analyze(traces).findings if f.kind == "n_plus_one"]
    assert len(findings) == 1 and findings[0].occurrences == 30
    assert len(findings[0].trace_ids) == Settings().evidence_traces


def test_parallel_fan_out_is_not_flagged():
    view = TraceView(_orders_trace(8, 10, parallel=True).spans)
    assert find_repeats(view, Settings()) == []


def test_a_run_is_judged_on_the_pattern_not_on_one_request():
    assert find_repeats(TraceView(_orders_trace(4, 20).spans), Settings()) == []  # 4 < 5: not a run
    (repeat,) = find_repeats(TraceView(_orders_trace(8, 6).spans), Settings())  # a run, whatever its time
    assert (repeat.count, repeat.total_ns) == (8, 48_000_000)
    assert _n_plus_one(analyze([_orders_trace(8, 6).spans])) == []  # 48 ms < 50, 8 < 10, one request
    assert _n_plus_one(analyze([_orders_trace(8, 6).spans], settings=Settings(n_plus_one_min_ms=40)))
    assert _n_plus_one(analyze([_orders_trace(4, 20).spans], settings=Settings(n_plus_one_min_count=3)))


def test_occurrences_are_every_request_with_the_run_and_figures_are_medians_over_them():
    # 31 requests, each with 12 statements; the run takes 30..60 ms: 11 requests are past 50 ms, the
    # median is 45. Judged request by request, 11 occurrences at a mean of the slow ones; here all 31.
    traces = []
    for i in range(31):
        b = TraceBuilder(i * 2000)
        root = b.server("blog", "GET", "/blog/", 0, 120)
        for k in range(12):
            b.sql("blog", ITEMS.format(k), 1 + k * 5, (30 + i) / 12, root)
        traces.append(b.spans)
    (finding,) = _n_plus_one(analyze(traces))
    assert finding.occurrences == 31 and finding.affected_share == 1.0
    assert (finding.count, finding.count_p95) == (12, 12)
    assert finding.total_ms == 45.0 and finding.total_ms_p95 == 58.5
    assert finding.severity == "high"  # 31 requests a minute, ~40 ms avoidable each: over a second a minute


def test_a_lazy_load_of_15_statements_at_25_ms_is_found_at_a_fitting_severity():
    traces = []
    for i in range(20):
        b = TraceBuilder(i * 3000)
        root = b.server("blog", "GET", "/", 0, 60)
        b.sql("blog", "SELECT * FROM posts ORDER BY created DESC LIMIT 15", 1, 2, root)
        for k in range(15):
            b.sql("blog", "SELECT * FROM users WHERE users.id = %s", 4 + k * 2, 25 / 15, root)
        traces.append(b.spans)
    (finding,) = _n_plus_one(analyze(traces))
    assert (finding.count, finding.occurrences, finding.total_ms) == (15, 20, 25.0)
    assert finding.severity == "medium"  # 20 requests a minute, 23 ms avoidable each: 460 ms a minute


def test_a_short_cheap_run_counts_when_the_traffic_makes_it_costly():
    def traces(requests: int, spacing_ms: float) -> list:
        out = []
        for i in range(requests):
            b = TraceBuilder(i * spacing_ms)
            root = b.server("shop", "GET", "/cart", 0, 100)
            for k in range(7):
                b.sql("shop", ITEMS.format(k), 1 + k * 4, 3, root)  # 7 x 3 ms: 21 ms, 18 ms avoidable
            out.append(b.spans)
        return out

    # 100 requests in a minute: 1,800 ms of users' time per minute.
    (finding,) = _n_plus_one(analyze(traces(100, 600)))
    assert finding.impact_ms_per_min >= 1000 and finding.severity == "high"
    assert _n_plus_one(analyze(traces(20, 3000))) == []  # 20 a minute: 360 ms/min
    assert _n_plus_one(analyze(traces(5, 10))) == []  # too few requests to sum anything over


def test_statements_repeated_together_in_one_loop_are_one_finding():
    b = TraceBuilder()
    root = b.server("api", "GET", "/api/users", 0, 400)
    loop = ("SELECT count(*) FROM posts WHERE user_id = %s", "SELECT count(*) FROM comments WHERE user_id = %s",
            "SELECT count(*) FROM likes WHERE user_id = %s")
    for user in range(50):
        for k, statement in enumerate(loop):
            b.sql("api", statement, 2 + user * 6 + k * 2, 1.5, root)
    (finding,) = _n_plus_one(analyze([b.spans]))
    assert finding.statements == loop and finding.statement == loop[0]
    assert (finding.count, finding.iterations) == (150, 50)
    assert finding.total_ms == 225.0


def test_two_loops_one_after_the_other_stay_two_findings():
    b = TraceBuilder()
    root = b.server("api", "GET", "/api/users", 0, 400)
    for k in range(6):
        b.sql("api", "SELECT * FROM posts WHERE user_id = %s", 1 + k * 10, 10, root)
    for k in range(6):
        b.sql("api", "SELECT * FROM likes WHERE user_id = %s", 100 + k * 10, 10, root)
    assert len(_n_plus_one(analyze([b.spans]))) == 2


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
    assert (findings[0].count, findings[0].call) == (6, "GET stock /stock/{id}")


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
    assert [(f.identical, f.count, f.call) for f in findings] == [(False, 6, "GET users /users/{name}")]
