"""A Flask catalog API with Redis in front of PostgreSQL, as many are: bearer sessions kept in Redis,
a read-through cache of customer records, and a per-user rate limit (a pipeline).

The agent does not instrument Redis itself: its spans come from the installed
``opentelemetry-instrumentation-redis``, loaded by the agent with its own tracer provider.
"""

import json
import os

import psycopg2
import redis
from flask import Flask, abort, jsonify, request

app = Flask(__name__)
cache = redis.Redis.from_url(os.environ["CATALOG_REDIS_URL"])
DSN = os.environ["CATALOG_DSN"]
_conn = None


def connection():
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg2.connect(DSN)
        _conn.autocommit = True
    return _conn


def current_user() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    user = cache.get(f"session:{token}") if scheme == "Bearer" and token else None
    if user is None:
        abort(401)
    return user.decode()


@app.route("/customers/<int:customer_id>")
def customer(customer_id):
    user = current_user()
    with cache.pipeline() as pipe:  # one round trip: count this request, keep the window a minute
        pipe.incr(f"rate:{user}")
        pipe.expire(f"rate:{user}", 60)
        count, _ = pipe.execute()
    if count > 1000:
        abort(429)
    cached = cache.get(f"customer:{customer_id}")
    if cached is None:
        with connection().cursor() as cur:
            cur.execute("SELECT id, name FROM customers WHERE id = %s", (customer_id,))
            row = cur.fetchone()
        if row is None:
            abort(404)
        cached = json.dumps({"id": row[0], "name": row[1]})
        cache.set(f"customer:{customer_id}", cached, ex=30)
    return jsonify(customer=json.loads(cached), user=user)
