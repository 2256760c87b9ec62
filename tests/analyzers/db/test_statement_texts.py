"""Statement texts with comments, semicolons and odd bytes in every path of the index advice.

A ``-- comment`` at the end of a ``$n`` statement once swallowed the EXECUTE and
DEALLOCATE sent after the PREPARE (``IndexError`` in ``explain.py``, the whole
audit lost). Here: the same statement with comments anywhere plans exactly as
without them (hypothesis inserts line and block comments between tokens), any
text at all ends as advice or as a skipped entry with its reason, and the
three ways statements arrive (``--query``, ``--queries-file``,
pg_stat_statements' workload) all advise the index, in ``db indexes`` and
``db audit``.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from takealook.analyzers.db.advice_types import SOURCE_GIVEN
from takealook.analyzers.db.connection import connect
from takealook.analyzers.db.explain import Explainer, plannable
from takealook.analyzers.db.index_advice import advise
from takealook.analyzers.db.options import IndexOptions
from takealook.analyzers.db.parse import parse_statement
from tests.analyzers.db.conftest import execute, reset_statements
from tests.analyzers.db.test_cli import takealook

BASES = [
    "SELECT * FROM orders WHERE customer_id = $1",
    "SELECT id, status FROM orders WHERE customer_id = $1 AND status = $2 ORDER BY id LIMIT 10",
    "UPDATE orders SET status = $1 WHERE customer_id = $2",
    "SELECT count(*) FROM orders WHERE status = 'paid' AND customer_id = 7",
    "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.email = $1",
]
COMMENTS = st.sampled_from([
    "-- trailing words\n", "--\n", "-- has ; and $1 and 'quote\n", "/* block */", "/* multi\nline */",
    "/* nested /* inner */ still */", "/* ; -- */", "/*traceparent='00-abc-def-01'*/", "/**/",
])


def _tokens(sql: str) -> list[str]:
    return sql.split(" ")


@st.composite
def commented(draw, base: str | None = None):
    """``base`` with comments between some tokens, at the start and at the end, maybe a trailing ``;``."""
    base = base or draw(st.sampled_from(BASES))
    words = _tokens(base)
    out = []
    if draw(st.booleans()):
        out.append(draw(COMMENTS))
    for word in words:
        out.append(word)
        if draw(st.integers(0, 4)) == 0:
            out.append(draw(COMMENTS))
    if draw(st.booleans()):
        out.append(";")
    out.append(draw(st.sampled_from(["", " -- end of statement", "-- end", " /* end */", "\n-- end\n"])))
    return base, " ".join(out)


def _squeeze(text: str) -> str:
    return " ".join(text.split())


@given(commented())
@settings(max_examples=300, deadline=None)
def test_comments_removed_leave_the_statement(pair):
    base, text = pair
    assert _squeeze(plannable(text)) == base


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_plannable_takes_any_text(text):
    assert isinstance(plannable(text), str)


@pytest.fixture(scope="module")
def texts_db(pg):
    dsn = pg.create_database("texts")
    execute(dsn, "CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg; "
                 "CREATE TABLE customers (id int PRIMARY KEY, email text); "
                 "INSERT INTO customers SELECT g, 'c' || g || '@example.org' FROM generate_series(1, 20000) g; "
                 "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status text); "
                 "INSERT INTO orders SELECT g, g % 3000, 's' || (g % 2) FROM generate_series(1, 30000) g")
    execute(dsn, "VACUUM ANALYZE")
    yield dsn
    pg.drop_database(dsn)


@pytest.fixture(scope="module")
def session(texts_db):
    with connect(texts_db) as opened:
        yield opened


@pytest.fixture(scope="module")
def base_costs(session):
    explainer = Explainer(session)
    return {base: explainer.explain(parse_statement(base)).total_cost for base in BASES}


@given(pair=commented())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_commented_statement_plans_like_the_bare_one(session, base_costs, pair):
    base, text = pair
    parsed = parse_statement(text)
    assert parsed.parsed, parsed.error
    assert Explainer(session).explain(parsed).total_cost == base_costs[base]


FRAGMENTS = st.sampled_from([
    "SELECT", "*", "FROM", "orders", "customers", "WHERE", "customer_id", "=", "$1", "$2", "%s", "AND", "OR",
    "status", "'x'", "'", '"', "7", "--", "-- c\n", "/*", "*/", "/* c */", ";", "\n", "(", ")", ",",
    "ORDER BY id", "LIMIT 5", "$$", "$tag$ body $tag$", "E'\\''", "::int", "\x00", "é", "UPDATE", "SET",
    "DELETE", "INSERT INTO orders VALUES", "PREPARE", "EXECUTE", "DEALLOCATE", "EXPLAIN",
])


@given(st.lists(FRAGMENTS, min_size=1, max_size=14).map(" ".join))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_text_is_advised_or_skipped_with_a_reason(session, text):
    options = IndexOptions(use_workload=False)
    advice = advise(session, [text], options)
    advised = [e for index in advice.indexes for e in index.statements]
    skipped = [s for s in advice.skipped if s.source == SOURCE_GIVEN]
    assert len(advised) + len(skipped) == 1, (advised, skipped)
    assert all(s.reason and s.code for s in skipped)


WITH_COMMENTS = [
    "SELECT * FROM orders WHERE customer_id = $1 -- by customer",
    "/* lead */ SELECT * FROM orders /* mid */ WHERE status = $1 AND customer_id = $2; -- end",
    "SELECT * FROM orders -- mid\nWHERE customer_id = $1 /* end */",
]


def _advised_queries(document: dict) -> list[str]:
    return [s["query"] for index in document["indexes"] for s in index["statements"]]


def test_query_flags_with_comments_are_advised(texts_db):
    argv = ["db", "indexes", "--dsn", texts_db, "--format", "json"]
    for query in WITH_COMMENTS:
        argv += ["--query", query]
    out = takealook(*argv)
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert sorted(_advised_queries(document)) == sorted(WITH_COMMENTS), document["skipped"]
    assert [i["columns"] for i in document["indexes"]] == [["customer_id"]]


def test_queries_file_with_comments_is_advised(texts_db, tmp_path):
    path = tmp_path / "statements.sql"
    path.write_text("-- the statements of the orders page\n"
                    "SELECT * FROM orders WHERE customer_id = $1 -- by customer\n;\n"
                    "/* list */ SELECT * FROM orders /* ; */ WHERE status = 's1' AND customer_id = 9;  -- end\n"
                    "SELECT * FROM orders WHERE customer_id = $1 /* closing;\n comment */;\n")
    out = takealook("db", "indexes", "--dsn", texts_db, "--queries-file", str(path), "--format", "json")
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert len(_advised_queries(document)) == 3, document["skipped"]


def _run_workload(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(6):
            conn.execute("SELECT * FROM orders WHERE customer_id = %s -- by customer", (5,))
            conn.execute("/* lead */ SELECT id FROM orders WHERE status = %s /* mid */ AND customer_id = %s "
                         "-- trailing", ("s1", 9))
            conn.execute("SELECT * FROM customers WHERE email = 'c5@example.org' -- literal, normalized")


def test_workload_with_comments_in_db_indexes_and_db_audit(texts_db, pg):
    reset_statements(texts_db)
    _run_workload(texts_db)
    out = takealook("db", "indexes", "--dsn", texts_db, "--format", "json")
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    queries = _advised_queries(document)
    assert any("-- by customer" in q for q in queries) and any("-- trailing" in q for q in queries), document
    assert {tuple(i["columns"]) for i in document["indexes"]} == {("customer_id",), ("email",)}
    assert not [s for s in document["skipped"] if s["code"] == "cannot_plan"], document["skipped"]

    other = pg.create_database("texts_other")
    try:
        execute(other, "CREATE EXTENSION pg_stat_statements; CREATE TABLE t (id int)")
        out = takealook("db", "audit", "--dsn", texts_db, "--dsn", other, "--format", "json")
        assert out.returncode == 0, out.stderr
        audit = json.loads(out.stdout)
        sections = audit["databases"]
        assert [s.get("error") for s in sections] == [None, None], sections
        kinds = {f["kind"] for f in sections[0]["findings"]}
        assert "missing_index" in kinds and "check_failed" not in kinds, sections[0]["findings"]
    finally:
        pg.drop_database(other)


def test_an_unexpected_error_costs_one_part_not_the_audit(texts_db, monkeypatch):
    """The safety net under everything above: a bug in one part is that part's check_failed finding."""
    from takealook.analyzers.db import audit as audit_module
    from takealook.analyzers.db.options import AuditOptions

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(audit_module, "advise", broken)
    report = audit_module.audit_databases([texts_db, texts_db], AuditOptions())
    assert report.audited == 2
    for database in report.databases:
        failed = [f for f in database.findings if f.kind == "check_failed"]
        assert [f.data["check"] for f in failed] == ["index advice"]
        assert "IndexError" in failed[0].detail
        assert database.statements is not None and database.tables is not None


def test_an_unexpected_error_on_one_database_keeps_the_others(texts_db, monkeypatch):
    from takealook.analyzers.db import audit as audit_module
    from takealook.analyzers.db.options import AuditOptions

    real = audit_module.audit_database

    def first_fails(dsn, options=None, progress=None):
        if dsn == "dbname=broken":
            raise KeyError("plan")
        return real(dsn, options, progress)

    monkeypatch.setattr(audit_module, "audit_database", first_fails)
    report = audit_module.audit_databases(["dbname=broken", texts_db], AuditOptions(advise=False))
    broken, audited = report.databases
    assert broken.error.startswith("unexpected KeyError") and audited.error is None and audited.statements
