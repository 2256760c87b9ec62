"""Analyses of parts of the traces, merged, give the report of all the traces at once (parallel reports)."""

import random

from takealook.analyzers.traces import Settings, TraceAnalysis
from takealook.report import traces as adapter
from takealook.report.render import to_json

from tests.analyzers.traces.builder import TraceBuilder, exception_events


def _traces(n: int):
    rng = random.Random(3)
    out = []
    for i in range(n):
        b = TraceBuilder(offset_ms=i * 700)
        fail = i % 7 == 0
        status = 500 if fail else 404 if i % 11 == 0 else 200
        if i % 2:
            root = b.server("gateway", "GET", f"/page/{i % 3}", 0, 150 + i % 50, status_code=status)
        else:  # a catch-all route: one endpoint per page, the quietest past the cap folded into one row
            root = b.server("gateway", "GET", "/<path:rest>", 0, 150 + i % 50, status_code=status,
                            url_path=f"/docs/p{i % 14 if i % 3 else 0}/")
        b.sql("gateway", "SELECT 1", 1, 1 + rng.random(), root)
        orders = b.call("gateway", "orders", "GET", "https://orders.herokuapp.com/api", "/api", 5, 80 + i % 13, root)
        b.span("orders", "connect orders", 5.5, 0.5, orders, "client", db_system="postgresql", db_name="orders")
        for k in range(6):
            b.sql("orders", f"SELECT * FROM p WHERE id = {k}", 6 + k * 11, 10 + rng.random(), orders,
                  events_json=exception_events("KeyError", "p") if fail and k == 0 else "[]")
        call = b.http("gateway", "GET", "http://10.0.0.3/s", 100 + i % 13, 20, root)
        if i % 5:
            b.sql("stock", "SELECT 2", 101 + i % 13, 5, b.server("stock", "GET", "/s", 100 + i % 13, 19, call))
        else:  # the stock host's clock runs behind; no database span at all there
            b.server("stock", "GET", "/s", 90, 19, call)
        b.sql("gateway", "SELECT 3", 140, 2, None, parent_span_id="00000000000000ff") if i % 4 == 0 else None
        out.append(b.spans)
    return out


def _json(analysis):
    return to_json(adapter.contract(analysis.result()))


def test_merged_halves_equal_the_whole():
    traces = _traces(60)
    settings = Settings(paths_per_route=3)
    whole = TraceAnalysis(settings)
    for spans in traces:
        whole.add_trace(spans)
    first, second = TraceAnalysis(settings), TraceAnalysis(settings)
    for spans in traces[:25]:
        first.add_trace(spans)
    for spans in traces[25:]:
        second.add_trace(spans)
    first.merge(second)
    merged = _json(first)
    assert merged == _json(whole)
    report = whole.result()
    kinds = {f.kind for f in report.findings}
    assert {"n_plus_one", "sequential_calls", "public_address_call", "error", "orphan_span", "clock_skew",
            "connection_per_request"} <= kinds
    assert sum(1 for e in report.endpoints if e.by_path) == 3
    assert [e.other_paths > 0 for e in report.endpoints if e.route == "/{rest}"] == [True]
