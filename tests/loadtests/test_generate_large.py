"""`load generate` over a large window: each trace's root span only, on SQLite and on ClickHouse (chdb), against
the suite made by reading every trace.

2,500 traces (an API with ids and query strings, a catch-all route's pages, a write, the calls between services
that are no entry) and a few whose entry has a parent the store lacks; the size where the root spans alone are
read is lowered for the test."""

from __future__ import annotations

import json
import random

import pytest

from takealook.analyzers.traces.sampling import SAMPLE_MIN_TRACES
from takealook.loadtests import generate
from tests.analyzers.traces.builder import BASE_NS, TraceBuilder, write_sqlite_and_chdb

N = 2500


def _traces() -> list:
    rng = random.Random(3)
    traces = []
    for i in range(N):
        b = TraceBuilder(offset_ms=i * 100)
        kind = i % 5
        headers = json.dumps({"http.request.header.accept": "application/json"})
        if kind < 3:
            oid = rng.randint(1, 300)
            root = b.server("shop", "GET", "/orders/<int:id>", 0, 10 + rng.random() * 5 + (200 if oid == 7 else 0),
                            url_path=f"/orders/{oid}", attributes_json=json.dumps(
                                {"url.query": f"page={rng.randint(1, 4)}&token=x", **json.loads(headers)}))
            b.call("shop", "stock", "GET", "http://stock.internal/api/stock/1", "/api/stock/<int:id>", 2, 5, root)
        elif kind == 3:
            page = f"/blog/{rng.choice(['a', 'b', 'c', 'd'])}-{rng.randint(1, 30)}"
            b.server("shop", "GET", "/<path:page>", 0, 3 + rng.random(), url_path=page)
        else:
            b.server("shop", "POST", "/cart", 0, 8 + rng.random(), url_path="/cart")
        traces.append(b.spans)
    for i in range(9):  # before the others: a proxy propagated the trace and exported nothing
        b = TraceBuilder(offset_ms=-1000 - i)
        b.server("shop", "GET", "/orders/<int:id>", 0, 12, url_path="/orders/5", parent_span_id="00000000000000bb")
        traces.append(b.spans)
    return traces


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return write_sqlite_and_chdb(tmp_path_factory.mktemp("generate_large"), _traces())


def test_the_threshold_is_the_reports():
    assert generate.LARGE_WINDOW == SAMPLE_MIN_TRACES


@pytest.mark.parametrize("kind", ["sqlite", "chdb"])
def test_a_large_window_gives_the_suite_of_every_trace_from_the_root_spans(stores, kind, monkeypatch):
    whole = generate.from_store(stores["sqlite"], BASE_NS, sample=False)
    shop = {e.label: e for e in whole.endpoints}
    assert shop["GET /orders/{id}"].requests == 3 * N // 5 and whole.traces == N
    assert "GET /api/stock/{id}" not in shop  # a call between services is no entry
    assert "token" not in whole.text and "page=" in whole.text
    monkeypatch.setattr(generate, "LARGE_WINDOW", 2000)
    roots = generate.from_store(stores[kind], BASE_NS)
    assert roots.traces == N and "(a large window: the root spans of its 2,500 traces)" in roots.text
    # Weights, latencies, the values drawn, headers, what is left out: the same suite.
    assert roots.endpoints == whole.endpoints and roots.left_out == whole.left_out
    assert roots.text.replace(" (a large window: the root spans of its 2,500 traces)", "") == whole.text.replace(
        str(stores["sqlite"]), str(stores[kind]))
    # Requests whose entry span has a parent the store lacks are counted as left out.
    earlier = generate.from_store(stores[kind], BASE_NS - 10**10)
    assert "2,509 traces, 9 without a root span of their own left out" in earlier.text
    assert generate.from_store(stores["sqlite"], BASE_NS - 10**10, sample=False).traces == N + 9


def test_load_test_traffic_is_read_whole(stores, monkeypatch):
    monkeypatch.setattr(generate, "LARGE_WINDOW", 2000)
    suite = generate.from_store(stores["sqlite"], BASE_NS - 10**10, load=True)
    assert suite.traces == N + 9 and "large window" not in suite.text
