"""Pure parts of the database audit: no server needed."""

from __future__ import annotations

from types import SimpleNamespace

from takealook.analyzers.db.candidates import candidates_for
from takealook.analyzers.db.catalog import ColumnInfo, Relation, quote_ident
from takealook.analyzers.db.connection import mask_dsn, mask_secrets
from takealook.analyzers.db.parse import parse_statement, split_statements
from takealook.analyzers.db.predicates import ColumnUse, TableAccess
from takealook.analyzers.db.statements import _privilege_findings, statement_columns


def test_pg_stat_statements_columns_by_version():
    v17 = statement_columns({"total_time", "blk_read_time"})  # 1.7 and older
    assert v17["total"] == "s.total_time" and v17["blk_read"] == "sum(s.blk_read_time)::float8"
    assert v17["toplevel"] == "NULL::bool" and v17["hypopg"] == ""
    v18 = statement_columns({"total_exec_time", "total_plan_time", "blk_read_time"})
    assert v18["total"] == "(s.total_exec_time + s.total_plan_time)" and v18["toplevel"] == "NULL::bool"
    v110 = statement_columns({"total_exec_time", "total_plan_time", "blk_read_time", "toplevel"})
    assert v110["toplevel"] == "bool_or(s.toplevel)" and "hypopg_" not in v110["hypopg"]
    v111 = statement_columns({"total_exec_time", "total_plan_time", "shared_blk_read_time", "toplevel"})
    assert v111["blk_read"] == "sum(s.shared_blk_read_time)::float8"


def test_hidden_statements_say_what_to_grant():
    (finding,) = _privilege_findings(SimpleNamespace(user="App User"), 12)
    assert finding.kind == "missing_privilege" and finding.fix == 'GRANT pg_read_all_stats TO "App User";'
    assert finding.data["hidden_statements"] == 12


def test_mask_dsn_forms():
    assert mask_dsn("host=db password=s3cret dbname=app") == "host=db password=**** dbname=app"
    assert mask_dsn("host=db password='a b\\'c' dbname=app") == "host=db password=**** dbname=app"
    assert mask_dsn("postgresql://app:p%40ss@db:5432/x?password=zz&sslmode=require") == (
        "postgresql://app:****@db:5432/x?password=****&sslmode=require")
    assert mask_dsn("postgres://app@db/x") == "postgres://app@db/x"
    assert mask_secrets("auth failed for p@ss and a b'c", "postgresql://app:p%40ss@db/x") == (
        "auth failed for **** and a b'c")
    assert mask_secrets("auth failed for a b'c", "host=db password='a b\\'c'") == "auth failed for ****"


def test_parse_fallback_lists_truncated_statements():
    truncated = parse_statement("SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.name IN ('Al")
    assert truncated.kind == "unparsed" and not truncated.parsed and truncated.fingerprint is None
    assert truncated.tables_guess == ("orders", "customers")
    given = parse_statement("SELECT * FROM t WHERE a = %s AND b = %(b)s AND c = %(b)s")
    assert given.param_count == 2 and given.sql.endswith("a = $1 AND b = $2 AND c = $2")
    assert parse_statement("COMMIT").is_session_noise and not parse_statement("SELECT 1").is_session_noise
    assert split_statements("-- note\nSELECT 1;\n\nSELECT ';';  -- tail\n") == ["SELECT 1", "SELECT ';'"]


def test_quote_ident():
    assert [quote_ident(n) for n in ("orders", "Orders", "order", "user_1", "1x", "é")] == [
        "orders", '"Orders"', '"order"', "user_1", '"1x"', '"é"']


def _relation(**distinct) -> Relation:
    columns = tuple(ColumnInfo(name, "integer", True, n, 4, 0.0) for name, n in distinct.items())
    return Relation(1, "public", "t", "r", columns, 100_000.0, 1000, (), None, (), None)


def test_equality_before_in_before_range_before_sort():
    relation = _relation(a=50.0, b=90_000.0, c=1000.0, d=100_000.0, e=10.0)
    uses = (ColumnUse("c", "range"), ColumnUse("a", "eq"), ColumnUse("d", "sort", descending=True),
            ColumnUse("e", "in"), ColumnUse("b", "eq"))
    variants = [c.columns for c in candidates_for(TableAccess(relation, "t", uses), max_columns=4)]
    assert variants == [("b", "a", "e", "c"), ("b", "a", "e", "d"), ("b", "a"), ("b",)]
    sort_variant = candidates_for(TableAccess(relation, "t", uses), max_columns=4)[1]
    assert sort_variant.descending == (False, False, False, False)  # one direction: a backward scan serves DESC
    assert sort_variant.equality_prefix == 3


def test_group_by_and_joins_make_their_own_variants():
    relation = _relation(a=50.0, j=100_000.0, g=20.0)
    uses = (ColumnUse("a", "eq"), ColumnUse("j", "join"), ColumnUse("g", "group"))
    variants = [c.columns for c in candidates_for(TableAccess(relation, "t", uses))]
    assert variants == [("a", "g"), ("j", "a", "g"), ("a",)]
