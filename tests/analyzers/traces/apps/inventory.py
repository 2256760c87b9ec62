"""The seeded inventory service (Flask, psycopg 3, start() in code): a deliberate parallel fan-out.

Six queries run at once in a thread pool, each in a copy of the request's context so their spans
are children of the request's span. They overlap in time: the report must not call them an N+1.
"""

import contextvars
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import takealook.agent

takealook.agent.start()

import psycopg  # noqa: E402
from flask import Flask, jsonify  # noqa: E402

app = Flask(__name__)
DSN = os.environ["INVENTORY_DSN"]
POOL = ThreadPoolExecutor(max_workers=6)


def stock_of(warehouse):
    with psycopg.connect(DSN, autocommit=True) as conn:
        return conn.execute("SELECT sum(qty), pg_sleep(0.012)::text FROM stock WHERE warehouse = %s",
                            (warehouse,)).fetchone()[0]


@app.route("/api/stock/summary")
def summary():
    futures = [POOL.submit(contextvars.copy_context().run, stock_of, w) for w in range(6)]
    return jsonify(total=sum(f.result() for f in futures))


if __name__ == "__main__":
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True)
    print("listening", flush=True)
    server.serve_forever()
