"""The store: what is written is read back exactly, filters, idempotency, errors, retention, WAL."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from takealook.collector import open_store
from takealook.collector.convert import Converter
from takealook.collector.retention import Retention
from takealook.collector.schema import SCHEMA_VERSION
from takealook.collector.store import SpanStore
from takealook.errors import InputError
from tests.collector.conftest import raw_request, sdk_spans


def _store_spans(path, spans, converter=None):
    store = SpanStore(path)
    try:
        converted = (converter or Converter()).traces(encode_spans(spans).SerializeToString())
        return store.write([converted.batch])
    finally:
        store.close()


def test_spans_round_trip_with_typed_fields(tmp_path):
    path = tmp_path / "spans.db"
    spans = sdk_spans(traces=2)
    result = _store_spans(path, spans)
    assert result.spans_new == 6 and result.spans_duplicate == 0
    with open_store(path) as store:
        summary = store.summary()
        assert (summary.spans, summary.traces, summary.services) == (6, 2, ("orders",))
        assert summary.schema_version == SCHEMA_VERSION
        traces = list(store.iter_traces())
    assert [len(t) for t in traces] == [3, 3]
    root, db, client = traces[0]  # sorted by start time: the root starts first
    assert root.is_root and root.kind == "server" and root.status == "error" and root.status_message == "boom"
    assert (root.http_method, root.http_route, root.http_status, root.url_path) == (
        "GET", "/orders/<int:id>", 500, root.attributes()["url.path"])
    assert root.events()[0].name == "exception"
    assert root.events()[0].attributes["exception.type"] == "ValueError"
    assert db.parent_span_id == root.span_id and db.kind == "client"
    assert (db.db_system, db.db_name, db.server_address) == ("postgresql", "orders", "db.internal")
    assert db.db_statement == "SELECT * FROM orders_order WHERE id = %s"
    from takealook.sqltext import fingerprint

    assert db.db_fingerprint == fingerprint("SELECT * FROM orders_order WHERE id = 7")
    # Old names resolved, query and credentials stripped, host derived for the client span.
    assert client.url_full.startswith("http://stock.internal:8001/stock/") and "?" not in client.url_full
    assert client.server_address == "stock.internal" and client.http_status == 200
    assert client.links()[0].span_id == root.span_id and client.links()[0].attributes == {"link.kind": "parent-ish"}
    assert root.resource()["service.version"] == "1.2.3" and root.scope == "tests.collector"


def test_attributes_are_kept_as_sent(tmp_path):
    path = tmp_path / "spans.db"
    spans = sdk_spans(traces=1)
    _store_spans(path, spans)
    with open_store(path) as store:
        stored = {s.span_id: s for s in next(store.iter_traces())}
    for span in spans:
        got = stored[format(span.context.span_id, "016x")]
        assert got.attributes() == {k: (list(v) if isinstance(v, tuple) else v) for k, v in span.attributes.items()}
        assert got.start_ns == span.start_time and got.duration_ns == span.end_time - span.start_time


def test_writing_twice_stores_each_span_once(tmp_path):
    path = tmp_path / "spans.db"
    spans = sdk_spans(traces=3)
    _store_spans(path, spans)
    again = _store_spans(path, spans, Converter())
    assert (again.spans_new, again.spans_duplicate) == (0, 9)
    with open_store(path) as store:
        assert store.summary().spans == 9


def test_filters_and_windows(tmp_path):
    path = tmp_path / "spans.db"
    store = SpanStore(path)
    converter = Converter()
    store.write([converter.traces(raw_request(100, service="gateway", seed=1).SerializeToString()).batch,
                 converter.traces(raw_request(60, service="stock", seed=2).SerializeToString()).batch])
    store.close()
    with open_store(path) as reader:
        assert reader.count_traces() == 8
        assert reader.count_traces(service="stock") == 3
        assert len(list(reader.iter_traces(service="gateway", batch=2))) == 5
        assert len(list(reader.iter_traces(route="/", service="stock"))) == 3
        assert list(reader.iter_traces(route="/nope")) == []
        roots = list(reader.root_spans(service="stock", route="/"))
        assert len(roots) == 3 and all(r.service == "stock" for r in roots)
        first = roots[0]
        assert reader.trace(first.trace_id)[0] == first
        assert reader.trace(first.trace_id.upper()) == reader.trace(first.trace_id)
        assert reader.trace("0" * 32) == []
        start = min(r.start_ns for r in reader.root_spans())
        assert reader.count_traces(since_ns=start + 1) < 8
        assert reader.count_traces(until_ns=start) == 0
        assert len(list(reader.iter_traces(since_ns=start, until_ns=start + 1))) >= 1


def test_paging_returns_every_trace_once(tmp_path):
    path = tmp_path / "spans.db"
    store = SpanStore(path)
    store.write([Converter().traces(raw_request(2000, seed=3).SerializeToString()).batch])
    store.close()
    with open_store(path) as reader:
        for batch in (1, 7, 100, 1000):
            traces = list(reader.iter_traces(batch=batch))
            assert len(traces) == 100 and len({t[0].trace_id for t in traces}) == 100
            assert sum(len(t) for t in traces) == 2000


def test_paging_with_equal_start_times(tmp_path):
    request = raw_request(600, seed=6)
    for span in request.resource_spans[0].scope_spans[0].spans:  # every trace starts at the same instant
        span.end_time_unix_nano -= span.start_time_unix_nano - 1_700_000_000_000_000_000
        span.start_time_unix_nano = 1_700_000_000_000_000_000
    store = SpanStore(tmp_path / "spans.db")
    store.write([Converter().traces(request.SerializeToString()).batch])
    store.close()
    with open_store(tmp_path / "spans.db") as reader:
        traces = list(reader.iter_traces(batch=7, since_ns=1_700_000_000_000_000_000))
    assert len(traces) == 30 and len({t[0].trace_id for t in traces}) == 30


def test_missing_empty_foreign_and_newer_stores_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no span store at .*takealook collect"):
        open_store(tmp_path / "nope.db")
    SpanStore(tmp_path / "empty.db").close()
    with pytest.raises(InputError, match="has no spans yet"):
        open_store(tmp_path / "empty.db")
    with open_store(tmp_path / "empty.db", allow_empty=True) as reader:
        assert reader.summary().spans == 0 and list(reader.iter_traces()) == []
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(InputError, match="not a takealook span store"):
        open_store(foreign)
    with pytest.raises(InputError, match="not a takealook span store"):
        SpanStore(foreign)
    newer = tmp_path / "newer.db"
    SpanStore(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(InputError, match="newer than this takealook.*upgrade"):
        open_store(newer)
    (tmp_path / "text.db").write_text("hello, not a database at all" * 100)
    with pytest.raises(InputError):
        open_store(tmp_path / "text.db")


def test_reader_does_not_wait_for_a_writer_holding_its_lock(tmp_path):
    path = tmp_path / "spans.db"
    _store_spans(path, sdk_spans(traces=1))
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM spans")  # uncommitted: readers still see the spans
    try:
        started = time.monotonic()
        with open_store(path) as reader:
            assert reader.summary().spans == 3
        assert time.monotonic() - started < 2.0
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_retention_by_age_drops_whole_old_traces(tmp_path):
    path = tmp_path / "spans.db"
    store = SpanStore(path)
    converter = Converter()
    old = raw_request(40, seed=4)  # year 2023
    recent = raw_request(40, seed=5)
    now = time.time_ns()
    for span in recent.resource_spans[0].scope_spans[0].spans:
        duration = span.end_time_unix_nano - span.start_time_unix_nano
        span.start_time_unix_nano, span.end_time_unix_nano = now, now + duration
    store.write([converter.traces(old.SerializeToString()).batch, converter.traces(recent.SerializeToString()).batch])
    deleted = Retention(max_age_ns=86400 * 10**9).run(store)
    store.close()
    assert deleted == 2
    with open_store(path) as reader:
        summary = reader.summary()
        assert (summary.traces, summary.spans) == (2, 40)
        assert all(len(t) == 20 for t in reader.iter_traces())


def test_retention_by_size_keeps_the_newest_traces_under_the_limit(tmp_path):
    path = tmp_path / "spans.db"
    store = SpanStore(path)
    converter = Converter()
    for seed in range(10):
        store.write([converter.traces(raw_request(1000, seed=10 + seed).SerializeToString()).batch])
    used = store.conn.execute("SELECT (page_count - freelist_count) * page_size FROM pragma_page_count(), "
                              "pragma_freelist_count(), pragma_page_size()").fetchone()[0]
    limit = used // 2
    Retention(max_bytes=limit, chunk=50).run(store)
    used_after = store.conn.execute("SELECT (page_count - freelist_count) * page_size FROM pragma_page_count(), "
                                    "pragma_freelist_count(), pragma_page_size()").fetchone()[0]
    store.close()
    assert used_after <= limit
    with open_store(path) as reader:
        traces = list(reader.iter_traces())
        assert 0 < len(traces) < 500 and all(len(t) == 20 for t in traces)
        # The oldest went first: what is left is the newest.
        starts = [t[0].start_ns for t in traces]
        assert min(starts) > 1_700_000_000_000_000_000
        orphans = reader._conn.execute(
            "SELECT count(*) FROM attrsets WHERE id NOT IN (SELECT attrs_id FROM spans)").fetchone()[0]
        assert orphans == 0


def test_metric_points_round_trip(tmp_path):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="orders")))
    metric = rm.scope_metrics.add().metrics.add(name="http.server.request.duration", unit="s")
    metric.histogram.aggregation_temporality = 2
    point = metric.histogram.data_points.add(start_time_unix_nano=1, time_unix_nano=2, count=3, sum=0.5,
                                              explicit_bounds=[0.1, 1.0], bucket_counts=[1, 2, 0])
    point.attributes.append(KeyValue(key="http.route", value=AnyValue(string_value="/orders/")))
    point.attributes.append(KeyValue(key="http.response.status_code", value=AnyValue(int_value=200)))
    bad = metric.histogram.data_points.add(time_unix_nano=2, count=1, explicit_bounds=[1.0], bucket_counts=[1])
    assert bad.count == 1
    rm.scope_metrics[0].metrics.add(name="requests").sum.data_points.add(as_int=5, time_unix_nano=2)
    converted = Converter().metrics(request)
    assert (converted.rejected, converted.ignored) == (1, 1)
    store = SpanStore(tmp_path / "spans.db")
    store.write([converted.batch])
    again = store.write([Converter().metrics(request).batch])
    store.close()
    assert again.points_new == 0
    with open_store(tmp_path / "spans.db") as reader:
        (got,) = reader.metric_points(name="http.server.request.duration")
        assert list(reader.metric_points(name="other")) == []
    assert (got.service, got.unit, got.temporality, got.count, got.sum) == ("orders", "s", "cumulative", 3, 0.5)
    assert got.bounds == (0.1, 1.0) and got.bucket_counts == (1, 2, 0)
    assert (got.http_route, got.http_status, got.http_method) == ("/orders/", 200, None)
    assert json.loads(got.resource_json)["service.name"] == "orders"
