"""Load-test traffic: the ``tracestate`` mark is stored per trace and the read API leaves it out or picks one run.

Spans come from the real OpenTelemetry SDK through the real OTLP/HTTP exporter to a running collector.
"""

from __future__ import annotations

import sqlite3

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from takealook import loadmark
from takealook.collector import open_store
from takealook.collector.schema import SCHEMA_VERSION
from takealook.collector.store import SpanStore
from tests.collector.conftest import start_collector
from tests.conftest import wait_for


def _send(url: str, requests: list[tuple[str, str | None]]) -> dict[str, str | None]:
    """One server span with a DB child per request; ``(path, run label or None)``. Returns trace id -> label."""
    provider = TracerProvider(resource=Resource.create({"service.name": "web"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    tracer = provider.get_tracer("tests.load_mark")
    sent = {}
    for number, (path, label) in enumerate(requests):
        headers = {}
        if label is not None:  # the load generator's request: a remote parent that carries the mark
            headers = {"traceparent": f"00-{number + 1:032x}-{number + 1:016x}-01",
                       "tracestate": loadmark.with_entry("vendor=x", label)}
        parent = TraceContextTextMapPropagator().extract(headers)
        with tracer.start_as_current_span(f"GET {path}", context=parent, kind=SpanKind.SERVER,
                                          attributes={"http.request.method": "GET", "http.route": path,
                                                      "url.path": path}) as span:
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                              attributes={"db.system": "postgresql", "db.statement": "SELECT 1"}):
                pass
        sent[f"{span.get_span_context().trace_id:032x}"] = label
    provider.shutdown()
    return sent


@pytest.fixture(scope="module")
def marked_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("marked")
    collector = start_collector(folder, grpc=None)
    try:
        sent = _send(collector.http_url, [("/a", None), ("/b", "run-1"), ("/a", "run-2"), ("/c", None),
                                          ("/b", "run-1")])
        store = folder / "spans.db"

        def stored():
            with open_store(store, allow_empty=True) as reader:
                return reader.summary().spans == 10

        wait_for(stored, 15, message="10 spans stored")
    finally:
        collector.stop()
    return store, sent


def test_the_run_label_is_stored_per_trace_and_filters_reads(marked_store):
    store, sent = marked_store
    with open_store(store) as reader:
        every = list(reader.iter_traces())
        assert {t[0].trace_id: t.load for t in every} == sent
        real = list(reader.iter_traces(load=False))
        assert [t[0].http_route for t in real] == ["/a", "/c"] and all(t.load is None for t in real)
        one = list(reader.iter_traces(load="run-1", batch=1))
        assert [t[0].http_route for t in one] == ["/b", "/b"] and {t.load for t in one} == {"run-1"}
        assert list(reader.iter_traces(load="nope")) == []
        assert reader.count_traces(load=False) == 2 and reader.count_traces(load="run-2") == 1
        assert reader.count_traces() == 5
        assert reader.load_runs() == {"run-1": 2, "run-2": 1}
        assert [s.http_route for s in reader.root_spans(load=False)] == ["/a", "/c"]
        marked = next(t for t, label in sent.items() if label == "run-2")
        assert reader.trace(marked).load == "run-2" and len(reader.trace(marked)) == 2  # findable by its id


def test_a_version_1_store_is_read_as_real_traffic_and_migrated_by_a_writer(marked_store, tmp_path):
    store, sent = marked_store
    old = tmp_path / "old.db"
    with sqlite3.connect(store) as source, sqlite3.connect(old) as target:
        source.backup(target)
    with sqlite3.connect(old) as conn:  # what a store written by the previous takealook looks like
        conn.execute("ALTER TABLE traces DROP COLUMN load")
        conn.execute("PRAGMA user_version = 1")
    with open_store(old) as reader:
        assert reader.summary().schema_version == 1
        assert reader.count_traces(load=False) == 5 and reader.load_runs() == {}
        assert list(reader.iter_traces(load="run-1")) == []
        assert {t.load for t in reader.iter_traces()} == {None}
    SpanStore(old).close()
    with open_store(old) as reader:
        assert reader.summary().schema_version == SCHEMA_VERSION == 2
        assert reader.count_traces(load=False) == 5  # what was stored before stays real traffic


def test_metric_points_of_load_requests_are_left_out_or_picked(tmp_path):
    collector = start_collector(tmp_path, grpc=None)
    try:
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{collector.http_url}/v1/metrics"),
                                               export_interval_millis=60_000)
        provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "web"}))
        histogram = provider.get_meter("t").create_histogram("http.server.request.duration", unit="s")
        base = {"http.request.method": "GET", "http.route": "/a", "http.response.status_code": 200}
        for _ in range(3):
            histogram.record(0.01, base)
        histogram.record(0.02, {**base, "takealook.load": "run-1"})
        histogram.record(0.02, {**base, "takealook.load": "run-2"})
        provider.shutdown()

        def points(**load):
            with open_store(tmp_path / "spans.db", allow_empty=True) as store:
                return [(p.count, p.attributes().get("takealook.load")) for p in
                        store.metric_points("http.server.request.duration", **load)]

        wait_for(lambda: len(points()) == 3, 15, message="three series stored")
    finally:
        collector.stop()
    assert points(load=False) == [(3, None)]
    assert points(load="run-2") == [(1, "run-2")]


def test_the_mark_follows_the_w3c_tracestate_grammar():
    assert loadmark.entry("before-1") == "takealook=load:before-1"
    # Characters a value may not hold (',', '=', spaces, non-ASCII) are replaced.
    assert loadmark.entry("a,b=c d\u00e9") == "takealook=load:a_b_c_d_"
    assert loadmark.with_entry("congo=t61rcWkgMzE, takealook=load:old", "new") == \
        "takealook=load:new,congo=t61rcWkgMzE"
    assert loadmark.label_of("congo=t61rcWkgMzE,takealook=load:run.2") == "run.2"
    assert loadmark.label_of("congo=x") is None and loadmark.label_of("") is None
    assert loadmark.label_of("mytakealook=load:x") is None
    # The SDK's own parser accepts what we send (it drops a tracestate it finds invalid).
    context = TraceContextTextMapPropagator().extract({"traceparent": f"00-{1:032x}-{1:016x}-01",
                                                       "tracestate": loadmark.with_entry("", "run_1")})
    state = trace.get_current_span(context).get_span_context().trace_state
    assert state.get("takealook") == "load:run_1"
