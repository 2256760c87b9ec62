"""The demo's three databases: schema and seed data, made with generate_series in seconds.

Sizes are chosen so the built-in problems show: the inventory's ``stock`` table
has 300,000 rows and no index on ``sku`` (a sequential scan per lookup, tens of
milliseconds), and the 200 busiest customers have 250 orders each, so the
orders listing's N+1 makes 251 queries per page.
"""

from __future__ import annotations

GATEWAY = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, tier text NOT NULL);
INSERT INTO customers
SELECT i, 'Customer ' || i, (ARRAY['bronze', 'silver', 'gold'])[1 + i % 3] FROM generate_series(1, 20000) i;
ANALYZE customers;
"""

ORDERS = """
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, placed_at timestamptz NOT NULL,
                     status text NOT NULL);
-- The 200 busiest customers have 250 orders each; the other 250,000 orders are spread thin.
INSERT INTO orders
SELECT i, CASE WHEN i <= 50000 THEN 1 + (i - 1) % 200 ELSE 201 + i % 19800 END,
       now() - (i % 1000) * interval '1 hour', (ARRAY['paid', 'shipped', 'delivered'])[1 + i % 3]
FROM generate_series(1, 300000) i;
CREATE INDEX orders_customer_id ON orders (customer_id);
CREATE TABLE order_lines (order_id int NOT NULL, product_sku text NOT NULL, qty int NOT NULL,
                          price numeric(10, 2) NOT NULL);
INSERT INTO order_lines
SELECT 1 + i / 2, 'SKU-' || lpad((i::bigint * 7919 % 300000)::text, 6, '0'), 1 + i % 4, 5 + (i % 50)
FROM generate_series(0, 599999) i;
CREATE INDEX order_lines_order_id ON order_lines (order_id);
ANALYZE orders; ANALYZE order_lines;
"""

INVENTORY = """
CREATE TABLE stock (id serial PRIMARY KEY, sku text NOT NULL, name text NOT NULL, qty int NOT NULL,
                    warehouse text NOT NULL);
-- No index on sku: the built-in missing index.
INSERT INTO stock (sku, name, qty, warehouse)
SELECT 'SKU-' || lpad(i::text, 6, '0'), 'Product ' || i, i % 97, (ARRAY['north', 'south', 'east'])[1 + i % 3]
FROM generate_series(0, 299999) i;
CREATE TABLE featured (tier text NOT NULL, sku text NOT NULL, name text NOT NULL, score int NOT NULL);
INSERT INTO featured
SELECT (ARRAY['bronze', 'silver', 'gold'])[1 + i % 3], 'SKU-' || lpad((i * 13)::text, 6, '0'), 'Product ' || i * 13, i
FROM generate_series(1, 300) i;
ANALYZE stock; ANALYZE featured;
"""

EXTENSIONS = "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE EXTENSION IF NOT EXISTS hypopg;"

DATABASES = {"gateway": GATEWAY, "orders": ORDERS, "inventory": INVENTORY}

# What the demo's warm-up traffic asks for (the load test's suite is generated from these traces).
BUSY_CUSTOMERS = range(1, 41)
SKUS = [f"SKU-{i:06d}" for i in range(1000, 300000, 9973)]
