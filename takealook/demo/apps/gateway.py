"""The demo's gateway (Flask): what the browser calls; it fans out to orders and inventory.

Built-in problem: ``/dashboard/<id>`` asks orders for the customer's order summary
and inventory for recommendations one after the other, though neither call
needs the other's answer.
"""

import os

import psycopg2
import requests
from flask import Flask, abort, jsonify

app = Flask(__name__)
DSN = os.environ["DEMO_GATEWAY_DSN"]
ORDERS = os.environ["DEMO_ORDERS_URL"]
INVENTORY = os.environ["DEMO_INVENTORY_URL"]
_session = requests.Session()
_conn = None


def _db():
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg2.connect(DSN)
        _conn.autocommit = True
    return _conn


def _customer(customer_id):
    with _db().cursor() as cur:
        cur.execute("SELECT id, name, tier FROM customers WHERE id = %s", (customer_id,))
        row = cur.fetchone()
    if row is None:
        abort(404)
    return {"id": row[0], "name": row[1], "tier": row[2]}


@app.route("/dashboard/<int:customer_id>")
def dashboard(customer_id):
    customer = _customer(customer_id)
    summary = _session.get(f"{ORDERS}/api/customers/{customer_id}/summary/", timeout=30).json()
    picks = _session.get(f"{INVENTORY}/api/recommendations/{customer['tier']}", timeout=30).json()
    return jsonify(customer=customer, summary=summary, recommendations=picks)


@app.route("/orders/<int:customer_id>")
def orders(customer_id):
    customer = _customer(customer_id)
    listing = _session.get(f"{ORDERS}/api/customers/{customer_id}/orders/", timeout=30).json()
    return jsonify(customer=customer, orders=listing)


@app.route("/products/<sku>")
def product(sku):
    stock = _session.get(f"{INVENTORY}/api/stock/{sku}", timeout=30)
    if stock.status_code == 404:
        abort(404)
    return jsonify(stock.json())


@app.route("/health")
def health():
    return {"ok": True}
