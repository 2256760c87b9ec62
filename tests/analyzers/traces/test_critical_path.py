"""Critical path: exact times per service and category on synthetic traces."""

from takealook.analyzers.traces import analyze
from takealook.analyzers.traces.critical_path import critical_path
from takealook.analyzers.traces.trace import TraceView

from tests.analyzers.traces.builder import TraceBuilder


def _ms(path: dict) -> dict:
    return {key: round(value / 1e6, 3) for key, value in path.items()}


def test_gaps_are_the_parents_own_time_and_calls_split_into_network_and_callee():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/dashboard", 0, 100)
    orders = b.call("gateway", "orders", "GET", "http://orders:8000/api/orders", "/api/orders", 10, 50, root)
    b.sql("orders", "SELECT * FROM orders WHERE id = %s", 20, 30, orders)
    path = _ms(critical_path(TraceView(b.spans)))
    # gateway: 0-10 and 60-100; client span's own: 10-10.5 and 59.5-60; orders: 10.5-20 and 50-59.5
    assert path == {("gateway", "code"): 50.0, ("gateway", "http"): 1.0, ("orders", "code"): 19.0,
                    ("orders", "sql"): 30.0}
    assert sum(path.values()) == 100.0


def test_parallel_children_only_the_last_finishing_one_is_on_the_path():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/fanout", 0, 100)
    # Three queries in parallel from 10 ms: 10-40, 10-70, 10-50. Only the 10-70 one waits the user.
    for end in (40, 70, 50):
        b.sql("gateway", f"SELECT {end}", 10, end - 10, root)
    path = _ms(critical_path(TraceView(b.spans)))
    assert path == {("gateway", "code"): 40.0, ("gateway", "sql"): 60.0}


def test_children_are_clipped_to_their_parent_and_to_the_next_chosen_child():
    b = TraceBuilder()
    root = b.server("api", "GET", "/x", 0, 100)
    # A child that outlives its parent (async work after the answer) counts only inside the parent.
    b.span("api", "background", 80, 200, root)
    # Two children overlapping: 20-60 and 50-70. Walking back: 50-70 chosen, then 20-60 clipped to 20-50.
    b.sql("api", "SELECT a", 20, 40, root)
    b.sql("api", "SELECT b", 50, 20, root)
    path = _ms(critical_path(TraceView(b.spans)))
    assert path == {("api", "code"): 20.0 + 10.0 + 20.0, ("api", "sql"): 50.0}
    assert sum(path.values()) == 100.0


def test_child_starting_before_its_parent_is_clipped_to_the_parent():
    b = TraceBuilder()
    root = b.server("gateway", "GET", "/skew", 0, 100)
    client = b.http("gateway", "GET", "http://stock/s", 10, 80, root)
    # The stock host's clock is 30 ms behind: its server span seems to start at -20.
    b.server("stock", "GET", "/s", -20, 79, client)
    path = _ms(critical_path(TraceView(b.spans)))
    assert sum(path.values()) == 100.0
    assert path[("stock", "code")] == 49.0  # 10 (clipped start) .. 59
    assert path[("gateway", "http")] == 31.0  # 59 .. 90


def test_endpoint_shares_add_up_per_service_sql_and_http():
    traces = []
    for i in range(4):
        b = TraceBuilder(offset_ms=i * 1000)
        root = b.server("gateway", "GET", "/dashboard", 0, 100)
        orders = b.call("gateway", "orders", "GET", "http://orders:8000/api/orders", "/api/orders", 10, 50, root)
        b.sql("orders", "SELECT * FROM orders WHERE id = %s", 20, 30, orders)
        traces.append(b.spans)
    (endpoint,) = analyze(traces).endpoints
    assert endpoint.critical_path == {"gateway": 0.5, "sql": 0.3, "orders": 0.19, "http": 0.01}
    parts = {(p.service, p.category): (p.ms_per_request, p.share) for p in endpoint.critical_path_parts}
    assert parts[("orders", "sql")] == (30.0, 0.3)
    assert parts[("gateway", "http")] == (1.0, 0.01)
    assert len(endpoint.slowest_trace_ids) == 4
