"""ClickHouse stores (issue 17): store URLs, and the table of the Collector's clickhouse exporter read as it is.

The tables here are made the way a team's ClickHouse has them: created with the exporter's layout (its
``internal/sqltemplates/traces_table.sql``: column names and types, its skip indexes and ALIAS columns) or with
an older release's (``SPAN_KIND_SERVER`` spellings, a signed ``Duration``, no scope columns), and filled as the
exporter maps OTLP (kinds ``Server``/``Client``, status ``Ok``/``Error``/``Unset``, hex ids, every attribute
value a string). The engine is the real one, embedded (chdb). There is no ClickHouse server here: for
``clickhouse://`` the URL and a refused connection are tested.
"""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from takealook.analyzers.traces.source import analyze_store
from takealook.collector import StoreURL, open_store, parse_store
from takealook.collector.clickhouse import connect
from takealook.errors import InputError
from takealook.pgcluster import free_port
from tests.conftest import script

BASE_NS = 1_700_000_000 * 10**9
EXPORTER_LAYOUT = """
CREATE TABLE {table} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)), SpanId String CODEC(ZSTD(1)), ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)), SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)), ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)), StatusMessage String CODEC(ZSTD(1)),
    Events Nested (Timestamp DateTime64(9), Name LowCardinality(String),
                   Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    Links Nested (TraceId String, SpanId String, TraceState String,
                  Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2),
        CAST(ResourceAttributes, 'Array(Tuple(String, String))')),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""
# An older release: kinds and statuses spelled as pdata's enums, a signed Duration, no scope columns, no links.
OLD_LAYOUT = """
CREATE TABLE {table} (
    Timestamp DateTime64(9), TraceId String, SpanId String, ParentSpanId String, TraceState String,
    SpanName LowCardinality(String), SpanKind LowCardinality(String), ServiceName LowCardinality(String),
    ResourceAttributes Map(LowCardinality(String), String), SpanAttributes Map(LowCardinality(String), String),
    Duration Int64, StatusCode LowCardinality(String), StatusMessage String,
    Events Nested (Timestamp DateTime64(9), Name LowCardinality(String), Attributes Map(LowCardinality(String), String))
) ENGINE = MergeTree ORDER BY (ServiceName, SpanName, toUnixTimestamp(Timestamp))
"""
N_PLUS_ONE = "SELECT name FROM products WHERE id = %s"


def _exported_rows(old: bool = False) -> list[dict]:
    """Spans of 6 orders requests as the exporter writes them: a Django server span, 6 lookups of one statement,
    a call to the stock service and its server span; the third request fails with a 500; the last one is a
    load test's (tracestate)."""
    kind = (lambda k: "SPAN_KIND_" + k.upper()) if old else (lambda k: k)
    status = (lambda s: "STATUS_CODE_" + s.upper()) if old else (lambda s: s)
    resource = {"service.name": "orders", "service.version": "1.4", "telemetry.sdk.language": "python"}
    rows = []
    for n in range(6):
        trace_id, start = f"{0xabc0 + n:032x}", BASE_NS + n * 10**9
        state = "takealook=load:before,other=1" if n == 5 else ""
        failed = n == 2

        def span(number, parent, name, span_kind, offset_ms, ms, service="orders", attributes=None, code="Unset",
                 events=()):
            rows.append({
                "Timestamp": str(Decimal(start + offset_ms * 10**6).scaleb(-9)), "TraceId": trace_id,
                "SpanId": f"{n:08x}{number:08x}", "ParentSpanId": f"{n:08x}{parent:08x}" if parent else "",
                "TraceState": state, "SpanName": name, "SpanKind": kind(span_kind), "ServiceName": service,
                "ResourceAttributes": {**resource, "service.name": service}, "ScopeName": "takealook.agent",
                "ScopeVersion": "0.1", "SpanAttributes": attributes or {}, "Duration": ms * 10**6,
                "StatusCode": status(code), "StatusMessage": "boom" if code == "Error" else "",
                "Events.Timestamp": [str(Decimal(start).scaleb(-9)) for _ in events],
                "Events.Name": [e[0] for e in events], "Events.Attributes": [e[1] for e in events],
                "Links.TraceId": [], "Links.SpanId": [], "Links.TraceState": [], "Links.Attributes": [],
            })

        span(1, 0, "GET /orders/<int:id>", "Server", 0, 90, attributes={
            "http.request.method": "GET", "http.route": "/orders/<int:id>", "url.path": f"/orders/{n}",
            "http.response.status_code": "500" if failed else "200", "server.address": "orders.internal"},
            code="Error" if failed else "Unset",
            events=[("exception", {"exception.type": "KeyError", "exception.message": "sku"})] if failed else ())
        for q in range(6):
            span(10 + q, 1, "SELECT", "Client", 2 + 10 * q, 9, attributes={
                "db.system": "postgresql", "db.namespace": "orders", "db.query.text": N_PLUS_ONE})
        span(20, 1, "GET", "Client", 70, 15, attributes={
            "http.request.method": "GET", "url.full": "http://stock.internal/api/stock/7",
            "http.response.status_code": "200"}, code="Ok" if n % 2 else "Unset")
        span(21, 20, "GET /api/stock/<int:id>", "Server", 71, 12, service="stock", attributes={
            "http.request.method": "GET", "http.route": "/api/stock/<int:id>", "http.response.status_code": "200"})
    if old:
        for row in rows:
            for key in ("ScopeName", "ScopeVersion", "Links.TraceId", "Links.SpanId", "Links.TraceState",
                        "Links.Attributes"):
                del row[key]
    return rows


def _table(folder: Path, layout: str, rows: list[dict], table: str = "otel_traces") -> StoreURL:
    url = parse_store(f"chdb:{folder}?table={table}")
    engine = connect(url, create=True)
    try:
        engine.command(layout.format(table=url.qualified))
        engine.insert(url.qualified, [json.dumps(row) for row in rows])
    finally:
        engine.close()
    return url


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([script("takealook"), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_store_urls_are_parsed_and_never_shown_with_their_password():
    assert parse_store("spans.db") == Path("spans.db") and parse_store(r"C:\data\spans.db") == Path(r"C:\data\spans.db")
    chdb = parse_store("chdb:/var/ch?table=spans&database=otel")
    assert (chdb.scheme, chdb.path, chdb.qualified) == ("chdb", "/var/ch", "otel.spans")
    assert parse_store("chdb:ch").qualified == "default.otel_traces"
    server = parse_store("clickhouse://reader:s%40cret@ch.internal/otel?secure=1")
    assert (server.host, server.port, server.user, server.password, server.database, server.table, server.secure) == (
        "ch.internal", 8443, "reader", "s@cret", "otel", "otel_traces", True)
    assert parse_store("clickhouse://ch:9000").qualified == "default.otel_traces"
    assert "cret" not in str(server) and str(server) == "clickhouse://reader@ch.internal:8443/otel?secure=1"
    for bad, says in (("chdb:", "needs a folder"), ("clickhouse:///otel", "no host"), ("mongo://x/y", "unknown kind"),
                      ("chdb:x?table=a;drop", "not a plain name"), ("clickhouse://h/db?tabel=x", "unknown option"),
                      ("clickhouse://u:pw@h:99999/db", "not a valid URL"), ("clickhouse://h/db?secure=yes", "secure")):
        with pytest.raises(InputError, match=says) as error:
            parse_store(bad)
        assert "\n" not in str(error.value) and ":pw@" not in str(error.value)


def test_a_store_url_is_never_created_as_a_file(tmp_path):
    exported = tmp_path / "traces.json"
    exported.write_text(json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "orders"}}]}, "scopeSpans": [{"spans": [{
            "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "GET /orders",
            "kind": 2, "startTimeUnixNano": str(BASE_NS), "endTimeUnixNano": str(BASE_NS + 10**7),
            "attributes": [{"key": "http.route", "value": {"stringValue": "/orders"}}]}]}]}]}) + "\n")
    out = _run("traces", "import", str(exported), "--store", "chdb:data", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "imported 1 new spans" in out.stdout and "into chdb:data" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "traces.json"]  # no SQLite file "chdb:data"
    with open_store(f"chdb:{tmp_path / 'data'}") as reader:
        (span,) = reader.trace("0af7651916cd43dd8448eb211c80319c")
        assert (span.service, span.kind, span.http_route, span.duration_ns) == ("orders", "server", "/orders", 10**7)
    for store, says in (("chdbx:data", "unknown kind of store 'chdbx'"), ("chdbx:data", "name has a colon: ./chdbx:data"),
                        ("chdb:nowhere", "no chdb store at nowhere")):
        out = _run("traces", "report", "--store", store, cwd=tmp_path)
        assert out.returncode == 2 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    out = _run("traces", "import", str(exported), "--store", "chdbx:data", cwd=tmp_path)
    assert out.returncode == 2 and "unknown kind of store" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "traces.json"]


def test_the_exporters_table_is_read_as_the_spans_it_holds(tmp_path):
    url = _table(tmp_path / "ch", EXPORTER_LAYOUT, _exported_rows())
    with open_store(url) as reader:
        summary = reader.summary()
        assert (summary.spans, summary.traces, summary.services) == (54, 6, ("orders", "stock"))
        assert reader.count_traces() == 6 and reader.count_traces(load=False) == 5
        assert reader.load_runs() == {"before": 1} and reader.count_traces(load="before") == 1
        assert reader.count_traces(service="stock", route="/api/stock/<int:id>") == 6
        assert reader.count_traces(route="/orders/<int:id>", since_ns=BASE_NS + 10**9, until_ns=BASE_NS + 3 * 10**9) == 2
        failed = reader.trace(f"{0xabc2:032x}")
        root = failed[0]
        assert (root.parent_span_id, root.kind, root.status, root.status_message) == (None, "server", "error", "boom")
        assert (root.http_method, root.http_route, root.http_status, root.url_path) == (
            "GET", "/orders/<int:id>", 500, "/orders/2")
        assert [e.attributes["exception.type"] for e in root.events()] == ["KeyError"]
        assert root.resource()["service.version"] == "1.4" and root.scope == "takealook.agent"
        queries = [s for s in failed if s.db_statement]
        assert len(queries) == 6 and {s.kind for s in queries} == {"client"} and queries[0].db_fingerprint
        call = next(s for s in failed if s.url_full)
        assert (call.server_address, call.parent_span_id, call.status) == ("stock.internal", root.span_id, "unset")
        assert [s.start_ns for s in failed] == sorted(s.start_ns for s in failed)
        traces = list(reader.iter_traces(batch=4))
        assert [t[0].trace_id for t in traces] == [f"{0xabc0 + n:032x}" for n in range(6)]
        assert [t.load for t in traces] == [None] * 5 + ["before"]
    _, report = analyze_store(url)
    endpoints = {e.endpoint: e for e in report.endpoints}
    assert set(endpoints) == {"GET /orders/{id}"} and endpoints["GET /orders/{id}"].requests == 5
    assert endpoints["GET /orders/{id}"].error_rate == pytest.approx(0.2)
    kinds = {(f.kind, f.service) for f in report.findings}
    assert ("n_plus_one", "orders") in kinds and ("error", "orders") in kinds
    assert any("load tests" in note for note in report.notes)


def test_a_table_of_an_older_exporter_release_reads_the_same(tmp_path):
    current = _table(tmp_path / "ch", EXPORTER_LAYOUT, _exported_rows())
    old = _table(tmp_path / "ch", OLD_LAYOUT, _exported_rows(old=True), table="otel_traces_v0")
    with open_store(current) as reader:
        expected = [list(t) for t in reader.iter_traces()]
    with open_store(old) as reader:
        read = [list(t) for t in reader.iter_traces()]
        assert reader.load_runs() == {"before": 1}
    assert [[s.__class__(**{**_fields(s), "scope": "takealook.agent"}) for s in t] for t in read] == expected
    assert {s.kind for t in read for s in t} == {"server", "client"}
    assert sum(s.status == "error" for t in read for s in t) == 1


def _fields(span) -> dict:
    return {name: getattr(span, name) for name in span.__slots__}


def test_imports_write_the_exporters_layout_and_its_spelling(tmp_path):
    """`traces import` into a table of an older release keeps that release's spelling, so both read alike."""
    old = _table(tmp_path / "ch", OLD_LAYOUT, _exported_rows(old=True), table="otel_traces_v0")
    from takealook.collector.clickhouse_write import ClickHouseWriter
    from takealook.collector.importer import import_files
    from tests.analyzers.traces.builder import TraceBuilder, file_exporter_line

    from takealook.collector import TraceSpans

    builder = TraceBuilder()
    root = builder.server("stock", "GET", "/api/stock/<int:id>", 0, 20)
    builder.sql("stock", "SELECT qty FROM stock WHERE id = %s", 1, 5, root)
    exported = tmp_path / "more.json"
    exported.write_text(file_exporter_line([TraceSpans(builder.spans, load="after-2")]) + "\n")
    writer = ClickHouseWriter(old)
    try:
        first = import_files([exported], writer)
        again = import_files([exported], writer)
    finally:
        writer.close()
    assert (first.spans_new, again.spans_new, again.spans_duplicate) == (2, 0, 2)
    engine = connect(old)
    try:
        kinds = engine.rows(f"SELECT DISTINCT SpanKind FROM {old.qualified} WHERE TraceId = '{builder.trace_id}' "
                            "ORDER BY SpanKind")
    finally:
        engine.close()
    assert kinds == [["SPAN_KIND_INTERNAL"], ["SPAN_KIND_SERVER"]] or kinds == [["SPAN_KIND_CLIENT"], ["SPAN_KIND_SERVER"]]
    with open_store(old) as reader:
        read = reader.trace(builder.trace_id)
        assert reader.load_runs() == {"after-2": 1, "before": 1} and read.load == "after-2"
    assert [(s.kind, s.http_route, s.db_statement) for s in read] == [
        (s.kind, s.http_route, s.db_statement) for s in builder.spans]


def test_readers_never_write_and_every_query_has_a_time_limit(tmp_path):
    """A reader's statements run with readonly = 2 and max_execution_time in the engine itself: a write sent
    through it is refused by ClickHouse (code 164), and it has no command or insert. A user whose profile is
    already read-only (every setting locked) reads as before, without the settings it may not change."""
    from takealook.collector.clickhouse import QUERY_TIMEOUT_S

    url = _table(tmp_path / "ch", EXPORTER_LAYOUT, _exported_rows())
    spans = len(_exported_rows())
    reader = connect(url, read_only=True)
    try:
        assert reader.rows("SELECT getSetting('readonly'), getSetting('max_execution_time')") == [[2, QUERY_TIMEOUT_S]]
        with pytest.raises(InputError, match="readonly"):
            reader.rows(f"INSERT INTO {url.qualified} (TraceId) SELECT 'x'")
        with pytest.raises(InputError, match="readonly"):
            reader.rows(f"ALTER TABLE {url.qualified} DELETE WHERE 1")
        with pytest.raises(RuntimeError, match="does not write"):
            reader.command(f"DROP TABLE {url.qualified}")
        with pytest.raises(RuntimeError, match="does not write"):
            reader.insert(url.qualified, ["{}"])
        writer = connect(url)  # the same chdb session: a profile with readonly = 1 for every statement from now
        writer.command("SET readonly = 1")
        locked = connect(url, read_only=True)
        assert locked.rows(f"SELECT count() FROM {url.qualified}") == [[spans]]
        assert locked.rows("SELECT getSetting('readonly')") == [[1]]
        with pytest.raises(InputError, match="readonly"):
            locked.rows(f"INSERT INTO {url.qualified} (TraceId) SELECT 'x'")
        locked.close()
        writer.close()
    finally:
        reader.close()
    again = connect(url, read_only=True)
    assert again.rows(f"SELECT count() FROM {url.qualified}") == [[spans]]  # nothing was written
    again.close()


def test_missing_tables_wrong_layouts_and_unreachable_servers_are_one_line_errors(tmp_path):
    folder = tmp_path / "ch"
    _table(folder, "CREATE TABLE {table} (Timestamp DateTime64(9), TraceId String) ENGINE = MergeTree ORDER BY "
                   "Timestamp", [], table="partial")
    _table(folder, OLD_LAYOUT.replace("SpanAttributes Map(LowCardinality(String), String)", "SpanAttributes String"),
           [], table="stringly")
    port = free_port()  # nothing listens there
    for store, says in (
            (f"chdb:{folder}?table=missing", "no table default.missing"),
            (f"chdb:{folder}?table=partial", "no column SpanId, ParentSpanId"),
            (f"chdb:{folder}?table=stringly", "column SpanAttributes is String"),
            (f"clickhouse://reader:hunter2@127.0.0.1:{port}/otel", f"cannot use ClickHouse at 127.0.0.1:{port}"),
    ):
        out = _run("traces", "report", "--store", store)
        assert out.returncode == 2, out.stderr
        assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1 and "hunter2" not in out.stderr, out.stderr
    out = _run("collect", "--store", f"chdb:{folder}")
    assert out.returncode == 2 and "SQLite file" in out.stderr


def test_a_large_table_is_reported_from_engine_figures_and_a_stratified_sample(tmp_path):
    """Issue 17: rates, errors and percentiles by the engine over every request; the per-trace analyses over each
    endpoint's slowest, failed and random traces; the same endpoint figures as SQLite reading every trace."""
    from takealook.analyzers.traces import sampling
    from takealook.collector.clickhouse_write import ClickHouseWriter
    from takealook.collector.importer import import_files
    from takealook.collector.store import SpanStore
    from takealook.report import render
    from takealook.report.traces import contract, document
    from tests.analyzers.traces.builder import TraceBuilder, file_exporter_line
    from tests.contracts import check

    traces = []
    for n in range(600):  # two endpoints of 300 requests: one with an N+1 on its slow requests, 12 failures
        builder = TraceBuilder(offset_ms=n * 100)
        slow = n % 50 == 3
        if n % 2:
            root = builder.server("orders", "GET", "/orders/<int:id>", 0, 20 + n % 37 + (400 if slow else 0),
                                  status_code=500 if n % 25 == 1 else 200)
            for q in range(8 if slow else 1):
                builder.sql("orders", N_PLUS_ONE, 1 + q * 9, 8 if slow else 1.5, root)
        else:
            builder.server("orders", "POST", "/cart/", 0, 5 + n % 11, status_code=201)
        traces.append(builder.spans)
    exported = tmp_path / "traces.json"
    exported.write_text("".join(file_exporter_line(traces[i:i + 100]) + "\n" for i in range(0, 600, 100)))
    url = parse_store(f"chdb:{tmp_path / 'ch'}")
    for store in (SpanStore(tmp_path / "spans.db"), ClickHouseWriter(url)):
        try:
            assert import_files([exported], store).spans_new == 600 + 288 + 12 * 8
        finally:
            store.close()
    _, everything = analyze_store(tmp_path / "spans.db")
    _, sampled = analyze_store(url, sample=True)
    assert (sampled.totals.traces_in_window, sampled.totals.sampled) == (600, True)
    per_endpoint = sampling.SLOWEST + sampling.FAILED + sampling.SHARE
    assert sampling.SHARE <= sampled.totals.traces <= 2 * per_endpoint < 600
    whole = {e.endpoint: e for e in everything.endpoints}
    for e in sampled.endpoints:
        exact = whole[e.endpoint]
        assert (e.requests, e.requests_per_min, e.error_rate, e.client_error_rate) == (
            exact.requests, exact.requests_per_min, exact.error_rate, exact.client_error_rate)
        assert (e.p50_ms, e.p95_ms, e.p99_ms, e.mean_ms) == pytest.approx(
            (exact.p50_ms, exact.p95_ms, exact.p99_ms, exact.mean_ms), abs=0.002)
        assert sampling.SHARE <= e.traces_analysed <= per_endpoint and exact.traces_analysed == exact.requests == 300
    orders = {e.endpoint: e for e in sampled.endpoints}["GET /orders/{id}"]
    assert set(orders.slowest_trace_ids) <= {f"{t[0].trace_id}" for t in traces if t[0].duration_ns > 400e6}
    errors = next(f for f in sampled.findings if f.kind == "error")
    assert errors.count == 12  # every failed request is in the sample
    repeats = next(f for f in sampled.findings if f.kind == "n_plus_one")
    assert repeats.occurrences == 12  # every slow request too: its N+1 is found in all of them
    assert repeats.occurrences == next(f for f in everything.findings if f.kind == "n_plus_one").occurrences
    check("traces-report", json.loads(render.to_json(contract(sampled))))
    text = render.render(document(sampled), "md", color=False)
    assert "analysed of 600 (a sample)" in text and "traces analysed" in text and "rest on a sample" in text
    _, small = analyze_store(url)  # 600 traces: below the size where sampling starts, every trace is read
    assert not small.totals.sampled and small.endpoints == everything.endpoints
    # SQLite samples alike (its random share picked by another hash): the same figures, failures and N+1s.
    _, lite = analyze_store(tmp_path / "spans.db", sample=True)
    assert lite.totals.sampled and sampling.SHARE <= lite.totals.traces <= 2 * per_endpoint
    fields = ("endpoint", "requests", "requests_per_min", "error_rate", "client_error_rate", "p50_ms", "p95_ms",
              "p99_ms", "mean_ms")
    assert [[getattr(e, f) for f in fields] for e in lite.endpoints] == [
        [getattr(e, f) for f in fields] for e in sampled.endpoints]
    assert next(f for f in lite.findings if f.kind == "error").count == 12
    assert next(f for f in lite.findings if f.kind == "n_plus_one").occurrences == 12


def test_a_clickhouse_server_url_reads_and_writes_through_clickhouse_connect(tmp_path):
    """`clickhouse://` end to end: clickhouse-connect over HTTP to a loopback ClickHouse interface (the engine
    behind ``clickhouse_shim.py``): import, then the same report as SQLite's; a database that is not there."""
    import sys

    from tests.analyzers.traces.builder import TraceBuilder, file_exporter_line
    from tests.processes import Processes

    traces = []
    for n in range(40):
        builder = TraceBuilder(offset_ms=n * 500)
        root = builder.server("orders", "GET", "/orders/<int:id>", 0, 60 + n, status_code=500 if n % 10 == 3 else 200)
        for q in range(6):
            builder.sql("orders", N_PLUS_ONE, 1 + q * 9, 9, root)
        traces.append(builder.spans)
    exported = tmp_path / "traces.json"
    exported.write_text(file_exporter_line(traces) + "\n")
    port = free_port()
    processes = Processes(tmp_path)
    try:
        processes.start([sys.executable, str(Path(__file__).with_name("clickhouse_shim.py")), str(port),
                         str(tmp_path / "server")], env={}, port=port)
        server = f"clickhouse://default:unused@127.0.0.1:{port}/default"
        out = _run("traces", "import", str(exported), "--store", server)
        assert out.returncode == 0 and "imported 280 new spans" in out.stdout, out.stderr
        assert f"into clickhouse://default@127.0.0.1:{port}/default" in out.stdout and "unused" not in out.stdout
        again = _run("traces", "import", str(exported), "--store", server)
        assert "imported 0 new spans (280 already stored)" in again.stdout, again.stderr
        assert _run("traces", "import", str(exported), "--store", str(tmp_path / "spans.db")).returncode == 0
        theirs = _run("traces", "report", "--store", server, "--format", "json")
        mine = _run("traces", "report", "--store", str(tmp_path / "spans.db"), "--format", "json")
        assert theirs.returncode == 0, theirs.stderr
        assert json.loads(theirs.stdout) == json.loads(mine.stdout)
        assert {f["kind"] for f in json.loads(theirs.stdout)["findings"]} >= {"n_plus_one", "error"}
        missing = _run("traces", "report", "--store", f"clickhouse://127.0.0.1:{port}/nowhere")
        assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
        assert "no table nowhere.otel_traces" in missing.stderr
    finally:
        processes.stop()
