"""The seeded gateway (Flask, psycopg2, run under takealook-run): calls orders, then inventory, one after the other.

The two calls do not depend on each other: the report must flag them as sequential calls.
"""

import os

import psycopg2
import requests
from flask import Flask, jsonify

app = Flask(__name__)
DSN = os.environ["GATEWAY_DSN"]
ORDERS_URL = os.environ["ORDERS_URL"]
INVENTORY_URL = os.environ["INVENTORY_URL"]


def query(sql, params):
    with psycopg2.connect(DSN) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


@app.route("/dashboard/<int:user_id>")
def dashboard(user_id):
    user = query("SELECT id, name FROM users WHERE id = %s", (user_id,))
    orders = requests.get(f"{ORDERS_URL}/api/orders/", params={"user": user_id}, timeout=10).json()
    stock = requests.get(f"{INVENTORY_URL}/api/stock/summary", timeout=10).json()
    return jsonify(user=user[1], orders=orders, stock=stock)


@app.route("/health")
def health():
    return jsonify(ok=query("SELECT %s", (1,))[0] == 1)
