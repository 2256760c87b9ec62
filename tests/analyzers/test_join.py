"""The one join on a real PostgreSQL: an advised index's impact comes from measured execution time.

The traces here over-state the statement (each span 300 ms: driver, network and
fetch on top of the execution pg_stat_statements measures, and more calls than
pg_stat_statements counted); the estimate must follow pg_stat_statements, never
the spans, and its severity must follow the milliseconds, not the 99% ratio.
"""

from __future__ import annotations

import psycopg
import pytest

from takealook.analyzers.db.audit import audit_databases
from takealook.analyzers.db.options import AuditOptions, Thresholds
from takealook.analyzers.join import combine, severity_for
from takealook.analyzers.traces import Settings, TraceAnalysis, Window
from tests.analyzers.traces.builder import BASE_NS, TraceBuilder

SLOW = "SELECT * FROM orders WHERE customer_id = %s"
TRACED_CALLS, PGSS_CALLS, SPAN_MS = 20, 7, 300.0


@pytest.fixture(scope="module")
def joined(pg):
    dsn = pg.create_database("join")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE EXTENSION IF NOT EXISTS hypopg")
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, total numeric)")
        conn.execute("INSERT INTO orders (customer_id, total) SELECT i % 5000, i FROM generate_series(1, 200000) i")
        conn.execute("VACUUM ANALYZE orders")
        conn.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                     "WHERE datname = current_database()), 0)")
        for customer in range(PGSS_CALLS):
            conn.execute(SLOW, (customer,))
    analysis = TraceAnalysis(Settings(), Window(BASE_NS, BASE_NS + 60 * 10**9))  # one minute of traffic
    for n in range(TRACED_CALLS):
        b = TraceBuilder(offset_ms=n * 2500)
        root = b.server("orders", "GET", "/customers/<int:id>/orders", 0, SPAN_MS + 20)
        b.sql("orders", SLOW.replace("%s", str(n)), 10, SPAN_MS, root, db_name="orders")
        analysis.add_trace(b.spans)
    traces = analysis.result()
    audit = audit_databases([dsn], AuditOptions(thresholds=Thresholds(min_stats_age_s=0)))
    yield traces, audit, combine(traces, audit)
    pg.drop_database(dsn)


def _pgss_total_ms(audit, fingerprint: str) -> float:
    return sum(s.total_ms for d in audit.databases for s in d.statements.all if s.fingerprint == fingerprint)


def test_index_impact_never_exceeds_the_measured_time(joined):
    traces, audit, result = joined
    (index,) = [f for f in result.findings if f.kind == "missing_index"]
    impact = index.index_impact
    (statement,) = impact.statements
    pgss_total = _pgss_total_ms(audit, statement.fingerprint)
    assert statement.traced_calls == TRACED_CALLS and statement.pgss_calls == PGSS_CALLS
    assert statement.calls_counted == PGSS_CALLS  # pg_stat_statements vouches for no more calls than it counted
    assert statement.measured_ms == pytest.approx(statement.pgss_mean_ms * PGSS_CALLS, rel=1e-3)
    assert statement.predicted_ms <= statement.measured_ms <= pgss_total
    assert statement.saving_pct > 50 and statement.predicted_ms == pytest.approx(
        statement.measured_ms * statement.saving_pct / 100, rel=1e-3)
    assert impact.predicted_ms <= impact.measured_ms
    assert index.estimated and index.impact_ms_per_min == pytest.approx(impact.predicted_ms / 1.0, rel=1e-3)
    # What the traces alone would have claimed: span time x ratio, far above what the database spent.
    traced_ms = TRACED_CALLS * SPAN_MS * statement.saving_pct / 100
    assert traced_ms > 10 * index.impact_ms_per_min
    # Severity from milliseconds: a 99% cheaper plan for a statement that costs little is not "high".
    assert index.severity == severity_for(index.impact_ms_per_min)
    assert index.impact_ms_per_min < 1000 and index.severity != "high"
    assert index.endpoints == ("GET /customers/{id}/orders",)
    # The slow-statement finding of the traces is told by the index finding: one problem, one line.
    assert not [f for f in result.findings if f.kind == "slow_statement" and f.fingerprint == index.fingerprint]


def test_the_audit_weighs_an_index_by_its_time_per_minute_of_statistics(joined):
    _, audit, _ = joined
    (database,) = audit.databases
    (finding,) = [f for f in database.findings if f.kind == "missing_index"]
    period = database.statements.period_s
    assert database.statements.period_basis == "stats_reset" and 0 <= period < 86400  # the test server is young
    rate = finding.data["benefit_ms_per_min"]
    assert rate == pytest.approx(finding.data["benefit_ms"] / (period / 60), rel=0.05)
    assert finding.severity == severity_for(rate) and "estimated" in finding.detail


def test_severity_scale():
    assert [severity_for(v) for v in (None, 19, 100, 999, 1000)] == ["low", "low", "medium", "medium", "high"]
    assert severity_for(5, floor="medium") == "medium" and severity_for(5000, floor="medium") == "high"
