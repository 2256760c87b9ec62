"""How long ``db audit`` and ``db indexes`` take on a workload of 1,000 distinct statements over 50 tables.

A private PostgreSQL (``PrivateCluster``: pg_stat_statements preloaded,
HypoPG installed) gets 50 tables of ``--rows`` rows each (generate_series,
then VACUUM ANALYZE) and 1,000 distinct statements, each run ``--calls``
times so pg_stat_statements holds them all: equality on one or two columns,
IN lists, ranges, LIKE prefixes, ORDER BY ... LIMIT, joins between
neighbouring tables, and UPDATEs, each with several select lists. Then it
times the CLI as a user runs it (``takealook db audit`` and ``takealook db
indexes``, JSON to a file) and reads the number of EXPLAIN calls from the
output. The baseline, measured in the same run: one EXPLAIN of every statement
with psycopg, the least any advisor has to do.

    python bench/db_audit.py [--tables 50] [--statements 1000] [--rows 10000] [--calls 5]

Target (issue 4): each command under 60 s on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from takealook.pgcluster import PrivateCluster  # noqa: E402

BIN = Path(sys.executable).parent
WHERES = (
    "a = %s", "b = %s", "e = %s", "a = %s AND b = %s", "b = %s AND e = %s", "a IN (%s, %s, %s)",
    "d BETWEEN %s AND %s", "c LIKE 'v12%%'", "e = %s ORDER BY d DESC LIMIT 10", "f IS NULL",
)


def table_sql(index: int, rows: int) -> str:
    name = f"t{index:02d}"
    return (f"CREATE TABLE {name} (id int PRIMARY KEY, a int, b int, c text, d timestamptz, e int, f int, "
            f"parent_id int); "
            f"INSERT INTO {name} SELECT g, g % {rows // 4}, g % 97, 'v' || g, "
            f"timestamptz '2024-01-01' + g * interval '1 minute', g % {rows // 10}, "
            f"CASE WHEN g % 200 = 0 THEN NULL ELSE g END, g % {rows} + 1 FROM generate_series(1, {rows}) g")


def shapes(name: str, other: str) -> list[tuple[str, tuple]]:
    """Twenty statements on one table that pg_stat_statements tells apart (shapes, not constants)."""
    out = [(f"SELECT * FROM {name} WHERE {where}", _params(where)) for where in WHERES]
    out += [(f"SELECT id, a FROM {name} WHERE {where}", _params(where)) for where in WHERES[:6]]
    for column in ("a", "b"):
        out.append((f"SELECT x.id, y.c FROM {name} x JOIN {other} y ON y.parent_id = x.id WHERE x.{column} = %s",
                    (3,)))
    for column in ("a", "e"):
        out.append((f"UPDATE {name} SET c = c WHERE {column} = %s", (-1,)))
    return out


def statements(tables: int, count: int) -> list[tuple[str, tuple]]:
    per_table = -(-count // tables)
    work = [shapes(f"t{t:02d}", f"t{(t + 1) % tables:02d}")[:per_table] for t in range(tables)]
    return [statement for table in work for statement in table][:count]


def _params(where: str) -> tuple:
    if "BETWEEN" in where:
        return ("2024-01-02", "2024-01-03")
    return tuple(3 for _ in range(where.count("%s")))


def prepare(cluster: PrivateCluster, args) -> tuple[str, list]:
    dsn = cluster.create_database("bench")
    work = statements(args.tables, args.statements)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg")
        for index in range(args.tables):
            conn.execute(table_sql(index, args.rows))
        conn.execute("VACUUM ANALYZE")
        conn.execute("SELECT pg_stat_statements_reset()")
        for sql, params in work:
            for _ in range(args.calls):
                conn.execute(sql, params)
        held = conn.execute("SELECT count(*) FROM pg_stat_statements WHERE query ~ '\\mt[0-9][0-9]\\M'").fetchone()[0]
    print(f"workload: {args.tables} tables x {args.rows:,} rows; {len(work)} statements, "
          f"{held} distinct in pg_stat_statements, {args.calls} calls each")
    return dsn, work


def baseline(dsn: str, work: list) -> float:
    """One EXPLAIN (generic plan) per statement over one connection: the floor for any advisor."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("SET pg_stat_statements.track = 'none'")  # or its entries would evict the workload's
        for number, (sql, params) in enumerate(work):
            dollar = sql
            for position in range(1, len(params) + 1):
                dollar = dollar.replace("%s", f"${position}", 1)
            dollar = dollar.replace("%%", "%")
            conn.execute(f"PREPARE b{number} AS {dollar}")
            args = f"({', '.join(['NULL'] * len(params))})" if params else ""
            conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE b{number}{args}")
            conn.execute(f"DEALLOCATE b{number}")
    return time.perf_counter() - started


def timed(argv: list[str], output: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([str(BIN / "takealook"), *argv, "--format", "json", "-o", str(output)],
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"takealook {' '.join(argv[:2])} failed: {result.stderr.strip()}")
    return elapsed, json.loads(output.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=50)
    parser.add_argument("--statements", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    with PrivateCluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        dsn, work = prepare(cluster, args)
        floor = baseline(dsn, work)
        audit_s, audit = timed(["db", "audit", "--dsn", dsn], Path(tmp) / "audit.json")
        indexes_s, indexes = timed(["db", "indexes", "--dsn", dsn], Path(tmp) / "indexes.json")
    database = audit["databases"][0]
    skipped: dict[str, int] = {}
    for item in indexes["skipped"]:
        skipped[item["code"]] = skipped.get(item["code"], 0) + 1
    print(f"baseline: one generic-plan EXPLAIN per statement: {floor:6.1f} s")
    print(f"db audit:   {audit_s:6.1f} s  ({audit_s / floor:4.1f}x baseline)  "
          f"EXPLAIN calls {database['indexes']['explain_calls']:,}  findings {len(database['findings'])}")
    print(f"db indexes: {indexes_s:6.1f} s  ({indexes_s / floor:4.1f}x baseline)  "
          f"EXPLAIN calls {indexes['explain_calls']:,}  statements {indexes['statements_considered']:,}  "
          f"indexes advised {len(indexes['indexes'])}")
    print("skipped: " + ", ".join(f"{n} {code}" for code, n in sorted(skipped.items())))
    verdict = "met" if max(audit_s, indexes_s) < 60 else "MISSED"
    print(f"target (each under 60 s): {verdict}. The machine is shared: figures are noisy.")


if __name__ == "__main__":
    main()
