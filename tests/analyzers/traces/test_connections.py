"""A database connection opened in most requests (Django's CONN_MAX_AGE = 0) is found; a pool is not."""

from takealook.analyzers.traces import analyze
from takealook.analyzers.traces.trace import CONNECT, TraceView, category

from tests.analyzers.traces.builder import TraceBuilder


def _request(offset_ms: float, connect: bool, database: bool = True, route: str = "/articles/"):
    b = TraceBuilder(offset_ms)
    root = b.server("blog", "GET", route, 0, 8)
    if connect:
        b.span("blog", "connect blog", 0.5, 2.5, root, "client", db_system="postgresql", db_name="blog",
               attributes_json='{"db.operation.name":"connect"}')
    if database:
        b.sql("blog", "SELECT * FROM articles LIMIT 10", 3.5, 1, root, db_name="blog")
        b.sql("blog", "SELECT count(*) FROM articles", 5, 1, root, db_name="blog")
    return b.spans


def test_a_connection_in_every_request_is_found_with_its_time_and_fixes():
    traces = [_request(i * 6000, connect=True) for i in range(10)]
    traces += [_request(i * 2000, connect=False, database=False, route="/health") for i in range(30)]
    report = analyze(traces)
    (finding,) = [f for f in report.findings if f.kind == "connection_per_request"]
    assert (finding.service, finding.endpoint, finding.databases) == ("blog", "GET /articles/", ("blog",))
    # The requests that used the database; the health checks never touched it.
    assert (finding.requests, finding.requests_connecting, finding.share_of_requests) == (10, 10, 1.0)
    assert (finding.connect_ms, finding.connects_per_request, finding.share_of_latency) == (2.5, 1.0, 0.3125)
    assert abs(finding.impact_ms_per_min - 25 * 60 / 58.008) < 0.01  # 10 requests of 2.5 ms in 58 s
    articles = next(e for e in report.endpoints if e.endpoint == "GET /articles/")
    assert articles.critical_path["connect"] == 0.3125  # not the app's own code
    assert articles.sql_per_request == 2.0  # a connect is not a statement
    assert not [f for f in report.findings if f.kind == "n_plus_one"]


def test_a_pool_that_connects_once_per_worker_is_not_a_finding():
    traces = [_request(i * 1000, connect=i < 2) for i in range(20)]
    assert not [f for f in analyze(traces).findings if f.kind == "connection_per_request"]


def test_a_few_requests_are_not_enough_to_judge():
    traces = [_request(i * 1000, connect=True) for i in range(4)]
    assert not [f for f in analyze(traces).findings if f.kind == "connection_per_request"]


def test_connect_spans_are_told_from_statements():
    view = TraceView(_request(0, connect=True))
    assert [s.name for s in view.connects] == ["connect blog"] and len(view.sql) == 2
    assert category(view.connects[0]) == CONNECT
