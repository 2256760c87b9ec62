"""`traces compare` over a large window: verdicts from every request's root span, "where" from a random sample of
whole traces per endpoint and side, on SQLite and on ClickHouse (chdb), against the same comparison made by
reading every trace.

The store holds 2,400 traces plus a few without a root of their own; the size where sampling starts is lowered
for the test (the code path is the one a window of 20,000 traces or more takes)."""

from __future__ import annotations

import json
import random

import pytest

from takealook.analyzers.traces import compare
from takealook.analyzers.traces.compare import Side, compare_store
from takealook.verdicts import Settings
from tests.analyzers.traces.builder import BASE_NS, TraceBuilder, write_sqlite_and_chdb
from tests.contracts import check

N = 600
SETTINGS = Settings(resamples=400)
# The window of the 2,400 traces with roots (the others come after it).
BEFORE = Side((("cloud.provider", "heroku"),), until_ns=BASE_NS + N * 10**9, text="heroku")
AFTER = Side((("cloud.provider", "aws"),), until_ns=BASE_NS + N * 10**9, text="aws")


def _resource(provider: str, instance: int) -> str:
    return json.dumps({"cloud.provider": provider, "service.instance.id": f"{provider}-{instance}"})


def _dashboard(offset_ms: float, resource: str, rng: random.Random, public: bool, fail: bool, parent=None):
    b = TraceBuilder(offset_ms=offset_ms)
    call = 8 + rng.random() + (40 if public else 0)
    root = b.server("gateway", "GET", "/dashboard/<int:id>", 0, 7 + rng.random() + call, resource_json=resource,
                    status_code=500 if fail else 200, **({"parent_span_id": parent} if parent else {}))
    b.sql("gateway", "SELECT * FROM users WHERE id = %s", 1, 3, root, resource_json=resource)
    host = "inventory.example.com" if public else "10.0.0.7"
    client = b.http("gateway", "GET", f"http://{host}/stock/1", 4, call, root, resource_json=resource)
    server = b.server("inventory", "GET", "/stock/<int:id>", 4.5 + (20 if public else 0), 6, client)
    b.sql("inventory", "SELECT qty FROM stock WHERE id = %s", 5 + (20 if public else 0), 4, server)
    return b.spans


def _health(offset_ms: float, resource: str, rng: random.Random):
    b = TraceBuilder(offset_ms=offset_ms)
    root = b.server("gateway", "GET", "/health", 0, 2 + rng.random(), resource_json=resource)
    b.sql("gateway", "SELECT 1", 0.5, 1, root, resource_json=resource)
    return b.spans


def _traces() -> list:
    rng = random.Random(11)
    traces = []
    for i in range(N):
        t, k = i * 1000.0, i % 2
        traces += [_dashboard(t, _resource("heroku", k), rng, False, i % 41 == 3),
                   _dashboard(t + 100, _resource("aws", k), rng, True, i % 23 == 5),
                   _health(t + 200, _resource("heroku", k), rng), _health(t + 300, _resource("aws", k), rng)]
    # Requests whose caller propagated the trace and exported nothing: no root span of their own.
    traces += [_dashboard(N * 1000.0 + i, _resource("aws", 0), rng, True, False, parent="00000000000000aa")
               for i in range(7)]
    return traces


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return write_sqlite_and_chdb(tmp_path_factory.mktemp("compare_large"), _traces())


def _verdicts(result) -> tuple:
    return (tuple(e.comparison for e in result.endpoints), result.overall, result.traces_before, result.traces_after,
            result.instances_before, result.instances_after, result.window_before, result.window_after)


@pytest.mark.parametrize("kind", ["sqlite", "chdb"])
def test_a_large_window_gives_the_verdicts_of_every_trace_and_where_from_a_sample(stores, kind, monkeypatch):
    whole = compare_store(stores["sqlite"], BEFORE, AFTER, SETTINGS, sample=False)
    assert not whole.sampled and [e.where_traces for e in whole.endpoints] == [(N, N), (N, N)]
    # Every request's root span, and every trace read for "where" (the cap above the traces): the same comparison.
    everything = compare_store(stores[kind], BEFORE, AFTER, SETTINGS, sample=True, where_traces=10_000)
    assert everything.sampled and _verdicts(everything) == _verdicts(whole)
    assert everything.endpoints == whole.endpoints  # where too: every trace of each endpoint and side
    # "where" from 50 traces per endpoint and side, picked by a hash of the trace id: the same verdicts.
    monkeypatch.setattr(compare, "SAMPLE_MIN_TRACES", 2000)
    sampled = compare_store(stores[kind], BEFORE, AFTER, SETTINGS, where_traces=50)
    assert sampled.sampled and _verdicts(sampled) == _verdicts(whole)
    assert [e.where_traces for e in sampled.endpoints] == [(50, 50), (50, 50)]
    dashboard = sampled.endpoints[0]
    assert dashboard.comparison.name == "GET /dashboard/{id}" and dashboard.comparison.verdict == "slower"
    top = dashboard.where.path[0]
    assert (top.service, top.category) == ("gateway", "http") and top.change_ms == pytest.approx(40, abs=1)
    assert "call GET inventory.example.com +4" in dashboard.where.cause
    assert sampled.notes == ("verdicts rest on every request of the window (its root span); where the time went "
                             "(critical path, statements, calls) on a random sample of up to 50 whole traces per "
                             "endpoint and side",)
    # The same 50 each time; on both stores the same traces (the hash is of the trace id).
    again = compare_store(stores[kind], BEFORE, AFTER, SETTINGS, where_traces=50)
    assert again.endpoints == sampled.endpoints


def test_every_format_says_what_where_rests_on(stores, monkeypatch):
    from takealook.report import render
    from takealook.report.traces_compare import contract, document

    monkeypatch.setattr(compare, "SAMPLE_MIN_TRACES", 2000)
    result = compare_store(stores["sqlite"], BEFORE, AFTER, SETTINGS, where_traces=50)
    data = json.loads(render.to_json(contract(result)))
    check("traces-compare", data)
    assert data["sampled"] is True
    rests_on = [(e["where"]["traces_before"], e["where"]["traces_after"], e["requests_before"])
                for e in data["endpoints"]]
    assert rests_on == [(50, 50, N), (50, 50, N)]
    for fmt in ("text", "md", "html"):
        text = render.render(document(result), fmt, color=False)
        assert "Where rests on a random sample of whole traces: 50 of 600 before, 50 of 600 after" in text, fmt
        assert "up to 50 whole traces per endpoint and side" in text, fmt
    # The combined report (`report --before --after`) says it too, on the endpoints that changed.
    from takealook.report.combined_doc import _traces_comparison_section
    from takealook.report.model import Document

    combined = render.render(Document("combined", (_traces_comparison_section(result),)), "text", color=False)
    assert "A large window" in combined and "Where rests on a random sample of whole traces: 50 of 600" in combined
    whole = json.loads(render.to_json(contract(compare_store(stores["sqlite"], BEFORE, AFTER, SETTINGS, sample=False))))
    check("traces-compare", whole)
    assert whole["sampled"] is False and whole["endpoints"][0]["where"]["traces_before"] == N


@pytest.mark.parametrize("kind", ["sqlite", "chdb"])
def test_traces_without_a_root_of_their_own_are_counted_as_left_out(stores, kind):
    sides = [Side(((k, v),), text=v) for k, v in BEFORE.attributes + AFTER.attributes]
    whole = compare_store(stores[kind], *sides, SETTINGS, sample=False)
    sampled = compare_store(stores[kind], *sides, SETTINGS, sample=True, where_traces=50)
    assert whole.traces_after == 2 * N + 7 and sampled.traces_after == 2 * N
    assert "7 of the 2,407 traces in the window have no root span of their own" in sampled.notes[1]


def test_load_test_traffic_is_read_whole_as_its_traces_have_no_root_of_their_own(stores, monkeypatch):
    monkeypatch.setattr(compare, "SAMPLE_MIN_TRACES", 2000)
    sides = [Side(((k, v),), text=v) for k, v in BEFORE.attributes + AFTER.attributes]
    result = compare_store(stores["sqlite"], *sides, SETTINGS, load=True, where_traces=50)
    assert not result.sampled and result.traces_after == N * 2 + 7
    assert compare_store(stores["sqlite"], *sides, SETTINGS, where_traces=50).sampled
