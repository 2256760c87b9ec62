"""Fixtures of the database audit's tests: a filled database, statements run so pg_stat_statements sees them.

``advice_db`` is one database per module (tables filled with generate_series,
then VACUUM ANALYZE) shared by the index-advice cases; ``run_statements``
runs a statement several times and ``reset_statements`` clears
pg_stat_statements for one database only, so each case sees its own workload.
"""

from __future__ import annotations

import psycopg
import pytest

ADVICE_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE EXTENSION IF NOT EXISTS hypopg;
CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL, name text, region text,
                        created_at timestamptz, verified_at timestamptz);
INSERT INTO customers
SELECT g, 'user' || g || '@example.org', 'name ' || g, 'r' || (g % 5),
       timestamptz '2024-01-01' + g * interval '1 minute',
       CASE WHEN g % 100 = 0 THEN NULL ELSE timestamptz '2024-06-01' END
FROM generate_series(1, 20000) g;
CREATE INDEX customers_created_at_idx ON customers (created_at);
CREATE VIEW verified_customers AS SELECT id, email, region FROM customers WHERE verified_at IS NOT NULL;

CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL, total int NOT NULL,
                     created_at timestamptz NOT NULL, note text, code text COLLATE "C", ref varchar(20));
INSERT INTO orders
SELECT g, g % 20000 + 1, (ARRAY['new', 'paid', 'shipped', 'done'])[g % 4 + 1], g % 1000,
       timestamptz '2024-01-01' + g * interval '1 minute', NULL, 'C' || g, 'R' || g
FROM generate_series(1, 100000) g;

CREATE TABLE items (id int PRIMARY KEY, order_id int NOT NULL, product_id int NOT NULL, qty int NOT NULL);
INSERT INTO items SELECT g, g, g % 5000 + 1, 1 + g % 3 FROM generate_series(1, 100000) g;

CREATE TABLE shipments (order_id int NOT NULL, carrier text NOT NULL);
INSERT INTO shipments SELECT g, 'carrier' || (g % 7) FROM generate_series(1, 100000) g;

CREATE TABLE products (id int PRIMARY KEY, sku text NOT NULL, category int NOT NULL);
INSERT INTO products SELECT g, 'SKU' || g, g % 50 FROM generate_series(1, 5000) g;
CREATE INDEX products_sku_hash ON products USING hash (sku);

CREATE TABLE events (id bigint NOT NULL, account_id int NOT NULL, kind text NOT NULL, created_at timestamptz NOT NULL)
    PARTITION BY RANGE (created_at);
CREATE TABLE events_2024h1 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
CREATE TABLE events_2024h2 PARTITION OF events FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
INSERT INTO events SELECT g, g % 4000, 'k' || (g % 3), timestamptz '2024-01-01' + g * interval '6 minutes'
FROM generate_series(1, 80000) g;

CREATE TABLE tiny (id int, a int);
INSERT INTO tiny SELECT g, g FROM generate_series(1, 20) g;
"""

FOREIGN_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS postgres_fdw;
CREATE SERVER loopback FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'unused', host '127.0.0.1');
CREATE FOREIGN TABLE remote_orders (id int, customer_id int) SERVER loopback OPTIONS (table_name 'orders');
"""


def execute(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


def fill(dsn: str, schema: str) -> None:
    execute(dsn, schema)
    execute(dsn, "VACUUM ANALYZE")


def reset_statements(dsn: str) -> None:
    """Clear pg_stat_statements for this database only (PostgreSQL 12+ takes userid, dbid, queryid)."""
    execute(dsn, "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                 "WHERE datname = current_database()), 0)")


def run_statements(dsn: str, sql: str, params=None, times: int = 6) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(times):
            conn.execute(sql, params)


@pytest.fixture(scope="module")
def advice_db(pg):
    dsn = pg.create_database("advice")
    fill(dsn, ADVICE_SCHEMA)
    try:
        fill(dsn, FOREIGN_SCHEMA)
    except psycopg.Error:
        pass  # postgres_fdw is a contrib module; the foreign-table case skips without it
    yield dsn
    pg.drop_database(dsn)
