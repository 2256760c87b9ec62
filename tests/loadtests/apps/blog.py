"""The blog of the load tests: Flask, a form login with a CSRF token kept in the session (as Flask-WTF
does it), a logged-in dashboard, public posts; PostgreSQL through psycopg (BLOG_DSN).

``/login`` is the login page; ``/login-plain`` is the same form without its CSRF input (a template that
forgot ``{{ csrf_token() }}``), which the server refuses as Flask-WTF does: 400.
"""

import functools
import hashlib
import hmac
import os
import secrets

import psycopg
from flask import Flask, abort, redirect, request, session, url_for

app = Flask(__name__)
app.secret_key = "tests-only-not-a-secret"
DSN = os.environ["BLOG_DSN"]

FORM = """<!doctype html><html><head><title>Sign in | Blog</title></head><body>
<h1>Sign in</h1>{error}
<form method="post" action="/login?next={next}">
  {csrf}
  <label>Email <input type="email" name="email"></label>
  <label>Password <input type="password" name="password"></label>
  <input type="submit" value="Sign in">
</form></body></html>"""


def db():
    return psycopg.connect(DSN, autocommit=True)


def password_hash(password: str, salt: str) -> str:
    return hashlib.sha256((salt + password).encode()).hexdigest()


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_hex(16)
    return session["csrf"]


@app.before_request
def check_csrf():
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
            abort(400, "The CSRF token is missing.")


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if "user" not in session:
            return redirect(url_for("login_page", next=request.path))
        return view(*args, **kwargs)

    return wrapped


@app.get("/")
def home():
    return "<!doctype html><title>Blog</title><h1>The blog</h1>"


@app.get("/login")
def login_page(error=""):
    field = f'<input type="hidden" name="csrf_token" value="{csrf_token()}">'
    return FORM.format(error=error, next=request.args.get("next", ""), csrf=field)


@app.get("/login-plain")
def login_page_without_csrf():
    return FORM.format(error="", next="", csrf="")


@app.post("/login")
def login():
    with db() as conn:
        row = conn.execute("SELECT id, salt, password_hash FROM authors WHERE email = %s",
                           (request.form.get("email", ""),)).fetchone()
    if row is None or not hmac.compare_digest(password_hash(request.form.get("password", ""), row[1]), row[2]):
        return login_page(error="<p>Wrong email or password.</p>")
    session["user"] = row[0]
    target = request.args.get("next") or ""
    return redirect(target if target.startswith("/") else url_for("dashboard"))


@app.get("/dashboard")
@login_required
def dashboard():
    with db() as conn:
        rows = conn.execute("SELECT id, title FROM posts WHERE author_id = %s ORDER BY id DESC LIMIT 20",
                            (session["user"],)).fetchall()
    return "<ul>" + "".join(f"<li>{title}</li>" for _, title in rows) + "</ul>"


@app.get("/posts/<int:post_id>")
def post(post_id):
    with db() as conn:
        row = conn.execute("SELECT title FROM posts WHERE id = %s", (post_id,)).fetchone()
    if row is None:
        abort(404)
    return f"<h1>{row[0]}</h1>"
