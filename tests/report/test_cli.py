"""``takealook report`` as a user runs it: a span store and a real database in, one ranked report out.

The JSON is checked against its documented contract (docs/json.md); the
findings against the issue's promises: the index's cost to users is an estimate
bounded by the time pg_stat_statements measured, young statistics give one
notice and no DROP advice, weak pg_hba.conf rules are one finding.
"""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest

from tests.analyzers.traces.builder import TraceBuilder, write_store
from tests.conftest import script
from tests.contracts import check

SLOW = "SELECT * FROM orders WHERE customer_id = %s"


@pytest.fixture(scope="module")
def sources(pg, tmp_path_factory):
    dsn = pg.create_database("report")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE EXTENSION IF NOT EXISTS hypopg")
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, status text, total numeric)")
        conn.execute("INSERT INTO orders (customer_id, status, total) "
                     "SELECT i % 5000, 's' || (i % 3), i FROM generate_series(1, 200000) i")
        conn.execute("CREATE INDEX orders_status ON orders (status); "
                     "CREATE INDEX orders_status_total ON orders (status, total)")  # an overlap, never scanned
        conn.execute("VACUUM ANALYZE orders")
        conn.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                     "WHERE datname = current_database()), 0)")
        for customer in range(7):
            conn.execute(SLOW, (customer,))
    traces = []
    for n in range(12):
        b = TraceBuilder(offset_ms=n * 5000)
        root = b.server("orders", "GET", "/customers/<int:id>/orders", 0, 260)
        b.sql("orders", SLOW.replace("%s", str(n)), 5, 250, root, db_name=psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
        traces.append(b.spans)
    store = tmp_path_factory.mktemp("report") / "spans.db"
    write_store(store, traces)
    yield dsn, store
    pg.drop_database(dsn)


def _report(*args, cwd=None):
    return subprocess.run([script("takealook"), "report", *map(str, args)], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def test_report_json_follows_its_contract_and_keeps_its_promises(sources, pg):
    dsn, store = sources
    out = _report("--store", store, "--dsn", dsn, "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    check("report", data)
    findings = data["findings"]
    assert [f["rank"] for f in findings] == list(range(1, len(findings) + 1))
    (index,) = [f for f in findings if f["kind"] == "missing_index"]
    impact = index["index_impact"]
    (statement,) = impact["statements"]
    (pgss,) = [s for d in data["databases"] for s in d["statements"]["top"]["total_time"]
               if s["fingerprint"] == statement["fingerprint"]]
    assert index["impact_estimated"] and statement["pgss_calls"] == 7 and statement["traced_calls"] == 12
    assert statement["predicted_ms"] <= statement["measured_ms"] <= pgss["total_ms"]
    assert index["impact_ms_per_min"] == pytest.approx(impact["predicted_ms"] / data["traces"]["totals"]["window_minutes"],
                                                       rel=1e-2)
    # The trace's slow statement is the index's finding: one problem, one line.
    assert not [f for f in findings if f["kind"] == "slow_statement" and f["fingerprint"] == index["fingerprint"]]
    # The test server's statistics are minutes old: one notice, no DROP advice.
    kinds = [f["kind"] for f in findings]
    assert kinds.count("index_stats_too_young") == 1
    assert not {"unused_index", "overlapping_index"} & set(kinds)
    assert not any((f["fix"] or "").startswith("DROP INDEX") and "orders_status" in f["fix"] for f in findings)
    # However many pg_hba.conf lines are weak, they are one finding (initdb's file trusts 4 loopback lines).
    assert kinds.count("hba_weak_auth") <= 1
    if pg.cluster is not None:
        (hba,) = [f for f in data["databases"][0]["findings"] if f["kind"] == "hba_weak_auth"]
        assert len(hba["lines"]) >= 2 and hba["title"].startswith("pg_hba.conf lines ")
    assert not any("pg_stat_statements_reset" in (f["statement"] or "") for f in findings)


def test_report_text_labels_the_estimate(sources, tmp_path):
    dsn, store = sources
    out = _report("--store", store, "--dsn", dsn, "-o", tmp_path / "report.html")
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "report.html").read_text()
    assert "≈ " in html and "Estimated saving" in html and "index usage statistics cover" in html
    text = _report("--store", store, "--dsn", dsn, "--format", "text")
    assert "≈ " in text.stdout and "estimate" in text.stdout
    # With --min-stats-age 0 the overlap is judged: the shorter index is the advice, as a DROP.
    judged = json.loads(_report("--store", store, "--dsn", dsn, "--format", "json", "--min-stats-age", "0").stdout)
    kinds = {f["kind"]: f for f in judged["findings"]}
    assert "index_stats_too_young" not in kinds
    assert kinds["overlapping_index"]["fix"] == "DROP INDEX CONCURRENTLY public.orders_status;"
