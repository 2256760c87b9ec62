"""``audit_database`` on a real PostgreSQL: statements, index health, tables, sessions, missing extensions."""

from __future__ import annotations

import threading

import psycopg
import pytest

from takealook.analyzers.db.audit import audit_database
from takealook.analyzers.db.index_advice import advise_indexes
from takealook.analyzers.db.options import AuditOptions, IndexOptions, Thresholds
from takealook.report.db import audit_contract, audit_document
from takealook.report.render import render, to_json
from takealook.sqltext import fingerprint
from tests.analyzers.db.conftest import execute, reset_statements, run_statements
from tests.conftest import wait_for

AUDIT_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE EXTENSION IF NOT EXISTS hypopg;
CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL, plan text NOT NULL, score int NOT NULL,
                       region int NOT NULL);
INSERT INTO accounts SELECT g, 'a' || g || '@example.org', 'p' || (g % 3), g % 5000, g % 4000
FROM generate_series(1, 30000) g;
CREATE INDEX accounts_plan_idx ON accounts (plan);
CREATE INDEX accounts_plan_score_idx ON accounts (plan, score);
CREATE INDEX accounts_email_a ON accounts (email);
CREATE INDEX accounts_email_b ON accounts (email);
CREATE TABLE logs (id int, body text) WITH (autovacuum_enabled = false);
INSERT INTO logs SELECT g, 'line ' || g FROM generate_series(1, 30000) g;
DELETE FROM logs WHERE id % 2 = 0;
CREATE TABLE bloated (id int, pad text) WITH (autovacuum_enabled = false);
INSERT INTO bloated SELECT g, repeat('x', 200) FROM generate_series(1, 40000) g;
DELETE FROM bloated WHERE id % 10 <> 0;
CREATE TABLE never (id int) WITH (autovacuum_enabled = false);
INSERT INTO never SELECT g FROM generate_series(1, 5000) g;
CREATE TABLE dup_values (v int);
INSERT INTO dup_values VALUES (1), (1);
"""

# min_stats_age_s=0: the test cluster's statistics are minutes old; the age gate has tests of its own.
THRESHOLDS = Thresholds(bloat_bytes=1024 * 1024, idle_in_transaction_s=0, long_running_s=0, temp_blocks=1,
                        min_stats_age_s=0)


def table_stat(dsn: str, table: str, column: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT {column} FROM pg_stat_user_tables WHERE relname = %s", (table,)).fetchone()[0]


@pytest.fixture(scope="module")
def audit_db(pg):
    dsn = pg.create_database("audit")
    execute(dsn, AUDIT_SCHEMA)
    execute(dsn, "VACUUM ANALYZE accounts")
    execute(dsn, "VACUUM ANALYZE bloated")
    execute(dsn, "ANALYZE logs")
    with pytest.raises(psycopg.errors.UniqueViolation):  # leaves an invalid index behind, as in production
        execute(dsn, "CREATE UNIQUE INDEX CONCURRENTLY dup_values_v_key ON dup_values (v)")
    reset_statements(dsn)
    run_statements(dsn, "SELECT count(*) FROM accounts WHERE region = %s", (7,), times=45)
    run_statements(dsn, "SELECT * FROM accounts WHERE email = %s", ("a5@example.org",), times=3)
    run_statements(dsn, "SELECT pg_sleep(%s)", (0.12,), times=2)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET work_mem = '64kB'")
        conn.execute("SELECT * FROM accounts ORDER BY region, email").fetchall()
    wait_for(lambda: table_stat(dsn, "accounts", "seq_tup_read") >= 45 * 30000, message="scan statistics")
    wait_for(lambda: table_stat(dsn, "logs", "n_dead_tup") >= 15000, message="dead tuples")
    yield dsn
    pg.drop_database(dsn)


@pytest.fixture(scope="module")
def audit(audit_db):
    idle = psycopg.connect(audit_db)
    idle.execute("SELECT 1 AS idle_here")  # psycopg opened a transaction: this session is now idle in it
    busy = psycopg.connect(audit_db, autocommit=True)
    sleeper = threading.Thread(target=lambda: _sleep(busy), daemon=True)
    sleeper.start()
    wait_for(lambda: _active(audit_db, "pg_sleep(30)"), message="a long statement")
    try:
        yield audit_database(audit_db, AuditOptions(thresholds=THRESHOLDS)), idle.info.backend_pid, \
            busy.info.backend_pid
    finally:
        busy.cancel_safe()
        sleeper.join(10)
        idle.close()
        busy.close()


def _sleep(conn) -> None:
    try:
        conn.execute("SELECT pg_sleep(30)")
    except psycopg.errors.QueryCanceled:
        pass


def _active(dsn: str, text: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
                            (f"%{text}%",)).fetchone()[0] == 1


def of_kind(result, kind: str):
    return [f for f in result.findings if f.kind == kind]


def email_indexes(dsn: str) -> tuple[str, str]:
    """(the twin index queries used, the one they did not): the planner picks either."""
    with psycopg.connect(dsn) as conn:
        rows = dict(conn.execute("SELECT indexrelname, idx_scan FROM pg_stat_user_indexes "
                                 "WHERE indexrelname LIKE 'accounts_email_%'").fetchall())
    used, unused = sorted(rows, key=lambda name: -rows[name])
    assert rows[used] > 0 and rows[unused] == 0
    return f"public.{used}", f"public.{unused}"


def test_index_health(audit, audit_db):
    result, _, _ = audit
    kept, dropped = email_indexes(audit_db)
    assert [(f.subject, f.data["covered_by"], f.fix) for f in of_kind(result, "duplicate_index")] == [
        (dropped, kept, f"DROP INDEX CONCURRENTLY {dropped};")]
    assert [(f.subject, f.data["covered_by"]) for f in of_kind(result, "overlapping_index")] == [
        ("public.accounts_plan_idx", "public.accounts_plan_score_idx")]
    (invalid,) = of_kind(result, "invalid_index")
    assert invalid.subject == "public.dup_values_v_key"
    assert invalid.fix.startswith("DROP INDEX CONCURRENTLY public.dup_values_v_key; then run its definition again: "
                                  "CREATE UNIQUE INDEX CONCURRENTLY dup_values_v_key ON public.dup_values")
    (unused,) = of_kind(result, "unused_index")  # the primary key, the used and the already-reported are not
    assert unused.subject == "public.accounts_plan_score_idx" and unused.data["size_bytes"] > 0
    assert "never reset" in unused.detail and unused.data["stats_reset"] is False
    assert unused.data["stats_basis"] == "server_start"
    assert of_kind(result, "index_stats_too_young") == []


def test_young_statistics_give_one_notice_and_no_drop_advice(audit_db):
    from takealook.analyzers.db.connection import connect
    from takealook.analyzers.db.index_health import index_health

    with connect(audit_db) as session:
        uptime = session.query_one("SELECT extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS s")["s"]
        findings = index_health(session, Thresholds())  # the default: 7 days of statistics
    assert uptime < 7 * 86400  # the test cluster is young: the gate must hold
    kinds = [f.kind for f in findings]
    assert "unused_index" not in kinds and "overlapping_index" not in kinds
    (notice,) = [f for f in findings if f.kind == "index_stats_too_young"]
    assert notice.severity == "info" and notice.data["basis"] == "server_start"
    assert abs(notice.data["stats_age_s"] - uptime) < 60 and notice.data["min_stats_age_s"] == 7 * 86400
    assert "--min-stats-age" in notice.detail and not (notice.fix or "").startswith("DROP")
    # What needs no usage history is still said: the exact duplicate and the invalid index.
    assert {"duplicate_index", "invalid_index"} <= set(kinds)


def test_a_statistics_reset_is_the_evidence_once_there_is_one(pg_db):
    from takealook.analyzers.db.connection import connect
    from takealook.analyzers.db.index_health import index_health

    execute(pg_db, "CREATE TABLE t (a int, b int); CREATE INDEX t_a ON t (a); CREATE INDEX t_a_b ON t (a, b); "
                   "SELECT pg_stat_reset()")
    with connect(pg_db) as session:
        findings = index_health(session, Thresholds())
        (notice,) = [f for f in findings if f.kind == "index_stats_too_young"]
        assert notice.data["basis"] == "stats_reset" and notice.data["stats_age_s"] < 120
        assert "pg_stat_database.stats_reset" in notice.detail and len(findings) == 1
        judged = {f.kind: f.subject for f in index_health(session, Thresholds(min_stats_age_s=0))}
    assert judged == {"overlapping_index": "public.t_a", "unused_index": "public.t_a_b"}


def test_tables(audit):
    result, _, _ = audit
    subjects = {kind: [f.subject for f in of_kind(result, kind)]
                for kind in ("dead_tuples", "table_bloat", "never_analyzed", "seq_scan_heavy")}
    assert subjects == {"dead_tuples": ["public.logs"], "table_bloat": ["public.bloated"],
                        "never_analyzed": ["public.never"], "seq_scan_heavy": ["public.accounts"]}
    (heavy,) = of_kind(result, "seq_scan_heavy")
    assert heavy.fix == "CREATE INDEX CONCURRENTLY accounts_region_idx ON public.accounts (region);"
    (bloat,) = of_kind(result, "table_bloat")
    assert bloat.data["estimated"] and bloat.data["bloat_bytes"] >= 0.8 * bloat.data["size_bytes"]
    assert 0 < result.tables.cache_hit_ratio <= 1
    assert {t.table for t in result.tables.tables} >= {"public.accounts", "public.logs", "public.bloated"}


def test_statements(audit):
    result, _, _ = audit
    report = result.statements
    assert report.available and report.version
    every = [s for stats in report.top.values() for s in stats]
    assert every and not any("takealook" in s.query for s in every)
    # The fixture's own pg_stat_statements_reset(...) is in the view, and in no ranking or finding.
    assert any("pg_stat_statements_reset" in s.query for s in report.all)
    assert not any("pg_stat_statements_reset" in s.query for s in every)
    assert not any("pg_stat_statements_reset" in (f.data or {}).get("query", "") for f in result.findings)
    assert all(s.fingerprint == fingerprint(s.query) and s.queryid is not None for s in every)
    (slow,) = of_kind(result, "slow_statement")
    assert slow.data["fingerprint"] == fingerprint("SELECT pg_sleep(0.12)") and slow.data["calls"] == 2
    assert report.top["mean_time"][0].query == "SELECT pg_sleep($1)"
    assert report.top["calls"][0].query == "SELECT count(*) FROM accounts WHERE region = $1"
    assert report.top["temp_blocks_written"][0].query == "SELECT * FROM accounts ORDER BY region, email"
    (spill,) = of_kind(result, "temp_spill")
    assert spill.data["temp_blks_written"] > 0
    (missing,) = of_kind(result, "missing_index")
    assert missing.data["fingerprints"] == [fingerprint("SELECT count(*) FROM accounts WHERE region = 1")]


def test_sessions(audit):
    result, idle_pid, busy_pid = audit
    assert [f.data["pid"] for f in of_kind(result, "idle_in_transaction")] == [idle_pid]
    (long,) = of_kind(result, "long_running_statement")
    assert long.data["pid"] == busy_pid and long.fix.startswith(f"SELECT pg_cancel_backend({busy_pid});")
    assert result.sessions.idle_in_transaction == 1 and result.sessions.connections >= 3


def test_findings_are_ordered_and_rendered(audit, audit_db):
    result, _, _ = audit
    _, dropped = email_indexes(audit_db)
    ranks = [f.rank for f in result.findings]
    assert ranks == sorted(ranks)
    from takealook.analyzers.db.audit import AuditReport

    report = AuditReport((result,))
    data = audit_contract(report)
    assert list(data) == ["schema_version", "databases"] and data["schema_version"] == 1
    (db,) = data["databases"]
    assert {"dsn", "database", "server_version", "error", "findings", "statements", "indexes", "tables",
            "sessions"} <= set(db)
    assert all({"kind", "severity", "title", "fix"} <= set(f) for f in db["findings"])
    assert db["indexes"]["indexes"][0]["columns"] == ["region"]
    assert '"schema_version": 1' in to_json(data).splitlines()[1]
    text = render(audit_document(report), "text")
    html = render(audit_document(report), "html")
    assert "accounts_region_idx" in text and f"DROP INDEX CONCURRENTLY {dropped};" in text
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html


# --------------------------------------------------------------------------- missing extensions


@pytest.fixture(scope="module")
def bare_db(pg):
    """A database without pg_stat_statements and without HypoPG (both available on the server)."""
    dsn = pg.create_database("bare")
    execute(dsn, "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status text); "
                 "INSERT INTO orders SELECT g, g % 3000, 's' || (g % 2) FROM generate_series(1, 30000) g")
    execute(dsn, "VACUUM ANALYZE orders")
    yield dsn
    pg.drop_database(dsn)


def test_without_pg_stat_statements_the_rest_still_runs(bare_db):
    result = audit_database(bare_db)
    (missing,) = [f for f in of_kind(result, "missing_extension") if f.subject == "pg_stat_statements"]
    assert missing.fix == "CREATE EXTENSION pg_stat_statements;"
    assert not result.statements.available and result.index_advice.indexes == ()
    assert result.tables is not None and of_kind(result, "superuser_role")


def test_without_hypopg_advice_is_unverified(bare_db):
    advice = advise_indexes(bare_db, ["SELECT * FROM orders WHERE customer_id = $1",
                                      "SELECT * FROM orders WHERE status = $1"], IndexOptions())
    assert not advice.verified
    assert [(i.table, i.columns, i.verified) for i in advice.indexes] == [("public.orders", ("customer_id",), False)]
    assert 8192 < advice.indexes[0].size_bytes < 2_000_000  # estimated from pg_stats widths
    assert advice.indexes[0].statements[0].cost_after is None
    assert [(s.code, s.query) for s in advice.skipped] == [("no_saving", "SELECT * FROM orders WHERE status = $1")]
    kinds = {(f.kind, f.subject): f.fix for f in advice.findings}
    assert kinds[("missing_extension", "hypopg")] == (
        "HypoPG is installed on the server but not in this database: run CREATE EXTENSION hypopg")
    assert kinds[("missing_extension", "pg_stat_statements")] == "CREATE EXTENSION pg_stat_statements;"
