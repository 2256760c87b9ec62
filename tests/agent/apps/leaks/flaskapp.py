"""The Flask app of the leak tests: login with a session and a bearer token, pagination, psycopg2.

It calls the Django accounts app with requests, and does what real apps do
when users type odd things: a cast that fails on a typed order reference, a
signup with an email already taken, a webhook to a service that is down.
"""

import hashlib
import os
import secrets

import psycopg2
import requests
from flask import Flask, abort, jsonify, request, session

app = Flask(__name__)
app.secret_key = "leak-tests-only"
DSN = os.environ["LEAKS_FLASK_DSN"]
ACCOUNTS_URL = os.environ["LEAKS_ACCOUNTS_URL"]
HOOKS_URL = os.environ["LEAKS_HOOKS_URL"]  # nothing listens there
_conn = None


def db():
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg2.connect(DSN)
        _conn.autocommit = True
    return _conn


def current_user():
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip()
    with db().cursor() as cur:
        cur.execute("SELECT u.id, u.username FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token = %s",
                    (token,))
        row = cur.fetchone()
    if row is None:
        abort(401)
    return row


@app.post("/login")
def login():
    email, password = request.form["email"], request.form["password"]
    digest = hashlib.sha256(password.encode()).hexdigest()
    with db().cursor() as cur:
        cur.execute("SELECT id FROM users WHERE email = %s AND password_sha256 = %s", (email, digest))
        row = cur.fetchone()
        if row is None:
            abort(401)
        token = secrets.token_hex(16)
        cur.execute("INSERT INTO tokens (token, user_id) VALUES (%s, %s)", (token, row[0]))
    session["user_id"] = row[0]
    return jsonify(token=token)


@app.get("/users/<username>/profile")
def profile(username):
    current_user()
    with db().cursor() as cur:
        cur.execute("SELECT id, email FROM users WHERE username = %s", (username,))
        row = cur.fetchone()
    account = requests.get(f"{ACCOUNTS_URL}/api/accounts/{username}/", params={"email": row[1] if row else ""},
                           timeout=10)
    return jsonify(id=row[0] if row else None, account=account.status_code)


@app.get("/search")
def search():
    current_user()
    page, per_page = int(request.args.get("page", 1)), int(request.args.get("per_page", 20))
    term, email = request.args.get("q", ""), request.args.get("email", "")
    with db().cursor() as cur:
        cur.execute("SELECT id, username FROM users WHERE (username ILIKE %s OR email = %s) "
                    "ORDER BY id LIMIT %s OFFSET %s", (f"%{term}%", email, per_page, (page - 1) * per_page))
        rows = cur.fetchall()
    return jsonify(results=[list(r) for r in rows], page=page)


@app.get("/orders/<ref>")
def order_by_reference(ref):
    current_user()
    with db().cursor() as cur:  # the reference is cast by the server: a typed one fails there, with its text
        cur.execute("SELECT id, total FROM orders WHERE id = %s", (ref,))
        row = cur.fetchone()
    return jsonify(order=row)


@app.get("/orders/by-id/<int:order_id>")
def order_by_id(order_id):
    current_user()
    with db().cursor() as cur:
        cur.execute("SELECT id, total FROM orders WHERE id = %s", (order_id,))
        row = cur.fetchone()
    return jsonify(order=row)


@app.post("/signup")
def signup():
    email, username = request.form["email"], request.form["username"]
    with db().cursor() as cur:  # a taken email: the unique violation is not caught
        cur.execute("INSERT INTO users (username, email, password_sha256) VALUES (%s, %s, '')", (username, email))
    return jsonify(ok=True), 201


@app.get("/notify/<username>")
def notify(username):
    current_user()
    requests.get(f"{HOOKS_URL}/hooks/{username}", params={"email": request.args.get("email", "")}, timeout=5)
    return jsonify(ok=True)
