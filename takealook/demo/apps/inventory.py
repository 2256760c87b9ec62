"""The demo's inventory service (Flask, psycopg 3).

Built-in problem: the stock lookup by SKU, the hottest statement of the system,
has no index on ``stock.sku``: every lookup reads the whole table.
"""

import math
import os

import threading
import time

import psycopg
from flask import Flask, abort, jsonify

app = Flask(__name__)
_local = threading.local()


def _rows(sql, params):
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(os.environ["DEMO_INVENTORY_DSN"], autocommit=True)
    return conn.execute(sql, params).fetchall()


@app.route("/api/stock/<sku>")
def stock(sku):
    rows = _rows("SELECT sku, name, qty, warehouse FROM stock WHERE sku = %s", (sku,))
    if not rows:
        abort(404)
    sku, name, qty, warehouse = rows[0]
    return jsonify(sku=sku, name=name, qty=qty, warehouse=warehouse)


MODEL_LATENCY_S = 0.02


@app.route("/api/recommendations/<tier>")
def recommendations(tier):
    rows = _rows("SELECT sku, name, score FROM featured WHERE tier = %s", (tier,))
    # Scoring the candidates is the service's own work (milliseconds of CPU), then
    # a ranking model the demo does not run answers in about 20 ms (a sleep, so
    # the call takes as long on a fast machine as on a slow one).
    ranked = sorted(rows, key=lambda row: _affinity(row[2]), reverse=True)[:5]
    time.sleep(MODEL_LATENCY_S)
    return jsonify([{"sku": sku, "name": name} for sku, name, _ in ranked])


def _affinity(score):
    return sum(math.sqrt(i * score % 997) for i in range(1000))


@app.route("/health")
def health():
    return {"ok": True}
