"""`takealook traces report` over real stores: the JSON contract, every format, filters, and bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from dataclasses import replace

import pytest

from takealook.cli.traces import parse_when
from takealook.errors import UsageError

from tests.analyzers.traces.builder import BASE_NS, TraceBuilder, write_store
from tests.contracts import check
from tests.conftest import script


def _report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([script("takealook"), "traces", "report", *args], capture_output=True, text=True,
                          timeout=60)


def _shop(n: int = 6):
    """Two entry endpoints: a dashboard with an N+1 and sequential calls, and a quick health check."""
    traces = []
    for i in range(n):
        b = TraceBuilder(offset_ms=i * 10_000)
        root = b.server("gateway", "GET", "/dashboard/<int:id>", 0, 120)
        b.sql("gateway", "SELECT * FROM users WHERE id = %s", 1, 2, root)
        orders = b.call("gateway", "orders", "GET", f"http://10.0.0.2:8000/api/orders/{i}", "/api/orders/<int:id>",
                        5, 80, root)
        for k in range(7):
            b.sql("orders", f"SELECT * FROM products WHERE id = {k}", 6 + k * 10, 10, orders)
        stock = b.call("gateway", "stock", "GET", "http://10.0.0.3:8000/stock/summary", "/stock/summary", 90, 25,
                       root)
        b.sql("stock", "SELECT sum(qty) FROM stock", 91, 20, stock)
        health = TraceBuilder(offset_ms=i * 10_000 + 5000)
        b2 = health.server("gateway", "GET", "/health", 0, 3)
        health.sql("gateway", "SELECT 1", 1, 1, b2)
        traces += [b.spans, health.spans]
    return traces


@pytest.fixture(scope="module")
def shop_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("shop") / "spans.db"
    write_store(path, _shop())
    return path


def test_json_follows_the_contract(shop_store):
    out = _report("--store", str(shop_store), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('{\n  "schema_version": 1,')
    data = json.loads(out.stdout)
    check("traces-report", data)  # docs/json.md
    assert data["totals"]["spans"] == 6 * (14 + 2) and data["totals"]["traces"] == 12
    assert data["totals"]["services"] == ["gateway", "orders", "stock"]
    dashboard = next(e for e in data["endpoints"] if e["route"] == "/dashboard/{id}")
    for key in ("service", "method", "route", "requests", "error_rate", "p50_ms", "p95_ms", "p99_ms"):
        assert key in dashboard
    assert (dashboard["service"], dashboard["method"], dashboard["requests"]) == ("gateway", "GET", 6)
    # Of 120 ms: SQL 2 + 70 + 20, gateway's code 13, orders' 9, stock's 4, the two calls' network 2.
    assert dashboard["critical_path"] == {"sql": 0.7667, "gateway": 0.1083, "orders": 0.075, "stock": 0.0333,
                                         "http": 0.0167}
    kinds = [(f["kind"], f["service"], f["endpoint"]) for f in data["findings"]]
    assert kinds == [("n_plus_one", "orders", "GET /dashboard/{id}"),
                     ("sequential_calls", "gateway", "GET /dashboard/{id}")]
    n_plus_one, sequential = data["findings"]
    assert (n_plus_one["count"], n_plus_one["total_ms"]) == (7, 70.0)
    assert n_plus_one["statement"] == "SELECT * FROM products WHERE id = 0"
    assert sequential["calls"] == ["GET orders /api/orders/{id}", "GET stock /stock/summary"]
    assert sequential["saving_ms"] == 25.0
    for finding in data["findings"]:
        assert finding["impact_ms_per_min"] > 0 and len(finding["trace_ids"]) == 5


def test_text_markdown_and_html(shop_store, tmp_path):
    text = _report("--store", str(shop_store))
    assert text.returncode == 0 and "n_plus_one" in text.stdout and "GET /dashboard/{id}" in text.stdout
    for name, marker in (("report.md", "## Findings"), ("report.html", "<svg")):
        out = _report("--store", str(shop_store), "-o", str(tmp_path / name))
        assert out.returncode == 0, out.stderr
        written = (tmp_path / name).read_text()
        assert marker in written and "Slowest trace per endpoint" in written
    assert "<script" not in (tmp_path / "report.html").read_text()  # self-contained, no network


def test_endpoint_and_service_filters(shop_store):
    data = json.loads(_report("--store", str(shop_store), "--format", "json", "--endpoint", "GET /health").stdout)
    assert [e["route"] for e in data["endpoints"]] == ["/health"] and data["findings"] == []
    data = json.loads(_report("--store", str(shop_store), "--format", "json", "--service", "stock").stdout)
    assert [e["route"] for e in data["endpoints"]] == ["/dashboard/{id}"]
    out = _report("--store", str(shop_store), "--endpoint", "GET /nope")
    assert out.returncode == 2 and "entry endpoints seen: GET /dashboard/{id}, GET /health" in out.stderr


def test_thresholds_are_flags(shop_store):
    data = json.loads(_report("--store", str(shop_store), "--format", "json", "--n-plus-one-min-count", "8",
                              "--sequential-min-saving-ms", "30").stdout)
    assert data["findings"] == []
    assert data["settings"]["n_plus_one_min_count"] == 8


def test_a_window_without_traces_says_what_the_store_holds(shop_store):
    out = _report("--store", str(shop_store), "--since", "1h")
    assert out.returncode == 2
    assert "no traces in" in out.stderr and "it holds traces from 2023-11-14" in out.stderr


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no span store at"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_text("hello"), "cannot read the span store"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)"), "not a takealook span store"),
])
def test_missing_or_foreign_stores_are_one_clear_line(tmp_path, make, message):
    path = tmp_path / "spans.db"
    make(path)
    out = _report("--store", str(path))
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_empty_and_newer_stores(tmp_path):
    path = tmp_path / "spans.db"
    write_store(path, [])
    out = _report("--store", str(path))
    assert out.returncode == 2 and "has no spans yet" in out.stderr
    write_store(path, _shop(1))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    out = _report("--store", str(path))
    assert out.returncode == 2 and "newer than this takealook reads" in out.stderr


def test_absurd_spans_are_skipped_and_counted(tmp_path):
    traces = _shop(2)
    bad = replace(traces[0][3], span_id="00000000000000f1", start_ns=5)  # 1970
    traces[0].append(bad)
    path = tmp_path / "spans.db"
    write_store(path, traces)
    out = _report("--store", str(path), "--format", "json")
    assert out.returncode == 0, out.stderr
    totals = json.loads(out.stdout)["totals"]
    assert totals["skipped_spans"] == 1
    assert totals["skipped_reasons"] == {"start time before 2000 or after 2100": 1}


def test_bad_flags_are_usage_errors(shop_store):
    out = _report("--store", str(shop_store), "--since", "yesterday")
    assert out.returncode == 2 and "--since 'yesterday'" in out.stderr
    out = _report("--store", str(shop_store), "--n-plus-one-min-count", "1")
    assert out.returncode == 2 and "n-plus-one-min-count must be at least 2" in out.stderr
    out = _report("--store", str(shop_store), "--advise-indexes")
    assert out.returncode == 2 and "--advise-indexes needs --dsn" in out.stderr


def test_parse_when():
    now = time.time_ns()
    assert parse_when("90s", now, "--since") == now - 90 * 10**9
    assert parse_when("1.5h", now, "--since") == now - 5400 * 10**9
    assert parse_when("2023-11-14T22:13:20", now, "--since") == BASE_NS
    assert parse_when("2023-11-14T23:13:20+01:00", now, "--since") == BASE_NS
    with pytest.raises(UsageError):
        parse_when("soon", now, "--until")


def test_parallel_readers_give_the_same_report(shop_store):
    one = _report("--store", str(shop_store), "--format", "json", "--jobs", "1")
    three = _report("--store", str(shop_store), "--format", "json", "--jobs", "3")
    assert one.returncode == 0 and three.returncode == 0, three.stderr
    assert json.loads(one.stdout) == json.loads(three.stdout)


def _no_ids(value):
    if isinstance(value, dict):
        return {k: _no_ids(v) for k, v in value.items() if "trace_id" not in k}
    if isinstance(value, list):
        return [_no_ids(v) for v in value]
    return value


def _load_run(label: str, n: int, offset_ms: float):
    """Load-test traces of one run: health checks whose top span's parent is the load generator's."""
    from takealook.collector.model import TraceSpans

    traces = []
    for i in range(n):
        b = TraceBuilder(offset_ms=offset_ms + i * 100)
        root = b.server("gateway", "GET", "/health", 0, 1, parent_span_id=f"{i + 1:016x}")
        b.sql("gateway", "SELECT 1", 0.2, 0.5, root)
        traces.append(TraceSpans(b.spans, load=label))
    return traces


@pytest.fixture(scope="module")
def shop_with_load(tmp_path_factory):
    path = tmp_path_factory.mktemp("shop_load") / "spans.db"
    write_store(path, _shop() + _load_run("before-1", 30, 1000) + _load_run("after-1", 20, 2000))
    return path


def test_load_test_traffic_is_left_out_unless_asked(shop_with_load, shop_store):
    real = _report("--store", str(shop_with_load), "--format", "json")
    assert real.returncode == 0, real.stderr
    assert "left out 50 traces of load tests (runs: after-1 (20), before-1 (30))" in real.stderr
    # The report of the same traffic stored without load tests (trace ids differ: the builder numbers them).
    without = json.loads(_report("--store", str(shop_store), "--format", "json").stdout)
    assert _no_ids(json.loads(real.stdout)) == {**_no_ids(without), "notes": json.loads(real.stdout)["notes"]}
    both = json.loads(_report("--store", str(shop_with_load), "--format", "json", "--include-load").stdout)
    assert both["totals"]["traces"] == 12 + 50
    assert {e["route"]: e["requests"] for e in both["endpoints"]}["/health"] == 6 + 50
    # The load generator's span is the parent of every load request's top span: no orphan finding.
    assert "orphan_span" not in {f["kind"] for f in both["findings"]}
    one = _report("--store", str(shop_with_load), "--format", "json", "--load-run", "after-1")
    data = json.loads(one.stdout)
    assert data["totals"]["traces"] == 20 and [e["route"] for e in data["endpoints"]] == ["/health"]
    assert data["findings"] == [] and "only the traces of load run 'after-1'" in one.stderr
    missing = _report("--store", str(shop_with_load), "--load-run", "nope")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "no traces of load run 'nope'" in missing.stderr and "load runs there: after-1, before-1" in missing.stderr
    both_flags = _report("--store", str(shop_with_load), "--include-load", "--load-run", "x")
    assert both_flags.returncode == 2 and "not allowed with" in both_flags.stderr


def test_a_store_with_only_load_traffic_says_how_to_see_it(tmp_path):
    path = tmp_path / "spans.db"
    write_store(path, _load_run("only", 5, 0))
    out = _report("--store", str(path))
    assert out.returncode == 2 and "the only traces in that time are load-test traffic (only)" in out.stderr
    assert _report("--store", str(path), "--include-load").returncode == 0


def test_the_combined_report_leaves_load_traffic_out_too(shop_with_load):
    def report(*args):
        out = subprocess.run([script("takealook"), "report", "--store", str(shop_with_load), "--format", "json",
                              *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout), out.stderr

    real, notes = report()
    assert "left out 50 traces of load tests" in notes
    assert real["traces"]["totals"]["traces"] == 12
    one, _ = report("--load-run", "before-1")
    assert one["traces"]["totals"]["traces"] == 30
    assert "orphan_span" not in {f["kind"] for f in report("--include-load")[0]["findings"]}


def test_spans_lost_inside_load_traffic_are_not_orphans():
    from takealook.analyzers.traces.analysis import analyze

    (trace,) = _load_run("x", 1, 0)
    # A statement whose parent span was dropped by an exporter the load test overloaded.
    trace.append(replace(trace[1], span_id="9" * 16, parent_span_id="e" * 16))
    assert [f.kind for f in analyze([list(trace)]).findings] == ["orphan_span"]  # were it real traffic
    assert analyze([trace]).findings == ()
