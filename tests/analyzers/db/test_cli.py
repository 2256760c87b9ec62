"""``takealook db audit|indexes`` end to end: JSON contracts, exit codes, bad input, masked passwords."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading

import psycopg
import pytest

from takealook.pgcluster import free_port
from tests.analyzers.db.conftest import execute, reset_statements, run_statements
from tests.conftest import script
from tests.contracts import check

SECRET = "hunter2-not-shown"


@pytest.fixture(scope="module")
def cli_db(pg):
    dsn = pg.create_database("cli")
    execute(dsn, "CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg; "
                 "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status text); "
                 "INSERT INTO orders SELECT g, g % 3000, 's' || (g % 2) FROM generate_series(1, 30000) g")
    execute(dsn, "VACUUM ANALYZE orders")
    reset_statements(dsn)
    run_statements(dsn, "SELECT * FROM orders WHERE customer_id = %s", (5,))
    yield dsn
    pg.drop_database(dsn)


def takealook(*argv, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    full_env.update(env or {})
    return subprocess.run([script("takealook"), *argv], capture_output=True, text=True, env=full_env, timeout=120)


def test_indexes_json_is_the_contract(cli_db):
    out = takealook("db", "indexes", "--dsn", cli_db, "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    check("db-indexes", data)  # docs/json.md
    assert list(data)[:3] == ["schema_version", "indexes", "skipped"] and data["schema_version"] == 1
    (index,) = data["indexes"]
    assert {k: index[k] for k in ("table", "columns", "using", "verified")} == {
        "table": "public.orders", "columns": ["customer_id"], "using": "btree", "verified": True}
    assert index["create_sql"] == "CREATE INDEX CONCURRENTLY orders_customer_id_idx ON public.orders (customer_id);"
    assert index["size_bytes"] > 0
    (statement,) = index["statements"]
    assert {"query", "calls", "cost_before", "cost_after", "saving_pct", "fingerprint", "queryid"} <= set(statement)
    assert statement["calls"] == 6 and statement["saving_pct"] >= 50
    assert all({"query", "reason", "code"} <= set(s) for s in data["skipped"])


def test_indexes_bad_statements_each_get_a_line(cli_db):
    out = takealook("db", "indexes", "--dsn", cli_db, "--query", "SELECT * FROM nope WHERE a = 1",
                    "--query", "SELECT * FROM orders WHERE", "--format", "json")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("takealook: statement ") for line in lines)
    assert "relation nope does not exist" in lines[0] and "does not parse" in lines[1]
    assert {s["code"] for s in json.loads(out.stdout)["skipped"]} == {"missing_table", "unparsed"}


def test_indexes_one_bad_statement_does_not_stop_the_rest(cli_db, tmp_path):
    queries = tmp_path / "q.sql"
    queries.write_text("-- from the slow log\nSELECT * FROM orders WHERE customer_id = 7;\n"
                       "SELECT * FROM nope WHERE a = 1;\n")
    out = takealook("db", "indexes", "--dsn", cli_db, "--queries-file", str(queries), "--format", "json")
    assert out.returncode == 0
    assert len(out.stderr.strip().splitlines()) == 1
    data = json.loads(out.stdout)
    assert [i["columns"] for i in data["indexes"]] == [["customer_id"]]
    assert data["indexes"][0]["statements"][0]["source"] == "argument"


def test_audit_reaches_what_it_can_and_masks_passwords(cli_db):
    dead = f"host=127.0.0.1 port={free_port()} user=app password={SECRET} connect_timeout=3"
    out = takealook("db", "audit", "--dsn", cli_db, "--dsn", dead, "--format", "json")
    assert out.returncode == 0
    assert SECRET not in out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("takealook: host=127.0.0.1") and "password=****" in line and "Connection refused" in line
    check("db-audit", json.loads(out.stdout))  # docs/json.md: an audited and an unreachable database
    first, second = json.loads(out.stdout)["databases"]
    assert first["error"] is None and first["findings"]
    assert second["error"] and second["dsn"].endswith("password=**** connect_timeout=3")


def test_audit_exits_2_when_nothing_could_be_audited():
    uri = f"postgresql://app:{SECRET}@127.0.0.1:{free_port()}/orders?connect_timeout=3"
    out = takealook("db", "audit", "--dsn", uri)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("takealook: postgresql://app:****@127.0.0.1:") and SECRET not in out.stderr


@pytest.fixture
def not_postgres():
    """A TCP server on loopback that answers like a web server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def test_a_server_that_is_not_postgres(not_postgres):
    out = takealook("db", "indexes", "--dsn", f"host=127.0.0.1 port={not_postgres} password={SECRET}")
    assert out.returncode == 2
    assert "is this a PostgreSQL server?" in out.stderr and SECRET not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_bad_usage():
    assert takealook("db", "indexes", "--dsn", "host=x password", "--query", "SELECT 1").returncode == 2
    bad = takealook("db", "indexes", "--min-saving", "lots", "--query", "SELECT 1")
    assert bad.returncode == 2 and "--min-saving" in bad.stderr
    assert takealook("db", "audit", "--top", "0").returncode == 2
    age = takealook("db", "audit", "--min-stats-age", "a week")
    assert age.returncode == 2 and "--min-stats-age 'a week': expected an age such as 7d" in age.stderr


def test_libpq_environment_instead_of_dsn(cli_db, tmp_path):
    params = psycopg.conninfo.conninfo_to_dict(cli_db)
    env = {"PGHOST": params["host"], "PGPORT": str(params["port"]), "PGDATABASE": params["dbname"],
           "PGUSER": params["user"], "PGPASSWORD": SECRET}
    target = tmp_path / "advice.html"
    out = takealook("db", "indexes", "-o", str(target), env=env)
    assert out.returncode == 0, out.stderr
    html = target.read_text()
    assert html.startswith("<!DOCTYPE html>") and "orders_customer_id_idx" in html and SECRET not in html
    assert f"host={params['host']} port={params['port']} dbname={params['dbname']}" in html
    chosen = f"host={params['host']} port={params['port']} dbname={params['dbname']} user={params['user']}"
    assert f"takealook: no --dsn: audited {chosen} (chosen by libpq" in out.stderr
    md = takealook("db", "audit", "--format", "md", "--min-stats-age", "0", env=env)
    assert md.returncode == 0 and md.stdout.startswith("# Database audit") and SECRET not in md.stdout
    # Which database libpq chose is said once, on stderr, without the password.
    (line,) = [line for line in md.stderr.splitlines() if "no --dsn" in line]
    assert line == f"takealook: no --dsn: audited {chosen} (chosen by libpq from the PG* environment and its defaults)"
    assert SECRET not in md.stderr
