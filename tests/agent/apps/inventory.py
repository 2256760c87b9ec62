"""App C of the agent's tests: a Flask inventory service on psycopg 3, started with start() in code."""

import os
import sys

import takealook.agent

takealook.agent.start()

import psycopg  # noqa: E402
from flask import Flask, jsonify  # noqa: E402

app = Flask(__name__)
DSN = os.environ["INVENTORY_DSN"]


@app.route("/stock/<sku>")
def stock(sku):
    with psycopg.connect(DSN, autocommit=True) as conn:
        row = conn.execute("SELECT qty FROM stock WHERE sku = %s", (sku,)).fetchone()
        # Values written into the SQL itself must not be recorded either.
        conn.execute("SELECT count(*) FROM stock WHERE note = 'secret-literal-123' OR qty > 987654")
    return jsonify(sku=sku, qty=row[0] if row else 0)


if __name__ == "__main__":
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True)
    print("listening", flush=True)
    server.serve_forever()
