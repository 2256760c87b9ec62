"""Traced statements joined to pg_stat_statements and to the index advice of a real PostgreSQL."""

import psycopg

from takealook.analyzers.traces import Settings, TraceAnalysis
from takealook.analyzers.join import join_statements as join, read_database

from tests.analyzers.traces.builder import TraceBuilder

SLOW = "SELECT * FROM orders WHERE customer_id = %s"


def _seed(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")  # the DBA's step; the advice never creates it
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, total numeric)")
        conn.execute("INSERT INTO orders (customer_id, total) SELECT i % 5000, i FROM generate_series(1, 200000) i")
        conn.execute("ANALYZE orders")
        conn.execute("SELECT pg_stat_statements_reset()")
        for customer in range(7):  # what the app ran: the same statement with different values
            conn.execute(SLOW, (customer,))


def _analysis():
    b = TraceBuilder()
    root = b.server("orders", "GET", "/customers/<int:id>/orders", 0, 400)
    b.sql("orders", SLOW.replace("%s", "42"), 10, 300, root, db_name="orders")  # literal: same fingerprint
    analysis = TraceAnalysis(Settings())
    analysis.add_trace(b.spans)
    return analysis, analysis.result()


def test_statements_get_pg_stat_statements_figures_and_index_advice(pg_db):
    _seed(pg_db)
    analysis, report = _analysis()
    read = read_database(pg_db, advise_for=[SLOW])
    assert read.notes == ()
    (statement,) = join(list(report.statements), [read])
    figures = statement.pg_stat_statements
    assert figures is not None and figures.calls == 7 and figures.rows == 7 * 40
    assert statement.index_advice is not None and statement.index_advice.verified
    assert statement.index_advice.saving_pct > 50
    assert "customer_id" in statement.index_advice.create_sql
    joined = analysis.with_statements(report, [statement])
    (slow,) = [f for f in joined.findings if f.kind == "slow_statement"]
    assert slow.pg_stat_statements == figures and slow.index_advice == statement.index_advice
    with psycopg.connect(pg_db) as conn:  # read-only: nothing was created
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'orders'").fetchone()[0] == 1


def test_a_database_without_pg_stat_statements_is_a_note_not_a_failure(pg_db):
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("DROP EXTENSION IF EXISTS pg_stat_statements")
    _, report = _analysis()
    read = read_database(pg_db)
    assert read.figures == {} and len(read.notes) == 1 and "CREATE EXTENSION pg_stat_statements" in read.notes[0]
    (statement,) = join(list(report.statements), [read])
    assert statement.pg_stat_statements is None
