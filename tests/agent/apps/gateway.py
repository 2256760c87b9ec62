"""App A of the agent's tests: a Flask gateway on psycopg2 that calls the orders app with requests."""

import logging
import os
import time

import psycopg2
import requests
from flask import Flask, jsonify

if os.environ.get("GATEWAY_START_AGENT"):  # the in-code way in, for --preload tests
    import takealook.agent

    takealook.agent.start()

app = Flask(__name__)
DSN = os.environ["GATEWAY_DSN"]
ORDERS_URL = os.environ.get("ORDERS_URL", "")
_conn = None


def connection():
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg2.connect(DSN)
        _conn.autocommit = True
    return _conn


@app.route("/orders/<int:order_id>")
def order(order_id):
    with connection().cursor() as cur:
        cur.execute("SELECT id, name FROM customers WHERE id = %s", (order_id,))
        customer = cur.fetchone()
    response = requests.get(f"{ORDERS_URL}/api/orders/{order_id}/", timeout=10,
                            headers={"Authorization": "Bearer s3cret-token", "Cookie": "session=s3cret-cookie"})
    return jsonify(customer=customer[1] if customer else None, order=response.json(), pid=os.getpid())


@app.route("/local/<int:n>")
def local(n):
    with connection().cursor() as cur:
        for i in range(n):
            cur.execute("SELECT name FROM customers WHERE id = %s", (i,))
            cur.fetchone()
    return jsonify(n=n, pid=os.getpid())


@app.route("/slow")
def slow():
    time.sleep(0.2)
    return jsonify(pid=os.getpid())


@app.route("/log")
def log_line():
    logging.getLogger("gateway").warning("inside a request")
    return jsonify(pid=os.getpid())


@app.route("/boom")
def boom():
    raise ValueError("kaboom")
